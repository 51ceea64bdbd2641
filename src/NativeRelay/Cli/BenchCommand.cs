using System.CommandLine;
using System.Runtime.InteropServices;
using NativeRelay.Config;
using NativeRelay.Tools;

namespace NativeRelay.Cli;

/// <summary><c>nativerelay bench</c>: blaster, relay and sink in one process (see <see cref="BenchRunner"/>).</summary>
internal static class BenchCommand
{
    private static readonly BenchOptions Defaults = new();

    private static readonly FlagSetter<BenchOptions>[] Settings =
    [
        Flag(Flags.Value("--messages", "N", "messages to send", (f, t) => FlagValues.Long(f, t, 1, 100_000_000), Defaults.Messages),
            (o, v) => o.Messages = v),
        Flag(Flags.Value("--sessions", "S", "concurrent sending sessions", (f, t) => FlagValues.Int(f, t, 1, 1000), Defaults.Sessions),
            (o, v) => o.Sessions = v),
        Flag(Flags.Value("--size", "BYTES", "message size (100k works)", (f, t) => (int)FlagValues.Size(f, t, 1, 16 * 1024 * 1024), Defaults.Size),
            (o, v) => o.Size = v),
        Flag(Flags.Value("--per-connection", "M", "messages per sending connection (0: no limit)", (f, t) => FlagValues.Long(f, t, 0, long.MaxValue), Defaults.PerConnection),
            (o, v) => o.PerConnection = v),
        Flag(Flags.Value("--timeout", "SECONDS", "give up after this long", (f, t) => FlagValues.Seconds(f, t, 24 * 3600), Defaults.Timeout.TotalSeconds),
            (o, v) => o.Timeout = v),
        Flag(Flags.Text("--temp-dir", "DIR", "where the temporary spool goes", "the system's temp dir"),
            (o, v) => o.TempDirectory = v),
        Flag(Flags.Switch("--json", "print the result as one JSON object"),
            (o, v) => o.Json = v),
        Flag(Flags.Switch("--quiet", "no progress display"),
            (o, v) => o.Quiet = v),
    ];

    private static FlagSetter<BenchOptions> Flag<T>(Option<T> option, Action<BenchOptions, T> apply) => FlagSetter<BenchOptions>.Of(option, apply);

    public static Command Build()
    {
        var command = new VerbCommand("bench", "The 30-second proof: sink, relay and load generator in one process, on loopback.",
            """
            The 30-second proof: starts a sink, a relay with a temporary spool (durable: every 250 is sent after
            the group commit that covers the message) relaying to that sink, and a blaster, all in this process on
            loopback ports it picks; sends a bounded load; prints the accept and end-to-end rates and latency
            percentiles; removes the temporary spool. The three parts share this process and its cores, so the
            figures are lower than those of a relay measured alone (see perf/compare.sh for that).
            """);
        FlagSetter<BenchOptions>.AddAll(command, Settings);
        command.SetAction((result, _) => RunAsync(Bind(result)));
        return command;
    }

    /// <summary>The options the command line asks for (defaults for the flags not given).</summary>
    internal static BenchOptions Bind(ParseResult result)
    {
        var o = FlagSetter<BenchOptions>.ApplyAll(result, Settings, new BenchOptions());
        var blast = new BlastOptions();
        int minimum = BlastMessage.MinimumSize(blast.From, blast.Rcpt);
        if (o.Size < minimum)
            throw new ConfigException($"bench: --size must be at least {minimum} bytes (the message's header section)");
        return o;
    }

    private static async Task<int> RunAsync(BenchOptions options)
    {
        using var interrupt = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; interrupt.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; interrupt.Cancel(); });

        var result = await BenchRunner.RunAsync(options, Console.Error, ProgressDisplay.ErrorIsTerminal, interrupt.Token);
        if (options.Json)
            result.WriteJson(Console.OpenStandardOutput());
        else
            result.WriteText(Console.Out);
        return result.Success ? 0 : 1;
    }
}
