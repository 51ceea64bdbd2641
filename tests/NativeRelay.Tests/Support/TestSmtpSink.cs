using System.Net;
using System.Net.Sockets;
using System.Text;

namespace NativeRelay.Tests.Support;

/// <summary>
/// An in-process SMTP server on a loopback address (127.0.0.1 unless told; all of 127/8 is local
/// on Linux) that records what it receives, from which client address, under which EHLO name and
/// when. Each test makes its own. It reads line by line, so pipelined commands are answered one
/// after another in order.
/// </summary>
public sealed class TestSmtpSink : IAsyncDisposable, IDisposable
{
    public const string SinkHostname = "sink.test";

    private readonly TcpListener _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _acceptLoop;
    private readonly object _lock = new();
    private readonly List<ReceivedMessage> _messages = new();
    private readonly List<string> _rcptAttempts = new();
    private readonly List<string> _events = new();
    private readonly List<Task> _connections = new();
    private TaskCompletionSource _changed = NewSignal();
    private readonly List<(DateTime At, string Peer)> _connectionsFrom = new();
    private int _connectionCount;
    private int _dataAttempts;
    private int _open;
    private int _maxOpen;
    private readonly Dictionary<string, int> _openByPeer = new();

    /// <summary>Starts a sink on 127.0.0.1 and the given port (0: any free port).</summary>
    public TestSmtpSink(int port = 0) : this(IPAddress.Loopback, port)
    {
    }

    /// <summary>Starts a sink on a loopback address (e.g. 127.0.0.10) and port (0: any free port).</summary>
    public TestSmtpSink(IPAddress address, int port)
    {
        _listener = new TcpListener(address, port);
        _listener.Start(512);
        Address = address;
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _acceptLoop = Task.Run(AcceptLoopAsync);
    }

    public IPAddress Address { get; }

    public int Port { get; }

    /// <summary>"IP:port", the form the relay's --relay-to takes.</summary>
    public string Endpoint => $"{Address}:{Port}";

    /// <summary>
    /// The most connections open at once: a connection counts from its accept until the client
    /// ends it with QUIT (or it closes). Not until the socket's close is seen: a client that
    /// renews a connection gets 221, closes, and connects again, and this side may accept the new
    /// connection before it reads the old one's end.
    /// </summary>
    public int MaxConcurrentConnections => Volatile.Read(ref _maxOpen);

    /// <summary>Connections open now (from accept to close).</summary>
    public int OpenConnections => Volatile.Read(ref _open);

    /// <summary>Connections open now, by client address.</summary>
    public IReadOnlyDictionary<string, int> OpenConnectionsByPeer
    {
        get { lock (_lock) { return _openByPeer.Where(p => p.Value > 0).ToDictionary(p => p.Key, p => p.Value); } }
    }

    /// <summary>Starts counting <see cref="MaxConcurrentConnections"/> again from the connections open now.</summary>
    public void ResetMaxConcurrentConnections() => Volatile.Write(ref _maxOpen, Volatile.Read(ref _open));

    /// <summary>Waits this long before answering the end of DATA (a slow receiver keeps its connections busy).</summary>
    public TimeSpan DataDelay { get; set; } = TimeSpan.Zero;

    /// <summary>When each connection was accepted, and from which client address.</summary>
    public IReadOnlyList<(DateTime At, string Peer)> ConnectionsFrom
    {
        get { lock (_lock) { return _connectionsFrom.ToArray(); } }
    }

    /// <summary>Decides the reply line to RCPT TO by address (without brackets). Default: 250.</summary>
    public Func<string, string>? RcptReply { get; set; }

    /// <summary>Decides the reply line to RCPT TO by client address and recipient; null: <see cref="RcptReply"/> decides.</summary>
    public Func<string, string, string?>? RcptReplyFrom { get; set; }

    /// <summary>Decides the reply line to the end of DATA. Default: 250.</summary>
    public Func<DataAttempt, string>? DataReply { get; set; }

    /// <summary>Waits this long before sending the greeting.</summary>
    public TimeSpan GreetingDelay { get; set; } = TimeSpan.Zero;

    /// <summary>Never sends a greeting; holds the connection open until the sink is disposed.</summary>
    public bool HangBeforeGreeting { get; set; }

