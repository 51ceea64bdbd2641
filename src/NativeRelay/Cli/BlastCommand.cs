using System.Globalization;
using System.Runtime.InteropServices;
using NativeRelay.Tools;

namespace NativeRelay.Cli;

/// <summary><c>nativerelay blast</c>: the load generator (see <see cref="Blaster"/>).</summary>
internal static class BlastCommand
{
    public static async Task<int> RunAsync(string[] args)
    {
        if (args.Any(a => a is "--help" or "-h"))
        {
            Console.Out.Write(BlastOptions.Usage);
            return 0;
        }
        var options = BlastOptions.Parse(args);
        using var interrupt = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; interrupt.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; interrupt.Cancel(); });

        var blaster = new Blaster(options);
        var progress = options.Quiet ? null
            : new ProgressDisplay(Console.Error, ProgressDisplay.ErrorIsTerminal, terminal => Line(terminal, blaster));
        BlastResult result;
        try
        {
            result = await blaster.RunAsync(interrupt.Token);
        }
        finally
        {
            if (progress is not null)
                await progress.DisposeAsync();
        }

        if (options.Json)
            result.WriteJson(Console.OpenStandardOutput());
        else
            result.WriteText(Console.Out);
        return result.Success ? 0 : 1;
    }

    private static string Line(bool terminal, Blaster b)
    {
        long total = b.Options.Messages;
        long done = b.Done;
        double seconds = Math.Max(0.001, b.Elapsed.TotalSeconds);
        var c = CultureInfo.InvariantCulture;
        return terminal
            ? string.Create(c, $"blast {ProgressDisplay.Bar((double)done / total)} {done}/{total}  ok {b.Accepted}  failed {b.Failed}  {b.Accepted / seconds:0} msg/s  {seconds:0.0} s")
            : string.Create(c, $"blast: {done}/{total} done, {b.Accepted} accepted, {b.Failed} failed, {b.Accepted / seconds:0} msg/s, {seconds:0.0} s");
    }
}
