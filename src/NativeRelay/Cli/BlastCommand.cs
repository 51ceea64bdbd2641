using System.CommandLine;
using System.Globalization;
using System.Runtime.InteropServices;
using NativeRelay.Config;
using NativeRelay.Tools;

namespace NativeRelay.Cli;

/// <summary><c>nativerelay blast</c>: the load generator (see <see cref="Blaster"/>).</summary>
internal static class BlastCommand
{
    private static readonly BlastOptions Defaults = new();

    private static readonly FlagSetter<BlastOptions>[] Settings =
    [
        Flag(Flags.Value("--to", "HOST:PORT", "server to send to", FlagValues.HostPort, Defaults.Target),
            (o, v) => (o.Host, o.Port) = v),
        Flag(Flags.Value("--messages", "N", "messages to send in all", (f, t) => FlagValues.Long(f, t, 1, 1_000_000_000_000), Defaults.Messages),
            (o, v) => o.Messages = v),
        Flag(Flags.Value("--sessions", "S", "concurrent SMTP sessions", (f, t) => FlagValues.Int(f, t, 1, 10_000), Defaults.Sessions),
            (o, v) => o.Sessions = v),
        Flag(Flags.Value("--size", "BYTES", "size of each message, headers included (100k, 1m work)", (f, t) => (int)FlagValues.Size(f, t, 1, 1L << 30), Defaults.Size),
            (o, v) => o.Size = v),
        Flag(Flags.Value("--per-connection", "M", "messages per connection, then QUIT and reconnect (0: no limit)", (f, t) => FlagValues.Long(f, t, 0, long.MaxValue), Defaults.PerConnection),
            (o, v) => o.PerConnection = v),
        Flag(Flags.Value("--recipients", "R", "recipients per message", (f, t) => FlagValues.Int(f, t, 1, 10_000), Defaults.Recipients),
            (o, v) => o.Recipients = v),
        Flag(Flags.Value("--from", "ADDRESS", "envelope sender and From:", FlagValues.Address, Defaults.From),
            (o, v) => o.From = v),
        Flag(Flags.Value("--rcpt", "ADDRESS", "recipient; with R > 1 it gets a number in front: 1rcpt@..., 2rcpt@...", FlagValues.Address, Defaults.Rcpt),
            (o, v) => o.Rcpt = v),
        Flag(Flags.Value("--rate", "MSGS_PER_S", "start at most this many messages per second (0: as fast as possible)", (f, t) => FlagValues.Double(f, t, 10_000_000), Defaults.Rate),
            (o, v) => o.Rate = v),
        Flag(Flags.Value("--timeout", "SECONDS", "stop after this long and report what was done", (f, t) => FlagValues.Seconds(f, t, 30 * 24 * 3600), Defaults.Timeout.TotalSeconds),
            (o, v) => o.Timeout = v),
        Flag(Flags.Switch("--tls", "STARTTLS before sending (the server's certificate is not verified)"),
            (o, v) => o.Tls = v),
        Flag(Flags.Value("--helo", "NAME", "EHLO name", FlagValues.HostName, Defaults.Helo),
            (o, v) => o.Helo = v),
        Flag(Flags.Switch("--json", "print the summary as one JSON object"),
            (o, v) => o.Json = v),
        Flag(Flags.Switch("--quiet", "no progress display"),
            (o, v) => o.Quiet = v),
    ];

    // The HTTP API mode (issue 27): --http URL --token T (or --token-file FILE); --messages counts
    // requests, --recipients is per request, --sessions is the number of requests in flight.
    private static readonly Option<string> Http = Flags.Text("--http", "URL",
        "load the HTTP injection API instead of SMTP: POST URL (http(s)://HOST:PORT/api/v1/messages); --messages then counts requests", "SMTP");

    private static readonly Option<string> Token = Flags.Text("--token", "TOKEN", "the API token for --http (visible to ps: prefer --token-file)");

    private static readonly Option<string> TokenFile = Flags.Text("--token-file", "FILE", "read the API token for --http from FILE");

    private static FlagSetter<BlastOptions> Flag<T>(Option<T> option, Action<BlastOptions, T> apply) => FlagSetter<BlastOptions>.Of(option, apply);

    public static Command Build()
    {
        var command = new VerbCommand("blast", "Load generator: send messages over concurrent SMTP sessions, report rates and latencies.",
            """
            Sends N messages over S concurrent SMTP sessions and reports messages/s, MB/s, errors by reply code,
            and connect and accept latency percentiles. Uses PIPELINING when the server offers it (MAIL, every
            RCPT and DATA in one write) and reuses connections.

            Progress goes to standard error (a bar on a terminal, a line a second otherwise); the summary goes
            to standard output. Exit code 0 when every message was accepted, 1 when any failed or the timeout
            hit, 2 for a usage error. Connect latency is from connect() to the 220 greeting; accept latency is
            from the end of the data (the final "." sent) to the server's reply.
            """);
        FlagSetter<BlastOptions>.AddAll(command, Settings);
        command.Options.Add(Http);
        command.Options.Add(Token);
        command.Options.Add(TokenFile);
        command.SetAction((result, _) => result.ValueOrNull(Http) is { } url ? RunHttpAsync(BindHttp(result, url), Bind(result).Json) : RunAsync(Bind(result)));
        return command;
    }

    /// <summary>The options the command line asks for (defaults for the flags not given).</summary>
    internal static BlastOptions Bind(ParseResult result)
    {
        var o = FlagSetter<BlastOptions>.ApplyAll(result, Settings, new BlastOptions());
        int minimum = BlastMessage.MinimumSize(o.From, o.Rcpt);
        if (o.Size < minimum)
            throw new ConfigException($"blast: --size must be at least {minimum} bytes (the message's header section)");
        return o;
    }

    private static HttpBlastOptions BindHttp(ParseResult result, string url)
    {
        var o = Bind(result);
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || (uri.Scheme != "http" && uri.Scheme != "https"))
            throw new ConfigException($"blast: --http '{url}' is not an http(s) URL");
        var token = result.ValueOrNull(Token)
                    ?? (result.ValueOrNull(TokenFile) is { } file ? ReadToken(file) : null)
                    ?? throw new ConfigException("blast --http needs --token or --token-file");
        return new HttpBlastOptions
        {
            Url = uri, Token = token, Requests = o.Messages, Concurrency = o.Sessions,
            // 100 recipients per request unless --recipients says otherwise (SMTP's default is 1 per message).
            Recipients = result.GetResult(Settings.First(f => f.Option.Name == "--recipients").Option) is { Implicit: false } ? o.Recipients : 100,
            Size = o.Size, From = o.From, Rcpt = o.Rcpt, Timeout = o.Timeout,
        };
    }

    private static string ReadToken(string file)
    {
        try
        {
            return File.ReadAllText(file).Trim();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"blast: --token-file {file}: {e.Message}");
        }
    }

    private static async Task<int> RunHttpAsync(HttpBlastOptions options, bool json)
    {
        using var interrupt = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; interrupt.Cancel(); });
        var result = await new HttpBlaster(options).RunAsync(interrupt.Token);
        if (json)
            result.WriteJson(Console.OpenStandardOutput());
        else
            result.WriteText(Console.Out);
        return result.Success ? 0 : 1;
    }

    private static async Task<int> RunAsync(BlastOptions options)
    {
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
