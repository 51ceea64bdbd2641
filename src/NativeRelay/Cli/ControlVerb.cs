using System.Text.Json;
using NativeRelay.Config;
using NativeRelay.Control;

namespace NativeRelay.Cli;

/// <summary>
/// What the verbs that talk to a running relay over its control socket (<c>queue</c>,
/// <c>suppress</c>, <c>traffic</c>) share: finding the spool, and turning the ways a conversation
/// with the relay can fail into one line on standard error and the exit code.
/// </summary>
internal static class ControlVerb
{
    /// <summary>The spool of the relay to ask: <c>--spool</c>, else the <c>--config</c> file's, else the default; absolute.</summary>
    public static string SpoolDirectory(string? spool, string? config)
    {
        if (spool is null && config is not null)
            spool = RelaySettings.LoadFile(config).Spool;
        return Path.GetFullPath(spool ?? new RelayOptions().Spool);
    }

    /// <summary>Runs <paramref name="body"/>; a failure is reported as "nativerelay VERB: ..." with its exit code.</summary>
    public static async Task<int> RunAsync(string verb, Func<Task<int>> body)
    {
        try
        {
            return await body();
        }
        catch (ConfigException e)
        {
            Console.Error.WriteLine($"nativerelay {verb}: {e.Message}");
            return QueueCommand.ExitUsage;
        }
        catch (NoRelayException e)
        {
            Console.Error.WriteLine($"nativerelay {verb}: {e.Message}");
            return QueueCommand.ExitNoRelay;
        }
        catch (UnauthorizedAccessException e)
        {
            Console.Error.WriteLine($"nativerelay {verb}: {e.Message}");
            return QueueCommand.ExitFailed;
        }
        catch (Exception e) when (e is IOException or JsonException or OperationCanceledException or System.Net.Sockets.SocketException)
        {
            Console.Error.WriteLine($"nativerelay {verb}: talking to the relay failed: {e.Message}");
            return QueueCommand.ExitFailed;
        }
    }
}