    public int ConnectionCount => Volatile.Read(ref _connectionCount);

    /// <summary>How many DATA phases reached their end (accepted or refused).</summary>
    public int DataAttemptCount => Volatile.Read(ref _dataAttempts);

    public IReadOnlyList<ReceivedMessage> Messages
    {
        get { lock (_lock) { return _messages.ToArray(); } }
    }

    /// <summary>How many times RCPT TO named this address (whatever the reply was).</summary>
    public int RcptAttempts(string address)
    {
        lock (_lock)
        {
            return _rcptAttempts.Count(a => string.Equals(a, address, StringComparison.OrdinalIgnoreCase));
        }
    }

    /// <summary>Waits for a received message matching the predicate; fails with a summary on timeout.</summary>
    public async Task<ReceivedMessage> WaitForMessageAsync(Func<ReceivedMessage, bool> predicate, TimeSpan timeout, string? what = null)
    {
        ReceivedMessage? found = null;
        await WaitUntilAsync(() => (found = Messages.FirstOrDefault(predicate)) is not null, timeout,
            what ?? "a matching message").ConfigureAwait(false);
        return found!;
    }

    /// <summary>Waits until at least <paramref name="count"/> messages were received.</summary>
    public Task WaitForCountAsync(int count, TimeSpan timeout) =>
        WaitUntilAsync(() => Messages.Count >= count, timeout, $"{count} messages");

    /// <summary>
    /// Waits until the condition over the sink's state holds; it is checked whenever something
    /// is received and at least every 250 ms. Throws with a description of the sink on timeout.
    /// </summary>
    public async Task WaitUntilAsync(Func<bool> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            Task changed;
            lock (_lock) { changed = _changed.Task; }
            if (condition())
            {
                return;
            }

            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero)
            {
                throw new TimeoutException($"The test sink did not get {what} within {timeout.TotalSeconds:0} s.\n{Describe()}");
            }

