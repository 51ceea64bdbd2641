using System.Runtime.InteropServices;

namespace NativeRelay.Hosting;

/// <summary>
/// Named places in the relay's most delicate sequences (compaction, recovery, an admin command,
/// a reload) where the crash tests make the process die with SIGKILL, exactly there, to prove
/// that a power cut at that instant loses nothing acknowledged and leaves nothing half done.
/// Armed only by the environment variable <c>NATIVERELAY_CRASH_POINT=NAME[:N]</c> (die at the N-th
/// time NAME is reached, default the first), read once at start; unarmed, a point costs one
/// static field test. This is SQLite's and FoundationDB's technique: a kill from outside cannot
/// aim between two particular writes.
/// </summary>
public static partial class CrashPoints
{
    public const string EnvironmentVariable = "NATIVERELAY_CRASH_POINT";

    /// <summary>Compaction appended a live message's chunks forward, not yet its new head.</summary>
    public const string CompactionChunksCopied = "compaction.chunks-copied";
    /// <summary>Compaction committed the message's new head, not yet moved the index to it.</summary>
    public const string CompactionHeadCopied = "compaction.head-copied";
    /// <summary>Recovery replayed a record (with :N, the N-th): the restart after it must recover all again.</summary>
    public const string RecoveryRecord = "recovery.record";
    /// <summary>An admin command finished one message of its selection (its status record committed) and not the rest.</summary>
    public const string AdminMessageDone = "admin.message-done";
    /// <summary>A SIGHUP reload built and checked the new configuration and is about to swap it in.</summary>
    public const string ReloadSwapping = "reload.swapping";

    private static readonly Armed? s_armed = Parse(Environment.GetEnvironmentVariable(EnvironmentVariable));
    private static int s_hits;

    private sealed record Armed(string Name, int At);

    /// <summary>Dies here if this is the armed point's N-th arrival.</summary>
    public static void Reach(string name)
    {
        if (s_armed is not { } armed || armed.Name != name)
            return;
        if (Interlocked.Increment(ref s_hits) < armed.At)
            return;
        Console.Error.WriteLine($"crash point {name} reached ({armed.At}): SIGKILL");
        Console.Error.Flush();
        Kill(Environment.ProcessId, 9);
    }

    private static Armed? Parse(string? value)
    {
        if (string.IsNullOrWhiteSpace(value))
            return null;
        int colon = value.IndexOf(':');
        if (colon < 0)
            return new Armed(value.Trim(), 1);
        return int.TryParse(value.AsSpan(colon + 1), out int at) && at > 0 ? new Armed(value[..colon].Trim(), at) : null;
    }

    [LibraryImport("libc", EntryPoint = "kill")]
    private static partial int Kill(int pid, int signal);
}
