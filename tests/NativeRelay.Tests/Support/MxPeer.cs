using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace NativeRelay.Tests.Support;

/// <summary>One transaction a <see cref="MxPeer"/> accepted (a 2xx reply to the end of its data).</summary>
public sealed record PeerMessage(
    int Sequence,
    int ConnectionNumber,
    string MailFrom,
    string MailParameters,
    IReadOnlyList<string> Recipients,
    IReadOnlyList<string> RecipientParameters,
    byte[] Data,
    bool Tls,
    bool Bdat)
{
    /// <summary>When the peer accepted it (UTC).</summary>
    public DateTime ReceivedAt { get; init; } = DateTime.UtcNow;

    /// <summary>The EHLO (or HELO) name the client gave on its connection.</summary>
    public string Helo { get; init; } = "";

    /// <summary>The client's address.</summary>
    public string Client { get; init; } = "";

    public string DataText => Encoding.UTF8.GetString(Data);

    public string? Header(string name) => MessageText.Header(Encoding.Latin1.GetString(Data), name);

    public override string ToString() =>
        $"#{Sequence} conn {ConnectionNumber} from <{MailFrom}> {MailParameters} to [{string.Join(", ", Recipients.Select(r => "<" + r + ">"))}] " +
        $"{Data.Length} bytes{(Tls ? " TLS" : "")}{(Bdat ? " BDAT" : "")}, Subject {Header("Subject") ?? "(none)"}";
}

/// <summary>
/// An SMTP server standing for one remote host: it binds a given loopback address (127.0.0.2,
/// 127.0.0.3 ...: on Linux all of 127/8 is local) and port, offers the extensions the test
/// chooses (PIPELINING, 8BITMIME, SIZE, SMTPUTF8, CHUNKING/BDAT, DSN, STARTTLS with a self-signed
/// certificate), answers as the test says (greeting, RCPT, end of data, a recipient limit with
/// 452, hanging before the greeting), and records what it got, including how many connections
/// were open at the same time.
/// </summary>
public sealed class MxPeer : IAsyncDisposable
{
    private static readonly Lazy<X509Certificate2> Certificate = new(CreateCertificate);

    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _acceptLoop;
    private readonly object _lock = new();
    private readonly List<PeerMessage> _messages = new();
    private readonly List<string> _rcptAttempts = new();
    private readonly List<string> _events = new();
    private readonly List<Task> _connections = new();
    private readonly List<TcpClient> _clients = new();
    private TaskCompletionSource _changed = NewSignal();
    private int _connectionCount;
    private int _open;
    private int _inSession;
    private int _maxOpen;
    private int _dataAttempts;
    private int _ehlos;
    private int _quits;

    public MxPeer(string ip, int port, string name)
    {
        Name = name;
        _listener = new TcpListener(IPAddress.Parse(ip), port);
        _listener.Server.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        _listener.Start(512);
        Ip = ip;
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _acceptLoop = Task.Run(AcceptLoopAsync);
    }

    public string Name { get; }
    public string Ip { get; }
    public int Port { get; }
    public string Endpoint => $"{Ip}:{Port}";

    public bool Pipelining { get; set; } = true;
    public bool EightBitMime { get; set; } = true;
    public bool SmtpUtf8 { get; set; }
    public bool Chunking { get; set; }
    public bool Dsn { get; set; }
    public bool StartTls { get; set; }

    /// <summary>The certificate STARTTLS presents (default: a self-signed one for peer.test).</summary>
    public X509Certificate2? ServerCertificate { get; set; }

    /// <summary>Certificates sent after <see cref="ServerCertificate"/> in the handshake (intermediates, a trust anchor).</summary>
    public X509Certificate2[] ServerChain { get; set; } = [];

    /// <summary>Offer REQUIRETLS (RFC 8689) in the EHLO reply under TLS.</summary>
    public bool RequireTls { get; set; }

    /// <summary>The parameters of every MAIL command received (after the path).</summary>
    public System.Collections.Concurrent.ConcurrentQueue<string> MailParameters { get; } = new();

