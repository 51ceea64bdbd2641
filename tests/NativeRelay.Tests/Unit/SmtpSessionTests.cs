using System.Net;
using System.Text;
using System.Threading.Channels;
using NativeRelay.Config;
using NativeRelay.Delivery;
using NativeRelay.Net;
using NativeRelay.Smtp;
using NativeRelay.Smtp.Auth;
using NativeRelay.Spool;
using NativeRelay.Telemetry;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// The server session in process, on loopback, with a real spool and a capturing intake, so the
/// envelope the session builds (DSN fields, flags, the authenticated user) and the exact bytes it
/// queues can be looked at, which the published binary does not show.
/// </summary>
public sealed class SmtpSessionTests : IAsyncLifetime
{
    private const string Password = "pw-in-process";
    private readonly TempDir _dir = new("nativerelay-session");
    private readonly CapturingIntake _intake = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly List<SocketListener> _listeners = new();
    private SpoolLog _spool = null!;
    private TestCertificate _certificate = null!;
    private int _smtpPort;
    private int _submissionPort;

    public async Task InitializeAsync()
    {
        _certificate = TestCertificate.Create(_dir.Path);
        _smtpPort = FreePort.Get();
        _submissionPort = FreePort.Get();
        var options = new RelayOptions
        {
            Hostname = "session.test",
            Listen = [$"127.0.0.1:{_smtpPort}"],
            Listeners = [new ListenerOptions { Address = $"127.0.0.1:{_submissionPort}", Kind = "submission" }],
            Spool = _dir.Spool,
            Tls = new TlsOptions { Certificate = _certificate.CertificatePath, Key = _certificate.KeyPath },
            UsersFile = _dir.File("users"),
        };
        var settings = RelaySettings.Validate(options);
        _spool = SpoolLog.Open(settings.SpoolDirectory, settings.SpoolTuning, Log.Null);
        var users = UserStore.FromLines([$"carol:{PasswordHash.Create(Password, 1000)}"]);
        var server = new SmtpServer(settings, _spool, _intake, new QueueIdGenerator(), Log.Null, users: users);
        var limiter = new ConnectionLimiter(100, 100);
        foreach (var l in settings.Listeners)
        {
            var listener = new SocketListener(l.EndPoint, server, limiter, Log.Null, l.Kind);
            listener.Start(_stop.Token);
            _listeners.Add(listener);
        }

        await Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        _stop.Cancel();
        foreach (var l in _listeners)
        {
            await l.DisposeAsync();
        }

        while (_intake.Queued.Reader.TryRead(out var m))
        {
            m.Body!.Release();
        }

        await _spool.DisposeAsync();
        _dir.Dispose();
    }

    [Fact]
    public async Task Dsn_parameters_are_stored_in_the_envelope()
    {
        await using var client = await SecureSmtpClient.ConnectEhloAsync(_smtpPort);
        await client.ExpectAsync("MAIL FROM:<sender@example.test> RET=HDRS ENVID=QQ+2B1.ab", 250);
        await client.ExpectAsync("RCPT TO:<one@example.test> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;one+2Bx@example.test", 250);
        await client.ExpectAsync("RCPT TO:<two@example.test>", 250);
        await client.ExpectAsync("DATA", 354);
        await client.SendRawAsync("Subject: dsn\r\n\r\nbody\r\n.\r\n");
        Assert.Equal(250, (await client.ReadReplyAsync()).Code);

        var m = await _intake.NextAsync();
        var e = m.Envelope;
        Assert.Equal(EnvelopeFlags.ReturnHeadersOnly, e.Flags & (EnvelopeFlags.ReturnHeadersOnly | EnvelopeFlags.ReturnFull));
        Assert.Equal("QQ+1.ab", Encoding.ASCII.GetString(e.EnvelopeId!));
        Assert.Equal([DsnNotify.Success | DsnNotify.Failure, DsnNotify.None], e.Notify);
        Assert.Equal("rfc822;one+x@example.test", Encoding.ASCII.GetString(e.OriginalRecipients![0]!));
        Assert.Null(e.OriginalRecipients[1]);
        Assert.Null(e.AuthenticatedUser);
        m.Body!.Release();
    }

    [Fact]
    public async Task Envelope_without_dsn_parameters_has_no_dsn_fields()
    {
        await using var client = await SecureSmtpClient.ConnectEhloAsync(_smtpPort);
        var reply = await client.SendMessageAsync("a@example.test", ["b@example.test"], MessageText.Simple("plain@session.test"));
        Assert.Equal(250, reply.Code);

        var e = (await _intake.NextAsync()).Envelope;
        Assert.Null(e.Notify);
        Assert.Null(e.OriginalRecipients);
        Assert.Null(e.EnvelopeId);
        Assert.Equal(EnvelopeFlags.None, e.Flags);
    }

