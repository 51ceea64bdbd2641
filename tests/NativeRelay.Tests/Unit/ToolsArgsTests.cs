using System.CommandLine;
using System.CommandLine.Invocation;
using System.Net;
using NativeRelay.Cli;
using NativeRelay.Config;
using NativeRelay.Tools;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// The tool verbs' command lines, parsed as the binary parses them (System.CommandLine through
/// <see cref="Entry.Parse"/>), then bound to their options. A usage error surfaces as the
/// <see cref="ConfigException"/> of the one line the binary prints after "nativerelay: ".
/// </summary>
public class ToolsArgsTests
{
    private static T Parse<T>(string verb, string[] args, Func<ParseResult, T> bind)
    {
        var result = Entry.Parse([verb, .. args]);
        if (result.Action is ParseErrorAction)
            throw new ConfigException(Usage.Error(result));
        return bind(result);
    }

    private static BlastOptions Blast(string[] args) => Parse("blast", args, BlastCommand.Bind);

    private static SinkOptions Sink(string[] args) => Parse("sink", args, SinkCommand.Bind);

    private static BenchOptions Bench(string[] args) => Parse("bench", args, BenchCommand.Bind);

    [Fact]
    public void Blast_defaults()
    {
        var o = Blast([]);
        Assert.Equal("127.0.0.1", o.Host);
        Assert.Equal(2525, o.Port);
        Assert.Equal(1000, o.Messages);
        Assert.Equal(10, o.Sessions);
        Assert.Equal(1024, o.Size);
        Assert.Equal(0, o.PerConnection);
        Assert.Equal(1, o.Recipients);
        Assert.Equal(0, o.Rate);
        Assert.Equal(TimeSpan.FromSeconds(600), o.Timeout);
        Assert.False(o.Tls);
        Assert.False(o.Json);
    }

    [Fact]
    public void Blast_reads_every_flag_in_both_forms()
    {
        var o = Blast([
            "--to", "localhost:2600", "--messages=5000", "--sessions", "50", "--size", "100k",
            "--per-connection", "10", "--recipients", "3", "--from", "a@example.org", "--rcpt=b@example.net",
            "--rate", "2500.5", "--timeout", "30", "--tls", "--json", "--quiet", "--helo", "client.example.org",
        ]);
        Assert.Equal("localhost", o.Host);
        Assert.Equal(2600, o.Port);
        Assert.Equal(5000, o.Messages);
        Assert.Equal(50, o.Sessions);
        Assert.Equal(100 * 1024, o.Size);
        Assert.Equal(10, o.PerConnection);
        Assert.Equal(3, o.Recipients);
        Assert.Equal("a@example.org", o.From);
        Assert.Equal("b@example.net", o.Rcpt);
        Assert.Equal(2500.5, o.Rate);
        Assert.Equal(TimeSpan.FromSeconds(30), o.Timeout);
        Assert.True(o.Tls);
        Assert.True(o.Json);
        Assert.True(o.Quiet);
        Assert.Equal("client.example.org", o.Helo);
        Assert.Equal("localhost:2600", o.Target);
    }

    [Theory]
    [InlineData("[::1]:2525", "::1", 2525, "[::1]:2525")]
    [InlineData("127.0.0.1:25", "127.0.0.1", 25, "127.0.0.1:25")]
    [InlineData("mx.example.com:2525", "mx.example.com", 2525, "mx.example.com:2525")]
    public void Blast_to_takes_ip_literals_and_names(string to, string host, int port, string target)
    {
        var o = Blast(["--to", to]);
        Assert.Equal(host, o.Host);
        Assert.Equal(port, o.Port);
        Assert.Equal(target, o.Target);
    }