    /// <summary>Offer STARTTLS in EHLO but answer it 454 (a downgrade attempt).</summary>
    public bool RefuseStartTls { get; set; }
    public long SizeLimit { get; set; } = 100 * 1024 * 1024;

    /// <summary>The greeting line (a 4xx or 5xx here makes the relay try the next host).</summary>
    public string Greeting { get; set; } = "";

    /// <summary>The greeting by client address (null: <see cref="Greeting"/>), e.g. to refuse one sending IP.</summary>
    public Func<string, string?>? GreetingFrom { get; set; }

    /// <summary>Accept the connection and never greet (a hung host); sessions end when the peer is disposed.</summary>
    public bool HangBeforeGreeting { get; set; }

    /// <summary>EHLO gets 502 (an old server): the client must fall back to HELO.</summary>
    public bool EhloRefused { get; set; }

    /// <summary>A LIMITS capability (RFC 9422) to advertise, e.g. "RCPTMAX=2".</summary>
    public string? Limits { get; set; }

    /// <summary>After "220 Ready to start TLS", send bytes that are not TLS and close (a broken TLS stack).</summary>
    public bool BreakTlsHandshake { get; set; }

    /// <summary>Send an extra line in the same write as the 220 to STARTTLS (the response-injection attack).</summary>
    public bool InjectAfterStartTls { get; set; }

    /// <summary>Reply to MAIL by sender (without brackets); default 250.</summary>
    public Func<string, string>? MailReply { get; set; }

    /// <summary>EHLO commands received (over all connections).</summary>
    public int EhloCount => Volatile.Read(ref _ehlos);

    /// <summary>Reply to RCPT by address (without brackets); default 250.</summary>
    public Func<string, string>? RcptReply { get; set; }

    /// <summary>Reply to the end of data; default 250.</summary>
    public Func<PeerMessage, string>? DataReply { get; set; }

    /// <summary>Recipients per transaction; beyond it RCPT gets 452 4.5.3 (0: no limit).</summary>
    public int MaxRecipientsPerTransaction { get; set; }

    /// <summary>Time taken before replying to the end of data (to keep connections busy).</summary>
    public TimeSpan DataDelay { get; set; }

    /// <summary>Time taken before replying to QUIT (a slow goodbye; the session counts as open meanwhile).</summary>
    public TimeSpan QuitDelay { get; set; }

    /// <summary>QUIT commands received (over all connections), counted before <see cref="QuitDelay"/>.</summary>
    public int QuitCount => Volatile.Read(ref _quits);

    public int ConnectionCount => Volatile.Read(ref _connectionCount);
    public int OpenConnections => Volatile.Read(ref _open);
    /// <summary>
    /// The most SMTP sessions open at once: a connection counts from its accept until the client
    /// ends it with QUIT (or it closes). Not until the socket's close is seen: a client that
    /// renews a connection gets 221, closes, and connects again, and this side may accept the new
    /// connection before it reads the old one's end.
    /// </summary>
    public int MaxConcurrentConnections => Volatile.Read(ref _maxOpen);
    public int DataAttemptCount => Volatile.Read(ref _dataAttempts);

    public IReadOnlyList<PeerMessage> Messages
    {
        get { lock (_lock) { return _messages.ToArray(); } }
    }

    public int RcptAttempts(string address)
    {
        lock (_lock)
            return _rcptAttempts.Count(a => string.Equals(a, address, StringComparison.OrdinalIgnoreCase));
    }

    public Task<PeerMessage> WaitForMessageAsync(Func<PeerMessage, bool> predicate, string what) =>
        WaitForMessageAsync(predicate, Waits.Delivery, what);

    public async Task<PeerMessage> WaitForMessageAsync(Func<PeerMessage, bool> predicate, TimeSpan timeout, string what)
    {
        PeerMessage? found = null;
        await WaitUntilAsync(() => (found = Messages.FirstOrDefault(predicate)) is not null, timeout, what).ConfigureAwait(false);
        return found!;
    }