    [Fact]
    public async Task Smtputf8_and_8bitmime_are_kept_with_the_message()
    {
        await using var client = await SecureSmtpClient.ConnectEhloAsync(_smtpPort);
        await client.ExpectAsync("MAIL FROM:<jörg@bücher.example> SMTPUTF8 BODY=8BITMIME", 250);
        await client.ExpectAsync("RCPT TO:<用户@例子.test>", 250);
        await client.ExpectAsync("DATA", 354);
        await client.SendRawAsync("Subject: Grüße\r\n\r\nÜ\r\n.\r\n");
        Assert.Equal(250, (await client.ReadReplyAsync()).Code);

        var m = await _intake.NextAsync();
        Assert.True(m.Envelope.Flags.HasFlag(EnvelopeFlags.SmtpUtf8));
        Assert.True(m.Envelope.Flags.HasFlag(EnvelopeFlags.EightBitMime));
        Assert.Equal("jörg@bücher.example", Encoding.UTF8.GetString(m.Envelope.Sender));
        Assert.Equal("用户@例子.test", Encoding.UTF8.GetString(m.Envelope.Recipients[0]));
        Assert.Contains("with UTF8SMTP id", Body(m));
        m.Body!.Release();
    }

    [Fact]
    public async Task Bdat_chunks_are_queued_exactly_with_a_received_header_in_front()
    {
        const string part1 = "Subject: chunked\r\n\r\n.a line with a leading dot\r\n";
        const string part2 = "..and two\r\nend\r\n";
        await using var client = await SecureSmtpClient.ConnectEhloAsync(_smtpPort);
        await client.SendRawAsync("MAIL FROM:<a@example.test>\r\nRCPT TO:<b@example.test>\r\n"
                                  + $"BDAT {part1.Length}\r\n{part1}BDAT {part2.Length} LAST\r\n{part2}");
        var replies = await client.ReadRepliesAsync(4);

        Assert.Equal([250, 250, 250, 250], replies.Select(r => r.Code));
        var m = await _intake.NextAsync();
        string body = Body(m);
        Assert.StartsWith("Received: from client.test", body);
        Assert.EndsWith("\r\n" + part1 + part2, body);
        m.Body!.Release();
    }

    [Fact]
    public async Task Submission_records_the_user_and_adds_message_id_and_date()
    {
        await using var client = await SecureSmtpClient.ConnectEhloAsync(_submissionPort);
        await client.StartTlsAsync();
        await client.ExpectAsync("EHLO client.test", 250);
        Assert.Equal(235, (await client.AuthPlainAsync("carol", Password)).Code);
        var reply = await client.SendMessageAsync("carol@example.test", ["dave@remote.test"], MessageText.Build("Subject: no id", "", "hi"));
        Assert.Equal(250, reply.Code);

        var m = await _intake.NextAsync();
        Assert.Equal("carol", m.Envelope.AuthenticatedUser);
        Assert.True(m.Envelope.Flags.HasFlag(EnvelopeFlags.Authenticated));
        string body = Body(m);
        Assert.Matches(@"with ESMTPSA id [0-9A-F]{16}\r\n\t\(using TLSv1\.[23] with cipher TLS_\w+\)", body);
        Assert.Matches(@"\r\nMessage-ID: <\d{14}\.[0-9A-F]{16}@session\.test>\r\n", body);
        Assert.Matches(@"\r\nDate: \w{3}, \d{1,2} \w{3} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n", body);
        Assert.EndsWith("Subject: no id\r\n\r\nhi\r\n", body);
        m.Body!.Release();
    }

    [Fact]
    public async Task Submission_keeps_the_clients_own_message_id_and_date()
    {
        await using var client = await SecureSmtpClient.ConnectEhloAsync(_submissionPort);
        await client.StartTlsAsync();
        await client.ExpectAsync("EHLO client.test", 250);
        Assert.Equal(235, (await client.AuthLoginAsync("carol", Password)).Code);
        var original = MessageText.Simple("own-id@client.test");
        Assert.Equal(250, (await client.SendMessageAsync("carol@example.test", ["dave@remote.test"], original)).Code);

        var m = await _intake.NextAsync();
        string body = Body(m);
        Assert.Single(body.Split("\r\n"), l => l.StartsWith("Message-ID:", StringComparison.OrdinalIgnoreCase));
        Assert.Single(body.Split("\r\n"), l => l.StartsWith("Date:", StringComparison.OrdinalIgnoreCase));
        Assert.EndsWith(Encoding.Latin1.GetString(original), body);
        m.Body!.Release();
    }

    private static string Body(QueuedMessage m)
    {
        var sb = new StringBuilder();
        foreach (var segment in m.Body!.GetSegments())
        {
            sb.Append(Encoding.UTF8.GetString(segment.Span));
        }

        return sb.ToString();
    }

    private sealed class CapturingIntake : IQueueIntake
    {
        public Channel<QueuedMessage> Queued { get; } = Channel.CreateUnbounded<QueuedMessage>();

        public void ReserveSpool(ulong id)
        {
        }

        public void CancelReservation(ulong id)
        {
        }

        public ValueTask EnqueueAsync(QueuedMessage message) => Queued.Writer.WriteAsync(message);

        public async Task<QueuedMessage> NextAsync()
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            return await Queued.Reader.ReadAsync(cts.Token);
        }
    }
}
