using System.Net;
using System.Net.Sockets;
using System.Text;
using NativeRelay.Tools;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// The blaster against the sink, in this process, over loopback: counts, error codes, pipelining
/// on and off, connection reuse, --save. Bounded (small N, a time limit on every run), and no
/// assertion on timing.
/// </summary>
public sealed class ToolsLoopbackTests : IAsyncLifetime
{
    private readonly List<SmtpSink> _sinks = new();
    private readonly List<string> _dirs = new();

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var sink in _sinks)
            await sink.DisposeAsync();
        foreach (var dir in _dirs)
            if (Directory.Exists(dir))
                Directory.Delete(dir, recursive: true);
    }

    private SmtpSink StartSink(Action<SinkOptions>? configure = null)
    {
        var options = new SinkOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0), Quiet = true };
        configure?.Invoke(options);
        var sink = new SmtpSink(options);
        sink.Start();
        _sinks.Add(sink);
        return sink;
    }

    private static BlastOptions To(SmtpSink sink, long messages, int sessions = 4) => new()
    {
        Host = "127.0.0.1",
        Port = sink.EndPoint.Port,
        Messages = messages,
        Sessions = sessions,
        Timeout = TimeSpan.FromSeconds(60),
        Quiet = true,
    };

    private static async Task WaitForCount(SmtpSink sink, long count)
    {
        using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        Assert.True(await sink.WaitForMessagesAsync(count, cancel.Token), $"sink has {sink.Messages} of {count}");
    }

    [Fact]
    public async Task The_sink_offers_starttls_with_a_certificate_and_blast_sends_over_it()
    {
        string dir = Path.Combine(Path.GetTempPath(), "nativerelay-sinktls-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        _dirs.Add(dir);
        var cert = NativeRelay.Tests.Support.TestCertificate.Create(dir, commonName: "sink.test");
        var sink = StartSink(o => { o.TlsCertificate = cert.CertificatePath; o.TlsKey = cert.KeyPath; });
        var options = To(sink, 40, sessions: 2);
        var result = await new Blaster(new BlastOptions
        {
            Host = options.Host, Port = options.Port, Messages = 40, Sessions = 2, Timeout = options.Timeout, Quiet = true, Tls = true,
        }).RunAsync();
        var w = new StringWriter();
        result.WriteText(w);
        Assert.True(result.Success, w.ToString());
        await WaitForCount(sink, 40);
    }

    [Fact]
    public async Task Every_message_arrives_with_pipelining_and_one_connection_per_session()
    {
        var sink = StartSink();
        var result = await new Blaster(To(sink, 500)).RunAsync();

        Assert.True(result.Success, Describe(result));
        Assert.Equal(500, result.Accepted);
        Assert.Equal(0, result.Failed);
        Assert.Equal(0, result.Errors.Total);
        Assert.True(result.Pipelining);
        Assert.Equal(4, result.Connections);
        Assert.Equal(500, result.AcceptLatency.Count);
        Assert.Equal(4, result.ConnectLatency.Count);
        await WaitForCount(sink, 500);
        var summary = sink.Summarize();
        Assert.Equal(500, summary.Accepted);
        Assert.Equal(500, summary.Recipients);
        Assert.Equal(500L * 1024, summary.Bytes);
    }

    [Fact]
    public async Task Without_pipelining_and_with_a_new_connection_per_message()
    {
        var sink = StartSink(o => o.Pipelining = false);
        var options = To(sink, 60, sessions: 3);
        options.PerConnection = 1;
        options.Recipients = 3;
        var result = await new Blaster(options).RunAsync();

        Assert.True(result.Success, Describe(result));
        Assert.False(result.Pipelining);
        Assert.Equal(60, result.Connections);
        Assert.Equal(60, result.ConnectLatency.Count);
        await WaitForCount(sink, 60);
        Assert.Equal(180, sink.Summarize().Recipients);
    }

    [Fact]
    public async Task Messages_per_connection_are_limited()
    {
        var sink = StartSink();
        var options = To(sink, 100, sessions: 2);
        options.PerConnection = 10;
        var result = await new Blaster(options).RunAsync();
        Assert.True(result.Success, Describe(result));
        // 10 per connection: at least 10 connections, and at most one partly used one per session.
        Assert.InRange(result.Connections, 10, 11);
    }

    [Theory]
    [InlineData(451, 250)]
    [InlineData(554, 250)]
    [InlineData(250, 550)]
    [InlineData(250, 452)]
    public async Task Refusals_are_counted_by_reply_code(int dataCode, int rcptCode)
    {
        var sink = StartSink(o =>
        {
            o.ReplyCode = dataCode;
            o.RcptReplyCode = rcptCode;
        });
        var result = await new Blaster(To(sink, 40)).RunAsync();

        int expected = rcptCode != 250 ? rcptCode : dataCode;
        Assert.False(result.Success);
        Assert.Equal(0, result.Accepted);
        Assert.Equal(40, result.Failed);
        Assert.Equal(40, result.Errors.Count(expected));
        Assert.Equal(40, result.Errors.Total);
        Assert.Contains(result.Errors.Entries(), e => e.Key == expected.ToString() && e.Text!.Contains("sink"));
        // The connections survive refusals: at most one per session (a session that starts late
        // may find the work already taken and never connect).
        Assert.InRange(result.Connections, 1, 4);
    }

    [Fact]
    public async Task With_every_recipient_refused_a_message_counts_once_under_the_rcpt_code()
    {
        var sink = StartSink(o => o.RcptReplyCode = 550);
        var options = To(sink, 10, sessions: 1);
        options.Recipients = 2;
        var result = await new Blaster(options).RunAsync();
        Assert.Equal(10, result.Errors.Count(550));
        Assert.Equal(0, sink.Messages);
    }

    [Fact]
    public async Task Shares_of_recipients_are_refused_and_deferred_at_random()
    {
        var sink = StartSink(o =>
        {
            o.RcptFailShare = 0.3;
            o.RcptDeferShare = 0.3;
        });
        var result = await new Blaster(To(sink, 400)).RunAsync();
        long failed = result.Errors.Count(550), deferred = result.Errors.Count(451);
        Assert.Equal(400, result.Accepted + failed + deferred);
        // 120 expected of each, with a standard deviation of about 9: these bounds never trip by chance.
        Assert.InRange(failed, 60, 180);
        Assert.InRange(deferred, 60, 180);
        Assert.Contains(result.Errors.Entries(), e => e.Key == "550" && e.Text!.Contains("5.1.1"));
        Assert.Contains(result.Errors.Entries(), e => e.Key == "451" && e.Text!.Contains("4.2.0"));
        await WaitForCount(sink, result.Accepted);
    }

    [Fact]
    public async Task A_closed_port_fails_every_message_as_connect_and_stops()
    {
        int port;
        using (var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp))
        {
            s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
            port = ((IPEndPoint)s.LocalEndPoint!).Port;
        }
        var result = await new Blaster(new BlastOptions { Port = port, Messages = 20, Sessions = 2, Quiet = true, Timeout = TimeSpan.FromSeconds(30) }).RunAsync();
        Assert.Equal(20, result.Failed);
        Assert.Equal(20, result.Errors.Count(LocalFailure.Connect));
        Assert.Equal(0, result.Connections);
    }

    [Fact]
    public async Task The_time_limit_stops_the_run_and_it_still_reports()
    {
        var sink = StartSink(o => o.Delay = TimeSpan.FromSeconds(30));
        var options = To(sink, 1000, sessions: 2);
        options.Timeout = TimeSpan.FromMilliseconds(500);
        var result = await new Blaster(options).RunAsync();
        Assert.True(result.TimedOut);
        Assert.False(result.Success);
        Assert.Equal(2, result.Errors.Count(LocalFailure.Timeout));
        Assert.Equal(998, result.NotSent);
    }

    [Fact]
    public async Task A_rate_limited_run_completes()
    {
        var sink = StartSink();
        var options = To(sink, 100, sessions: 4);
        options.Rate = 1000;
        var result = await new Blaster(options).RunAsync();
        Assert.True(result.Success, Describe(result));
        Assert.Equal(1000, result.Rate);
    }

    [Fact]
    public async Task Save_writes_each_message_as_received_and_its_envelope()
    {
        string dir = Path.Combine(Path.GetTempPath(), $"nativerelay-sink-save-{Guid.NewGuid():N}");
        _dirs.Add(dir);
        var sink = StartSink(o => o.SaveDirectory = dir);
        var options = To(sink, 25, sessions: 2);
        options.Size = 5000;
        options.Recipients = 2;
        var blaster = new Blaster(options);
        var result = await blaster.RunAsync();
        Assert.True(result.Success, Describe(result));
        await WaitForCount(sink, 25);
        await sink.StopAsync(TimeSpan.FromSeconds(5));

        var files = Directory.GetFiles(dir, "*.eml");
        Assert.Equal(25, files.Length);
        var expected = Enumerable.Range(0, 25).Select(i => Convert.ToBase64String(blaster.Message.ToMessage(i))).ToHashSet();
        var actual = files.Select(f => Convert.ToBase64String(File.ReadAllBytes(f))).ToHashSet();
        Assert.Equal(expected, actual);
        var envelopes = File.ReadAllLines(Path.Combine(dir, "envelopes.log"));
        Assert.Equal(25, envelopes.Length);
        Assert.All(envelopes, l => Assert.EndsWith(" from=<blast@example.org> to=<1sink@example.com> to=<2sink@example.com>", l));
    }

    [Fact]
    public async Task The_sink_takes_bdat_chunks_and_refuses_bare_line_endings()
    {
        var sink = StartSink();
        using var client = new TcpClient();
        await client.ConnectAsync(IPAddress.Loopback, sink.EndPoint.Port);
        var stream = client.GetStream();
        var reader = new StreamReader(stream, Encoding.ASCII);
        Assert.StartsWith("220 ", await reader.ReadLineAsync());

        await Send(stream, "EHLO c.example\r\n");
        var ehlo = new List<string>();
        string? line;
        do
        {
            line = await reader.ReadLineAsync();
            ehlo.Add(line!);
        }
        while (line![3] == '-');
        Assert.Contains("250-PIPELINING", ehlo);
        Assert.Contains("250 CHUNKING", ehlo);

        // Two chunks, the second empty and LAST, all pipelined.
        await Send(stream, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nBDAT 10\r\n0123456789BDAT 0 LAST\r\n");
        Assert.StartsWith("250 ", await reader.ReadLineAsync());
        Assert.StartsWith("250 ", await reader.ReadLineAsync());
        Assert.StartsWith("250 ", await reader.ReadLineAsync());
        Assert.Equal("250 2.0.0 Ok: queued", await reader.ReadLineAsync());
        await WaitForCount(sink, 1);
        Assert.Equal(10, sink.Bytes);

        // BDAT with no valid recipient: the chunk is read and refused.
        await Send(stream, "BDAT 3 LAST\r\nabc");
        Assert.StartsWith("554 ", await reader.ReadLineAsync());

        await Send(stream, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n");
        Assert.StartsWith("250 ", await reader.ReadLineAsync());
        Assert.StartsWith("250 ", await reader.ReadLineAsync());
        Assert.StartsWith("354 ", await reader.ReadLineAsync());
        await Send(stream, "line one\nline two\r\n.\r\n");
        Assert.StartsWith("554 5.6.0", await reader.ReadLineAsync());
        Assert.Null(await reader.ReadLineAsync());
        Assert.Equal(1, sink.Messages);
        Assert.Equal(1, sink.Summarize().BareLineEndings);
    }

    [Fact]
    public async Task Bench_runs_blaster_relay_and_sink_and_removes_its_directory()
    {
        string root = Path.Combine(Path.GetTempPath(), $"nativerelay-bench-test-{Guid.NewGuid():N}");
        Directory.CreateDirectory(root);
        _dirs.Add(root);
        var options = new BenchOptions { Messages = 300, Sessions = 4, TempDirectory = root, Quiet = true, Timeout = TimeSpan.FromSeconds(60) };

        var result = await BenchRunner.RunAsync(options, TextWriter.Null, terminal: false, CancellationToken.None);

        Assert.True(result.Success, $"accepted {result.Blast.Accepted}, delivered {result.Delivered}");
        Assert.Equal(300, result.Delivered);
        Assert.True(result.EndToEndSeconds > 0);
        Assert.True(result.SpoolCommits > 0);
        Assert.Equal(300, result.Blast.AcceptLatency.Count);
        Assert.Empty(Directory.GetFileSystemEntries(root));
        var text = new StringWriter();
        result.WriteText(text);
        Assert.Contains("end to end   300 delivered", text.ToString());
    }

    private static Task Send(NetworkStream stream, string text) => stream.WriteAsync(Encoding.ASCII.GetBytes(text)).AsTask();

    private static string Describe(BlastResult r)
    {
        var w = new StringWriter();
        r.WriteText(w);
        return w.ToString();
    }
}
