using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using NativeRelay.Telemetry;
using NativeRelay.Tools;

namespace NativeRelay.Cli;

/// <summary><c>nativerelay sink</c>: the counting SMTP server (see <see cref="SmtpSink"/>).</summary>
internal static class SinkCommand
{
    private static readonly SinkOptions Defaults = new();

    private static readonly FlagSetter<SinkOptions>[] Settings =
    [
        Flag(Flags.Value("--listen", "IP:PORT", "address to listen on (port 0: any free port)", FlagValues.ListenEndPoint, Defaults.Listen),
            (o, v) => o.Listen = v),
        Flag(Flags.Value("--reply-code", "CODE", "reply to the end of DATA (or the last BDAT) with CODE", FlagValues.ReplyCode, Defaults.ReplyCode),
            (o, v) => o.ReplyCode = v),
        Flag(Flags.Value("--rcpt-reply", "CODE", "reply to every RCPT with CODE", FlagValues.ReplyCode, Defaults.RcptReplyCode),
            (o, v) => o.RcptReplyCode = v),
        Flag(Flags.Value("--rcpt-fail-share", "P", "refuse this share (0-1) of recipients with 550 5.1.1, each drawn at random", (f, t) => FlagValues.Double(f, t, 1), "0"),
            (o, v) => o.RcptFailShare = v),
        Flag(Flags.Value("--rcpt-defer-share", "P", "defer this share (0-1) of recipients with 451 4.2.0, each drawn at random", (f, t) => FlagValues.Double(f, t, 1), "0"),
            (o, v) => o.RcptDeferShare = v),
        Flag(Flags.Value("--delay", "MS", "wait this long before answering the end of the data (a slow destination)",
                (f, t) => TimeSpan.FromMilliseconds(FlagValues.Long(f, t, 0, 3_600_000)), Defaults.Delay.TotalMilliseconds),
            (o, v) => o.Delay = v),
        Flag(Flags.Text("--save", "DIR", "write each message to DIR as a file, as received (un-dot-stuffed), and its envelope as a line of DIR/envelopes.log", "not saved"),
            (o, v) => o.SaveDirectory = v),
        Flag(Flags.Value("--exit-after", "N", "stop after N messages have been received", (f, t) => FlagValues.Long(f, t, 1, long.MaxValue), "no limit"),
            (o, v) => o.ExitAfter = v),
        Flag(Flags.Value("--timeout", "SECONDS", "stop after this long", (f, t) => FlagValues.Seconds(f, t, 30 * 24 * 3600), "no limit"),
            (o, v) => o.Timeout = v),
        Flag(Flags.Value("--hostname", "NAME", "name in the greeting", FlagValues.HostName, Defaults.Hostname),
            (o, v) => o.Hostname = v),
        Flag(Flags.Switch("--no-pipelining", "do not offer PIPELINING"),
            (o, v) => o.Pipelining = !v),
        Flag(Flags.Switch("--no-chunking", "do not offer CHUNKING"),
            (o, v) => o.Chunking = !v),
        Flag(Flags.Text("--tls-cert", "PEM", "certificate chain to offer STARTTLS with (with --tls-key)", "no STARTTLS"),
            (o, v) => o.TlsCertificate = v),
        Flag(Flags.Text("--tls-key", "PEM", "private key of --tls-cert"),
            (o, v) => o.TlsKey = v),
        Flag(Flags.Switch("--json", "print the summary as one JSON object"),
            (o, v) => o.Json = v),
        Flag(Flags.Switch("--quiet", "no running count and no \"listening\" line"),
            (o, v) => o.Quiet = v),
    ];

    private static FlagSetter<SinkOptions> Flag<T>(Option<T> option, Action<SinkOptions, T> apply) => FlagSetter<SinkOptions>.Of(option, apply);

    public static Command Build()
    {
        var command = new VerbCommand("sink", "A counting SMTP server that accepts (or refuses) everything: the next hop for load tests.",
            """
            A fast SMTP server that accepts (or refuses, on request) everything and counts it: the next hop
            for load tests. Offers PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN and CHUNKING (BDAT). Runs until
            SIGINT/SIGTERM, --exit-after or --timeout, then prints a summary. A running count goes to standard
            error when it is a terminal; "listening on IP:PORT" and the summary go to standard output.
            """);
        FlagSetter<SinkOptions>.AddAll(command, Settings);
        command.SetAction((result, _) => RunAsync(Bind(result)));
        return command;
    }

    /// <summary>The options the command line asks for (defaults for the flags not given).</summary>
    internal static SinkOptions Bind(ParseResult result) => FlagSetter<SinkOptions>.ApplyAll(result, Settings, new SinkOptions());

    private static async Task<int> RunAsync(SinkOptions options)
    {
        using var log = new Log(Console.Error, LogLevel.Warn);
        var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.TrySetResult(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.TrySetResult(); });

        var sink = new SmtpSink(options, log);
        sink.Start();
        if (!options.Quiet)
        {
            Console.Out.WriteLine($"sink listening on {sink.EndPoint}");
            Console.Out.Flush();
        }

        var progress = options.Quiet || !ProgressDisplay.ErrorIsTerminal ? null
            : new ProgressDisplay(Console.Error, terminal: true, RunningCount(sink));
        try
        {
            var waits = new List<Task> { stop.Task, sink.ExitAfterReached };
            if (options.Timeout is { } timeout)
                waits.Add(Task.Delay(timeout));
            await Task.WhenAny(waits);
        }
        finally
        {
            if (progress is not null)
                await progress.DisposeAsync();
            await sink.StopAsync(TimeSpan.FromSeconds(2));
        }

        var summary = sink.Summarize();
        if (options.Json)
            summary.WriteJson(Console.OpenStandardOutput());
        else
            summary.WriteText(Console.Out);
        await sink.DisposeAsync();
        return 0;
    }

    // Rate over the last interval, so the line shows what is happening now.
    private static Func<bool, string> RunningCount(SmtpSink sink)
    {
        long lastCount = 0;
        var lastTime = DateTime.UtcNow;
        return _ =>
        {
            long count = sink.Messages;
            var now = DateTime.UtcNow;
            double rate = (count - lastCount) / Math.Max(0.001, (now - lastTime).TotalSeconds);
            lastCount = count;
            lastTime = now;
            return string.Create(CultureInfo.InvariantCulture,
                $"sink {sink.EndPoint}: {count} message(s), {sink.Bytes / 1e6:0.0} MB, {rate:0} msg/s now, {sink.ActiveConnections} connection(s)");
        };
    }
}