            var poll = left < TimeSpan.FromMilliseconds(250) ? left : TimeSpan.FromMilliseconds(250);
            await Task.WhenAny(changed, Task.Delay(poll)).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Watches the sink for a fixed window and fails as soon as the condition stops holding. Only for
    /// proving that something does NOT happen (no duplicate, no retry); there is nothing to poll for.
    /// </summary>
    public async Task AssertStaysTrueAsync(Func<bool> condition, TimeSpan window, string what)
    {
        var deadline = DateTime.UtcNow + window;
        while (true)
        {
            if (!condition())
            {
                throw new Xunit.Sdk.XunitException($"Expected {what} for {window.TotalSeconds:0} s, but it changed.\n{Describe()}");
            }

            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero)
            {
                return;
            }

            await Task.Delay(left < TimeSpan.FromMilliseconds(100) ? left : TimeSpan.FromMilliseconds(100)).ConfigureAwait(false);
        }
    }

    /// <summary>A summary for failure messages: counts, the messages, and the last protocol events.</summary>
    public string Describe()
    {
        lock (_lock)
        {
            var sb = new StringBuilder();
            sb.AppendLine($"--- test sink {Endpoint}: {_connectionCount} connections, {_dataAttempts} DATA attempts, {_messages.Count} messages ---");
            foreach (var m in _messages.TakeLast(40))
            {
                sb.AppendLine("  " + m);
            }

            sb.AppendLine("  last events:");
            foreach (var e in _events.TakeLast(60))
            {
                sb.AppendLine("    " + e);
            }

            return sb.ToString();
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
        {
            return;
        }

        _stop.Cancel();
        _listener.Stop();
        Task[] all;
        lock (_lock) { all = _connections.Append(_acceptLoop).ToArray(); }
        await Task.WhenAny(Task.WhenAll(all), Task.Delay(TimeSpan.FromSeconds(10))).ConfigureAwait(false);
        _stop.Dispose();
    }

    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    private void Record(string evt)
    {
        lock (_lock)
        {
            _events.Add(evt);
            if (_events.Count > 2000)
            {
                _events.RemoveRange(0, 1000);
            }
        }
    }

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
            string peer = (client.Client.RemoteEndPoint as IPEndPoint)?.Address.ToString() ?? "";
            lock (_lock) { _connectionsFrom.Add((DateTime.UtcNow, peer)); }
            var task = Task.Run(() => HandleConnectionAsync(client, number));
            lock (_lock) { _connections.Add(task); }
            Signal();
        }
    }

    private async Task HandleConnectionAsync(TcpClient client, int number)
    {
        using var _ = client;
        string peer = (client.Client.RemoteEndPoint as IPEndPoint)?.Address.ToString() ?? "";
        lock (_lock) { _openByPeer[peer] = _openByPeer.GetValueOrDefault(peer) + 1; }
        int open = Interlocked.Increment(ref _open);
        int max;
        while (open > (max = Volatile.Read(ref _maxOpen)) && Interlocked.CompareExchange(ref _maxOpen, open, max) != max)
        {
        }
        Record($"conn {number}: open from {client.Client.RemoteEndPoint}");
        // A session leaves the count once: at QUIT, before the 221 (the client may release its
        // slot and another client connect as soon as it has the 221, before this task runs
        // again), or when the session ends any other way.
        int ended = 0;
        void End()
        {
            if (Interlocked.Exchange(ref ended, 1) == 0)
            {
                Interlocked.Decrement(ref _open);
                lock (_lock) { _openByPeer[peer]--; }
            }
        }
        try
        {
            await RunSessionAsync(client.GetStream(), number, peer, End, _stop.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or SocketException or ObjectDisposedException or InvalidDataException)
        {
            Record($"conn {number}: ended: {ex.GetType().Name}: {ex.Message}");
        }
        finally
        {
            End();
        }

        Record($"conn {number}: closed");
        Signal();
    }

    private async Task RunSessionAsync(NetworkStream stream, int number, string peer, Action quit, CancellationToken ct)
    {
        // No session may outlive a broken test for long.
        using var sessionCts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        sessionCts.CancelAfter(TimeSpan.FromMinutes(5));
        ct = sessionCts.Token;

        async Task Reply(string text)
        {
            Record($"conn {number}: S: {Shorten(text)}");
            var bytes = Encoding.ASCII.GetBytes(text.EndsWith("\r\n", StringComparison.Ordinal) ? text : text + "\r\n");
            await stream.WriteAsync(bytes, ct).ConfigureAwait(false);
        }

        if (HangBeforeGreeting)
        {
            await Task.Delay(Timeout.Infinite, ct).ConfigureAwait(false);
        }

        if (GreetingDelay > TimeSpan.Zero)
        {
            await Task.Delay(GreetingDelay, ct).ConfigureAwait(false);
        }

        await Reply($"220 {SinkHostname} ESMTP TestSmtpSink").ConfigureAwait(false);

        var reader = new SmtpLineReader(stream);
        string helo = "";
        string? mailFrom = null;
        var recipients = new List<string>();

        while (true)
        {
            var raw = await reader.ReadLineAsync(ct).ConfigureAwait(false);
            if (raw is null)
            {
                return;
            }

            string line = Encoding.Latin1.GetString(raw).TrimEnd('\r', '\n');
            Record($"conn {number}: C: {Shorten(line)}");
            string verb = (line.Length >= 4 ? line[..4] : line).ToUpperInvariant();
            string arg = line.Length > 4 ? line[4..].Trim() : "";

            switch (verb)
            {
                case "EHLO":
                    helo = arg;
                    mailFrom = null;
                    recipients.Clear();
                    await Reply($"250-{SinkHostname} greets {arg}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 104857600").ConfigureAwait(false);
                    break;
                case "HELO":
                    helo = arg;
                    mailFrom = null;
                    recipients.Clear();
                    await Reply($"250 {SinkHostname}").ConfigureAwait(false);
                    break;
                case "MAIL":
                    if (mailFrom is not null)
                    {
                        await Reply("503 5.5.1 Error: nested MAIL command").ConfigureAwait(false);
                        break;
                    }

                    if (!TryPath(arg, "FROM:", out var from))
                    {
                        await Reply("501 5.5.4 Syntax: MAIL FROM:<address>").ConfigureAwait(false);
                        break;
                    }

                    mailFrom = from;
                    recipients.Clear();
                    await Reply("250 2.1.0 Ok").ConfigureAwait(false);
                    break;
                case "RCPT":
                    if (mailFrom is null)
                    {
                        await Reply("503 5.5.1 Error: need MAIL command").ConfigureAwait(false);
                        break;
                    }

                    if (!TryPath(arg, "TO:", out var to))
                    {
                        await Reply("501 5.5.4 Syntax: RCPT TO:<address>").ConfigureAwait(false);
                        break;
                    }

                    lock (_lock) { _rcptAttempts.Add(to); }
                    string rcptReply = RcptReply?.Invoke(to) ?? "250 2.1.5 Ok";
                    if (RcptReplyFrom?.Invoke(peer, to) is { } fromPeer)
                        rcptReply = fromPeer;
                    if (rcptReply.StartsWith('2'))
                    {
                        recipients.Add(to);
                    }

                    await Reply(rcptReply).ConfigureAwait(false);
                    Signal();
                    break;
                case "DATA":
                    if (mailFrom is null || recipients.Count == 0)
                    {
                        await Reply("554 5.5.1 Error: no valid recipients").ConfigureAwait(false);
                        break;
                    }

                    await Reply("354 End data with <CR><LF>.<CR><LF>").ConfigureAwait(false);
                    var data = await ReadDataAsync(reader, ct).ConfigureAwait(false);
                    if (data is null)
                    {
                        Record($"conn {number}: connection closed inside DATA");
                        return;
                    }

                    if (DataDelay > TimeSpan.Zero)
                    {
                        await Task.Delay(DataDelay, ct).ConfigureAwait(false);
                    }

                    int attemptNumber = Interlocked.Increment(ref _dataAttempts);
                    var attempt = new DataAttempt(attemptNumber, mailFrom, recipients.ToArray(), data) { PeerAddress = peer, HeloName = helo };
                    string dataReply = DataReply?.Invoke(attempt) ?? "250 2.0.0 Ok: queued";
                    if (dataReply.StartsWith('2'))
                    {
                        lock (_lock)
                        {
                            _messages.Add(new ReceivedMessage(_messages.Count + 1, number, helo, mailFrom, recipients.ToArray(), data)
                            {
                                PeerAddress = peer,
                                ReceivedAt = DateTime.UtcNow,
                            });
                        }
                    }

                    mailFrom = null;
                    recipients.Clear();
                    await Reply(dataReply).ConfigureAwait(false);
                    Signal();
                    break;
                case "RSET":
                    mailFrom = null;
                    recipients.Clear();
                    await Reply("250 2.0.0 Ok").ConfigureAwait(false);
                    break;
                case "NOOP":
                    await Reply("250 2.0.0 Ok").ConfigureAwait(false);
                    break;
                case "QUIT":
                    quit();
                    await Reply("221 2.0.0 Bye").ConfigureAwait(false);
                    return;
                default:
                    await Reply("502 5.5.2 Error: command not recognized").ConfigureAwait(false);
                    break;
            }
        }
    }

    /// <summary>Reads DATA lines up to ".CRLF", removing dot-stuffing. Null if the peer went away.</summary>
    private static async Task<byte[]?> ReadDataAsync(SmtpLineReader reader, CancellationToken ct)
    {
        using var data = new MemoryStream();
        while (true)
        {
            var line = await reader.ReadLineAsync(ct).ConfigureAwait(false);
            if (line is null)
            {
                return null;
            }

            if (line.Length == 3 && line[0] == '.' && line[1] == '\r' && line[2] == '\n')
            {
                return data.ToArray();
            }

            int skip = line.Length > 0 && line[0] == '.' ? 1 : 0;
            data.Write(line, skip, line.Length - skip);
        }
    }

    /// <summary>Parses "FROM:&lt;addr&gt; params" (or "TO:..."); the address without brackets.</summary>
    private static bool TryPath(string arg, string prefix, out string address)
    {
        address = "";
        if (!arg.StartsWith(prefix, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        string rest = arg[prefix.Length..].TrimStart();
        int close = rest.IndexOf('>');
        if (!rest.StartsWith('<') || close < 0)
        {
            return false;
        }

        address = rest[1..close];
        return true;
    }

    private static string Shorten(string s)
    {
        s = s.Replace("\r", "\\r").Replace("\n", "\\n");
        return s.Length <= 200 ? s : s[..200] + "...";
    }
}