    /// <summary>Waits until the condition holds, checked on every change and every 100 ms.</summary>
    public async Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            Task changed;
            lock (_lock) { changed = _changed.Task; }
            if (condition())
                return;
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero)
                throw new TimeoutException($"Peer {Name} ({Endpoint}) did not get {what} within {timeout.TotalSeconds:0} s.\n{Describe()}");
            await Task.WhenAny(changed, Task.Delay(left < TimeSpan.FromMilliseconds(100) ? left : TimeSpan.FromMilliseconds(100))).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Watches for a fixed window and fails as soon as the condition stops holding. Only for
    /// proving that something does NOT happen (no retry, no second delivery).
    /// </summary>
    public async Task AssertStaysTrueAsync(Func<bool> condition, TimeSpan window, string what)
    {
        var deadline = DateTime.UtcNow + window;
        while (true)
        {
            if (!condition())
                throw new Xunit.Sdk.XunitException($"Expected {what} for {window.TotalSeconds:0} s, but it changed.\n{Describe()}");
            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero)
                return;
            await Task.Delay(left < TimeSpan.FromMilliseconds(100) ? left : TimeSpan.FromMilliseconds(100)).ConfigureAwait(false);
        }
    }

    public string Describe()
    {
        lock (_lock)
        {
            var sb = new StringBuilder();
            sb.AppendLine($"--- peer {Name} {Endpoint}: {_connectionCount} connections (max {_maxOpen} at once), {_dataAttempts} data attempts, {_messages.Count} messages ---");
            foreach (var m in _messages.TakeLast(20))
                sb.AppendLine("  " + m);
            sb.AppendLine("  last events:");
            foreach (var e in _events.TakeLast(40))
                sb.AppendLine("    " + e);
            return sb.ToString();
        }
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private void Signal()
    {
        TaskCompletionSource old;
        lock (_lock)
        {
            old = _changed;
            _changed = NewSignal();
        }
        old.TrySetResult();
    }

    private void Record(string e)
    {
        lock (_lock)
        {
            _events.Add(e);
            if (_events.Count > 4000)
                _events.RemoveRange(0, 2000);
        }
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }
            int number = Interlocked.Increment(ref _connectionCount);
            Interlocked.Increment(ref _open);
            int open = Interlocked.Increment(ref _inSession);
            int max;
            while (open > (max = Volatile.Read(ref _maxOpen)) && Interlocked.CompareExchange(ref _maxOpen, open, max) != max)
            {
            }
            var task = Task.Run(() => HandleAsync(client, number));
            lock (_lock)
            {
                _connections.Add(task);
                _clients.Add(client);
            }
            Signal();
        }
    }

    private async Task HandleAsync(TcpClient client, int number)
    {
        var session = new SessionEnd(this);
        try
        {
            Record($"conn {number}: open from {client.Client.RemoteEndPoint}");
            string peerAddress = (client.Client.RemoteEndPoint as IPEndPoint)?.Address.ToString() ?? "";
            await SessionAsync(client.GetStream(), number, session, peerAddress, _stop.Token).ConfigureAwait(false);
        }
        catch (Exception e) when (e is OperationCanceledException or IOException or SocketException or ObjectDisposedException
                                      or InvalidDataException or System.Security.Authentication.AuthenticationException)
        {
            Record($"conn {number}: ended: {e.GetType().Name}: {e.Message}");
        }
        finally
        {
            session.End();
            Interlocked.Decrement(ref _open);
            client.Dispose();
            Record($"conn {number}: closed");
            Signal();
        }
    }

    /// <summary>Takes a connection out of the session count once, at QUIT or at its close, whichever is first.</summary>
    private sealed class SessionEnd(MxPeer peer)
    {
        private int _ended;

        public void End()
        {
            if (Interlocked.Exchange(ref _ended, 1) == 0)
                Interlocked.Decrement(ref peer._inSession);
        }
    }

    private async Task SessionAsync(Stream stream, int number, SessionEnd session, string peerAddress, CancellationToken ct)
    {
        using var sessionCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        sessionCts.CancelAfter(TimeSpan.FromMinutes(5));
        ct = sessionCts.Token;
        var reader = new PeerReader(stream);
        bool tls = false;

        async Task Reply(string text)
        {
            Record($"conn {number}: S: {Shorten(text)}");
            var bytes = Encoding.UTF8.GetBytes(text.EndsWith("\r\n", StringComparison.Ordinal) ? text : text + "\r\n");
            await stream.WriteAsync(bytes, ct).ConfigureAwait(false);
            await stream.FlushAsync(ct).ConfigureAwait(false);
        }

        if (HangBeforeGreeting)
        {
            await Task.Delay(Timeout.Infinite, ct).ConfigureAwait(false);
            return;
        }
        string greeting = GreetingFrom?.Invoke(peerAddress) ?? (Greeting.Length > 0 ? Greeting : $"220 {Name} ESMTP MxPeer");
        await Reply(greeting).ConfigureAwait(false);
        if (!greeting.StartsWith('2'))
        {
            // RFC 5321 3.1: a server that refuses at the greeting waits for QUIT.
            while (await reader.ReadLineAsync(ct).ConfigureAwait(false) is { } line)
            {
                if (line.StartsWith("QUIT", StringComparison.OrdinalIgnoreCase))
                {
                    await Reply("221 2.0.0 Bye").ConfigureAwait(false);
                    return;
                }
                await Reply("503 5.5.1 not accepting mail").ConfigureAwait(false);
            }
            return;
        }

        string? mailFrom = null;
        string mailParams = "";
        var recipients = new List<string>();
        var rcptParams = new List<string>();
        var bdat = new MemoryStream();
        bool usedBdat = false;

        void ResetTransaction()
        {
            mailFrom = null;
            mailParams = "";
            recipients.Clear();
            rcptParams.Clear();
            bdat.SetLength(0);
            usedBdat = false;
        }

        string helo = "";
        while (true)
        {
            var line = await reader.ReadLineAsync(ct).ConfigureAwait(false);
            if (line is null)
                return;
            Record($"conn {number}: C: {Shorten(line)}");
            string verb = (line.Length >= 4 ? line[..4] : line).ToUpperInvariant();
            string arg = line.Length > 4 ? line[4..].Trim() : "";
            switch (verb)
            {
                case "EHLO":
                {
                    Interlocked.Increment(ref _ehlos);
                    helo = arg;
                    if (EhloRefused)
                    {
                        await Reply("502 5.5.2 Error: command not recognized").ConfigureAwait(false);
                        break;
                    }
                    ResetTransaction();
                    var caps = new List<string> { $"{Name} greets {arg}" };
                    if (Pipelining) caps.Add("PIPELINING");
                    if (EightBitMime) caps.Add("8BITMIME");
                    if (SizeLimit > 0) caps.Add($"SIZE {SizeLimit}");
                    if (SmtpUtf8) caps.Add("SMTPUTF8");
                    if (Chunking) caps.Add("CHUNKING");
                    if (Dsn) caps.Add("DSN");
                    if (StartTls && !tls) caps.Add("STARTTLS");
                    if (RequireTls && tls) caps.Add("REQUIRETLS");
                    if (Limits is not null) caps.Add("LIMITS " + Limits);
                    caps.Add("ENHANCEDSTATUSCODES");
                    var text = new StringBuilder();
                    for (int i = 0; i < caps.Count; i++)
                        text.Append("250").Append(i == caps.Count - 1 ? ' ' : '-').Append(caps[i]).Append("\r\n");
                    await Reply(text.ToString()).ConfigureAwait(false);
                    break;
                }
                case "HELO":
                    ResetTransaction();
                    await Reply($"250 {Name}").ConfigureAwait(false);
                    break;
                case "STAR": // STARTTLS
                {
                    if (!StartTls || tls || reader.HasBuffered || RefuseStartTls)
                    {
                        await Reply("454 4.7.0 TLS not available").ConfigureAwait(false);
                        break;
                    }
                    if (InjectAfterStartTls)
                    {
                        await Reply("220 2.0.0 Ready to start TLS\r\n250 2.0.0 injected").ConfigureAwait(false);
                        return;
                    }
                    await Reply("220 2.0.0 Ready to start TLS").ConfigureAwait(false);
                    if (BreakTlsHandshake)
                    {
                        // Answer the client's hello with something that is not TLS.
                        await stream.ReadAsync(new byte[4096], ct).ConfigureAwait(false);
                        await stream.WriteAsync("this is not a TLS record\r\n"u8.ToArray(), ct).ConfigureAwait(false);
                        return;
                    }
                    var ssl = new SslStream(stream, leaveInnerStreamOpen: false);
                    await ssl.AuthenticateAsServerAsync(ServerOptions(), ct).ConfigureAwait(false);
                    stream = ssl;
                    reader = new PeerReader(ssl);
                    tls = true;
                    ResetTransaction();
                    Record($"conn {number}: TLS {ssl.SslProtocol}");
                    break;
                }
                case "MAIL":
                {
                    if (mailFrom is not null)
                    {
                        await Reply("503 5.5.1 nested MAIL").ConfigureAwait(false);
                        break;
                    }
                    if (!TryPath(arg, "FROM:", out var from, out var parameters))
                    {
                        await Reply("501 5.5.4 Syntax: MAIL FROM:<address>").ConfigureAwait(false);
                        break;
                    }
                    MailParameters.Enqueue(parameters);
                    if (parameters.Contains("SMTPUTF8", StringComparison.OrdinalIgnoreCase) && !SmtpUtf8)
                    {
                        await Reply("555 5.5.4 SMTPUTF8 not supported").ConfigureAwait(false);
                        break;
                    }
                    string mailReply = MailReply?.Invoke(from) ?? "250 2.1.0 Ok";
                    if (!mailReply.StartsWith('2'))
                    {
                        await Reply(mailReply).ConfigureAwait(false);
                        break;
                    }
                    mailFrom = from;
                    mailParams = parameters;
                    await Reply("250 2.1.0 Ok").ConfigureAwait(false);
                    break;
                }
                case "RCPT":
                {
                    if (mailFrom is null)
                    {
                        await Reply("503 5.5.1 need MAIL").ConfigureAwait(false);
                        break;
                    }
                    if (!TryPath(arg, "TO:", out var to, out var parameters))
                    {
                        await Reply("501 5.5.4 Syntax: RCPT TO:<address>").ConfigureAwait(false);
                        break;
                    }
                    lock (_lock) { _rcptAttempts.Add(to); }
                    string reply;
                    if (MaxRecipientsPerTransaction > 0 && recipients.Count >= MaxRecipientsPerTransaction)
                        reply = "452 4.5.3 Too many recipients";
                    else
                        reply = RcptReply?.Invoke(to) ?? "250 2.1.5 Ok";
                    if (reply.StartsWith('2'))
                    {
                        recipients.Add(to);
                        rcptParams.Add(parameters);
                    }
                    await Reply(reply).ConfigureAwait(false);
                    Signal();
                    break;
                }
                case "DATA":
                {
                    if (mailFrom is null || recipients.Count == 0)
                    {
                        await Reply("554 5.5.1 no valid recipients").ConfigureAwait(false);
                        break;
                    }
                    await Reply("354 End data with <CR><LF>.<CR><LF>").ConfigureAwait(false);
                    var data = await reader.ReadDataAsync(ct).ConfigureAwait(false);
                    if (data is null)
                        return;
                    await FinishAsync(data, false).ConfigureAwait(false);
                    break;
                }
                case "BDAT":
                {
                    var parts = arg.Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    if (!Chunking || parts.Length == 0 || !long.TryParse(parts[0], out long size))
                    {
                        await Reply("501 5.5.4 bad BDAT").ConfigureAwait(false);
                        return; // the chunk cannot be skipped reliably
                    }
                    var chunk = await reader.ReadExactlyAsync((int)size, ct).ConfigureAwait(false);
                    if (chunk is null)
                        return;
                    bool last = parts.Length > 1 && parts[1].Equals("LAST", StringComparison.OrdinalIgnoreCase);
                    if (mailFrom is null || recipients.Count == 0)
                    {
                        await Reply("554 5.5.1 no valid recipients").ConfigureAwait(false);
                        break;
                    }
                    bdat.Write(chunk);
                    usedBdat = true;
                    if (!last)
                    {
                        await Reply($"250 2.0.0 {size} octets received").ConfigureAwait(false);
                        break;
                    }
                    await FinishAsync(bdat.ToArray(), true).ConfigureAwait(false);
                    break;
                }
                case "RSET":
                    ResetTransaction();
                    await Reply("250 2.0.0 Ok").ConfigureAwait(false);
                    break;
                case "NOOP":
                    await Reply("250 2.0.0 Ok").ConfigureAwait(false);
                    break;
                case "QUIT":
                    Interlocked.Increment(ref _quits);
                    Signal();
                    if (QuitDelay > TimeSpan.Zero)
                        await Task.Delay(QuitDelay, ct).ConfigureAwait(false);
                    session.End(); // before the 221: the client may connect again as soon as it has it
                    await Reply("221 2.0.0 Bye").ConfigureAwait(false);
                    return;
                default:
                    await Reply("502 5.5.2 command not recognized").ConfigureAwait(false);
                    break;
            }
        }

        async Task FinishAsync(byte[] data, bool viaBdat)
        {
            Interlocked.Increment(ref _dataAttempts);
            if (DataDelay > TimeSpan.Zero)
                await Task.Delay(DataDelay, ct).ConfigureAwait(false);
            PeerMessage message;
            lock (_lock)
                message = new PeerMessage(_messages.Count + 1, number, mailFrom!, mailParams, recipients.ToArray(), rcptParams.ToArray(), data, tls, viaBdat) { Helo = helo, Client = peerAddress };
            string reply = DataReply?.Invoke(message) ?? "250 2.0.0 Ok: queued";
            if (reply.StartsWith('2'))
            {
                lock (_lock)
                {
                    message = message with { Sequence = _messages.Count + 1 };
                    _messages.Add(message);
                }
            }
            ResetTransaction();
            _ = usedBdat;
            await Reply(reply).ConfigureAwait(false);
            Signal();
        }
    }

    private static bool TryPath(string arg, string prefix, out string address, out string parameters)
    {
        address = "";
        parameters = "";
        if (!arg.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
            return false;
        var rest = arg[prefix.Length..].TrimStart();
        if (!rest.StartsWith('<'))
            return false;
        int close = rest.IndexOf('>');
        if (close < 0)
            return false;
        address = rest[1..close];
        parameters = rest[(close + 1)..].Trim();
        return true;
    }

    private static string Shorten(string s)
    {
        s = s.Replace("\r", "\\r").Replace("\n", "\\n");
        return s.Length > 200 ? s[..200] + "..." : s;
    }

    private SslServerAuthenticationOptions ServerOptions() => ServerChain.Length == 0
        ? new SslServerAuthenticationOptions { ServerCertificate = ServerCertificate ?? Certificate.Value }
        : new SslServerAuthenticationOptions
        {
            ServerCertificateContext = SslStreamCertificateContext.Create(ServerCertificate ?? Certificate.Value,
                new X509Certificate2Collection(ServerChain), offline: true),
        };

    private static X509Certificate2 CreateCertificate()
    {
        using var key = RSA.Create(2048);
        var request = new CertificateRequest("CN=peer.test", key, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var san = new SubjectAlternativeNameBuilder();
        san.AddDnsName("peer.test");
        request.CertificateExtensions.Add(san.Build());
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        return X509CertificateLoader.LoadPkcs12(cert.Export(X509ContentType.Pfx), null);
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
            return;
        _stop.Cancel();
        _listener.Stop();
        Task[] all;
        lock (_lock)
        {
            foreach (var c in _clients)
            {
                try { c.Client.Shutdown(SocketShutdown.Both); } catch (Exception) { }
            }
            all = _connections.Append(_acceptLoop).ToArray();
        }
        await Task.WhenAny(Task.WhenAll(all), Task.Delay(TimeSpan.FromSeconds(10))).ConfigureAwait(false);
        _stop.Dispose();
    }

    /// <summary>Lines (for commands and DATA) and exact byte counts (for BDAT) from one stream.</summary>
    private sealed class PeerReader(Stream stream)
    {
        private readonly byte[] _buffer = new byte[64 * 1024];
        private int _start;
        private int _end;

        public bool HasBuffered => _end > _start;

        private async Task<bool> FillAsync(CancellationToken ct)
        {
            if (_start > 0)
            {
                Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                _end -= _start;
                _start = 0;
            }
            if (_end == _buffer.Length)
                throw new InvalidDataException("line too long");
            int n = await stream.ReadAsync(_buffer.AsMemory(_end), ct).ConfigureAwait(false);
            if (n == 0)
                return false;
            _end += n;
            return true;
        }

        /// <summary>A line with its CRLF, as bytes; null at the end of the stream.</summary>
        public async Task<byte[]?> ReadRawLineAsync(CancellationToken ct)
        {
            while (true)
            {
                int lf = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
                if (lf >= 0)
                {
                    var line = _buffer.AsSpan(_start, lf + 1 - _start).ToArray();
                    _start = lf + 1;
                    return line;
                }
                if (!await FillAsync(ct).ConfigureAwait(false))
                    return null;
            }
        }

        public async Task<string?> ReadLineAsync(CancellationToken ct)
        {
            var raw = await ReadRawLineAsync(ct).ConfigureAwait(false);
            return raw is null ? null : Encoding.UTF8.GetString(raw).TrimEnd('\r', '\n');
        }

        /// <summary>DATA up to ".CRLF", dot-unstuffed.</summary>
        public async Task<byte[]?> ReadDataAsync(CancellationToken ct)
        {
            using var data = new MemoryStream();
            while (true)
            {
                var line = await ReadRawLineAsync(ct).ConfigureAwait(false);
                if (line is null)
                    return null;
                if (line.Length == 3 && line[0] == '.' && line[1] == '\r' && line[2] == '\n')
                    return data.ToArray();
                int skip = line.Length > 0 && line[0] == '.' ? 1 : 0;
                data.Write(line, skip, line.Length - skip);
            }
        }

        public async Task<byte[]?> ReadExactlyAsync(int count, CancellationToken ct)
        {
            var result = new byte[count];
            int have = 0;
            while (have < count)
            {
                if (_end == _start && !await FillAsync(ct).ConfigureAwait(false))
                    return null;
                int n = Math.Min(count - have, _end - _start);
                Buffer.BlockCopy(_buffer, _start, result, have, n);
                _start += n;
                have += n;
            }
            return result;
        }
    }
}

/// <summary>
/// Several peers on one port, each on its own loopback address, standing for different hosts
/// (the relay's remote port is one number for all MX hosts). The port is one that is free on
/// every address.
/// </summary>
public sealed class PeerGroup : IAsyncDisposable
{
    private readonly List<MxPeer> _peers = new();

    private PeerGroup(int port) => Port = port;

    public int Port { get; }

    public IReadOnlyList<MxPeer> Peers => _peers;

    public MxPeer this[int index] => _peers[index];

    /// <summary>Starts one peer per address (e.g. "127.0.0.2", "127.0.0.3"), all on one free port.</summary>
    public static PeerGroup Start(params string[] addresses)
    {
        for (int attempt = 0; ; attempt++)
        {
            int port = FreePort.Get();
            var group = new PeerGroup(port);
            try
            {
                foreach (var ip in addresses)
                    group._peers.Add(new MxPeer(ip, port, $"mx-{ip}"));
                return group;
            }
            catch (SocketException) when (attempt < 50)
            {
                group.DisposeAsync().AsTask().GetAwaiter().GetResult();
            }
        }
    }

    public string Describe() => string.Join("\n", _peers.Select(p => p.Describe()));

    public async ValueTask DisposeAsync()
    {
        foreach (var p in _peers)
            await p.DisposeAsync().ConfigureAwait(false);
    }
}