    [Theory]
    [InlineData("--bogus")]
    [InlineData("--messages")]
    [InlineData("--messages 0")]
    [InlineData("--messages -3")]
    [InlineData("--messages lots")]
    [InlineData("--sessions 0")]
    [InlineData("--size 10")]
    [InlineData("--size 1x")]
    [InlineData("--to 127.0.0.1")]
    [InlineData("--to 127.0.0.1:0")]
    [InlineData("--to host:99999")]
    [InlineData("--to bad_host!:25")]
    [InlineData("--from nobody")]
    [InlineData("--rcpt <x@example.com>")]
    [InlineData("--rate -1")]
    [InlineData("--timeout 0")]
    [InlineData("--json=yes")]
    [InlineData("stray")]
    public void Blast_refuses_bad_arguments_with_one_line(string arguments)
    {
        var e = Assert.Throws<ConfigException>(() => Blast(arguments.Split(' ')));
        Assert.StartsWith("blast: ", e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Blast_size_must_hold_the_header_section()
    {
        int minimum = BlastMessage.MinimumSize("blast@example.org", "sink@example.com");
        Assert.Equal(minimum, Blast(["--size", minimum.ToString()]).Size);
        var e = Assert.Throws<ConfigException>(() => Blast(["--size", (minimum - 1).ToString()]));
        Assert.Contains(minimum.ToString(), e.Message);
    }

    [Theory]
    [InlineData("1024", 1024)]
    [InlineData("1k", 1024)]
    [InlineData("100K", 102400)]
    [InlineData("2m", 2 * 1024 * 1024)]
    public void Sizes_take_k_and_m_suffixes(string text, long bytes)
    {
        Assert.True(FlagValues.TryParseSize(text, out long n));
        Assert.Equal(bytes, n);
    }

    [Fact]
    public void Sink_defaults_and_flags()
    {
        var d = Sink([]);
        Assert.Equal(new IPEndPoint(IPAddress.Loopback, 2526), d.Listen);
        Assert.Equal(250, d.ReplyCode);
        Assert.Equal(250, d.RcptReplyCode);
        Assert.Equal(TimeSpan.Zero, d.Delay);
        Assert.Null(d.SaveDirectory);
        Assert.Equal(0, d.ExitAfter);
        Assert.Null(d.Timeout);
        Assert.True(d.Pipelining);
        Assert.True(d.Chunking);

        var o = Sink([
            "--listen", "[::1]:0", "--reply-code", "451", "--rcpt-reply=550", "--rcpt-fail-share", "0.05", "--rcpt-defer-share=0.1", "--delay", "25", "--save", "/tmp/x",
            "--exit-after", "7", "--timeout", "3", "--hostname", "sink.example.net", "--no-pipelining", "--no-chunking",
            "--json", "--quiet",
        ]);
        Assert.Equal(new IPEndPoint(IPAddress.IPv6Loopback, 0), o.Listen);
        Assert.Equal(451, o.ReplyCode);
        Assert.Equal(550, o.RcptReplyCode);
        Assert.Equal(0.05, o.RcptFailShare);
        Assert.Equal(0.1, o.RcptDeferShare);
        Assert.Equal(TimeSpan.FromMilliseconds(25), o.Delay);
        Assert.Equal("/tmp/x", o.SaveDirectory);
        Assert.Equal(7, o.ExitAfter);
        Assert.Equal(TimeSpan.FromSeconds(3), o.Timeout);
        Assert.Equal("sink.example.net", o.Hostname);
        Assert.False(o.Pipelining);
        Assert.False(o.Chunking);
        Assert.True(o.Json);
        Assert.True(o.Quiet);
    }

    [Theory]
    [InlineData("--reply-code 354")]
    [InlineData("--reply-code 600")]
    [InlineData("--reply-code 99")]
    [InlineData("--rcpt-reply ok")]
    [InlineData("--rcpt-fail-share 1.5")]
    [InlineData("--rcpt-defer-share -0.1")]
    [InlineData("--listen localhost:2526")]
    [InlineData("--listen 127.0.0.1")]
    [InlineData("--delay -1")]
    [InlineData("--exit-after 0")]
    [InlineData("--hostname bad!name")]
    [InlineData("--frobnicate")]
    public void Sink_refuses_bad_arguments_with_one_line(string arguments)
    {
        var e = Assert.Throws<ConfigException>(() => Sink(arguments.Split(' ')));
        Assert.StartsWith("sink: ", e.Message);
    }

    [Fact]
    public void Bench_defaults_and_flags()
    {
        var d = Bench([]);
        Assert.Equal(20_000, d.Messages);
        Assert.Equal(20, d.Sessions);
        Assert.Equal(1024, d.Size);
        Assert.Null(d.TempDirectory);

        var o = Bench(["--messages", "500", "--sessions", "4", "--size", "4k", "--per-connection", "10",
            "--timeout", "60", "--temp-dir", "/tmp/b", "--json", "--quiet"]);
        Assert.Equal(500, o.Messages);
        Assert.Equal(4, o.Sessions);
        Assert.Equal(4096, o.Size);
        Assert.Equal(10, o.PerConnection);
        Assert.Equal(TimeSpan.FromSeconds(60), o.Timeout);
        Assert.Equal("/tmp/b", o.TempDirectory);
        Assert.True(o.Json);
        Assert.True(o.Quiet);
    }

    [Theory]
    [InlineData("--messages 0")]
    [InlineData("--size 5")]
    [InlineData("--to 127.0.0.1:25")]
    public void Bench_refuses_bad_arguments(string arguments)
    {
        var e = Assert.Throws<ConfigException>(() => Bench(arguments.Split(' ')));
        Assert.StartsWith("bench: ", e.Message);
    }

    [Theory]
    [InlineData("blast", "--bogus", "blast: unknown flag '--bogus' (try 'nativerelay blast --help')")]
    [InlineData("sink", "--frobnicate", "sink: unknown flag '--frobnicate' (try 'nativerelay sink --help')")]
    [InlineData("bench", "stray", "bench: unexpected argument 'stray' (try 'nativerelay bench --help')")]
    [InlineData("blast", "--messages 0", "blast: --messages must be a whole number from 1 to 1000000000000 (got '0') (try 'nativerelay blast --help')")]
    [InlineData("blast", "--to --json", "blast: --to needs a value (got the flag '--json') (try 'nativerelay blast --help')")]
    [InlineData("sink", "--save --quiet", "sink: --save needs a value (got the flag '--quiet') (try 'nativerelay sink --help')")]
    public void Usage_errors_are_one_line_naming_the_verbs_help(string verb, string arguments, string expected)
    {
        var e = Assert.Throws<ConfigException>(() => Parse(verb, arguments.Split(' '), r => r));
        Assert.Equal(expected, e.Message);
    }

    [Fact]
    public void The_last_of_a_repeated_single_flag_wins_and_both_forms_mix()
    {
        var o = Blast(["--messages", "5", "--messages=7", "--sessions=2"]);
        Assert.Equal(7, o.Messages);
        Assert.Equal(2, o.Sessions);
    }

    [Fact]
    public void Serve_flags_override_the_defaults_and_repeat()
    {
        var result = Entry.Parse([
            "serve", "--listen", "127.0.0.1:2600", "--listen=[::1]:2601", "--spool", "/tmp/s", "--hostname=relay.example.org",
            "--dns", "127.0.0.1:53", "--dns", "127.0.0.2:53", "--remote-port", "2525", "--drain-seconds=5", "--log-format", "json",
        ]);
        Assert.Empty(result.Errors);
        var s = ServeCommand.BuildSettings(result);
        Assert.Equal([IPEndPoint.Parse("127.0.0.1:2600"), IPEndPoint.Parse("[::1]:2601")], s.Listen);
        Assert.Equal(Path.GetFullPath("/tmp/s"), Path.GetFullPath(s.SpoolDirectory));
        Assert.Equal("relay.example.org", s.Hostname);
        Assert.Equal(2525, s.Routing.RemotePort);
        Assert.Equal(5, s.Lifecycle.DrainSeconds);
        Assert.Equal(NativeRelay.Telemetry.LogFormat.Json, s.Lifecycle.LogFormat);

        var defaults = ServeCommand.BuildSettings(Entry.Parse(["serve"]));
        Assert.Equal([IPEndPoint.Parse("127.0.0.1:2525")], defaults.Listen);
        Assert.Equal(25, defaults.Routing.RemotePort);
    }
}
