using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text;
using System.Text.Json;
using NativeRelay.Net;
using NativeRelay.Telemetry;

namespace NativeRelay.Tools;

/// <summary>
/// The SMTP sink behind <c>nativerelay sink</c> and <c>nativerelay bench</c>: accepts connections
/// on the project's own <see cref="SocketListener"/>/<see cref="SocketConnection"/> transport, runs
/// a lean <see cref="SinkSession"/> per connection, and counts what arrives. Every reply is a
/// byte array rendered once here, so a session writes replies by copying bytes.
/// </summary>
public sealed class SmtpSink : IConnectionHandler, IAsyncDisposable
{
    private readonly SinkOptions _options;
    private readonly Log _log;
    private readonly CancellationTokenSource _stopping = new();
    private readonly TaskCompletionSource _exitAfter = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly object _envelopeLock = new();
    private readonly long _createdTimestamp = Stopwatch.GetTimestamp();
    private SocketListener? _listener;
    private StreamWriter? _envelopes;
    private string _filePrefix = "";

    private long _messages;
    private long _accepted;
    private long _bytes;
    private long _recipients;
    private long _recipientsRefused;
    private long _connections;
    private long _activeConnections;
    private long _bareLineEndings;
    private long _saved;
    private long _firstDataTimestamp;
    private long _lastMessageTimestamp;

    public SmtpSink(SinkOptions options, Log? log = null)
    {
        _options = options;
        _log = log ?? Log.Null;
        string host = options.Hostname;
        Greeting = Encoding.ASCII.GetBytes($"220 {host} ESMTP NativeRelay sink\r\n");
        var ehlo = new StringBuilder($"250-{host}\r\n");
        if (options.Pipelining)
            ehlo.Append("250-PIPELINING\r\n");
        ehlo.Append("250-SIZE\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n");
        string last = options.Chunking ? "250-DSN\r\n250 CHUNKING\r\n" : "250 DSN\r\n";
        EhloReplyInTls = Encoding.ASCII.GetBytes(ehlo + last);
        if (options.TlsCertificate is not null && options.TlsKey is not null)
        {
            // Loaded once: every STARTTLS of every connection shares the store (a TLS-speaking next hop for perf runs).
            Certificates = NativeRelay.Net.TlsCertificateStore.Load(new NativeRelay.Net.TlsSettings(options.TlsCertificate, options.TlsKey));
            ehlo.Append("250-STARTTLS\r\n");
        }
        EhloReply = Encoding.ASCII.GetBytes(ehlo + last);
        HeloReply = Encoding.ASCII.GetBytes($"250 {host}\r\n");
        RcptReply = options.RcptReplyCode == 250
            ? "250 2.1.5 Ok\r\n"u8.ToArray()
            : Encoding.ASCII.GetBytes($"{options.RcptReplyCode} {Enhanced(options.RcptReplyCode)} sink: recipient refused as asked (--rcpt-reply)\r\n");
        DataReply = options.ReplyCode == 250
            ? "250 2.0.0 Ok: queued\r\n"u8.ToArray()
            : Encoding.ASCII.GetBytes(options.ReplyCode < 300
                ? $"{options.ReplyCode} 2.0.0 Ok: queued\r\n"
                : $"{options.ReplyCode} {Enhanced(options.ReplyCode)} sink: message refused as asked (--reply-code)\r\n");
        TooManyConnectionsReply = "421 4.7.0 sink: too many connections\r\n"u8.ToArray();
    }

    internal SinkOptions Options => _options;
    internal byte[] Greeting { get; }
    internal byte[] EhloReply { get; }
    /// <summary>The EHLO reply after STARTTLS (no STARTTLS in it).</summary>
    internal byte[] EhloReplyInTls { get; }
    /// <summary>The certificate for STARTTLS (--tls-cert/--tls-key), or null.</summary>
    internal NativeRelay.Net.TlsCertificateStore? Certificates { get; }
    internal byte[] HeloReply { get; }
    internal byte[] RcptReply { get; }
    internal byte[] DataReply { get; }
    internal bool RcptAccepted => _options.RcptReplyCode < 300;
    private static readonly byte[] s_rcptFailed = "550 5.1.1 sink: no such user (--rcpt-fail-share)\r\n"u8.ToArray();
    private static readonly byte[] s_rcptDeferred = "451 4.2.0 sink: try again later (--rcpt-defer-share)\r\n"u8.ToArray();

    /// <summary>The reply to one RCPT: <see cref="RcptReply"/>, or, with the shares set, a random refusal.</summary>
    internal byte[] ChooseRcptReply(out bool accepted)
    {
        if (_options.RcptFailShare > 0 || _options.RcptDeferShare > 0)
        {
            double draw = Random.Shared.NextDouble();
            if (draw < _options.RcptFailShare)
            {
                accepted = false;
                return s_rcptFailed;
            }
            if (draw < _options.RcptFailShare + _options.RcptDeferShare)
            {
                accepted = false;
                return s_rcptDeferred;
            }
        }
        accepted = RcptAccepted;
        return RcptReply;
    }
    internal bool DataAccepted => _options.ReplyCode < 300;
    internal Log Log => _log;

    public ReadOnlyMemory<byte> TooManyConnectionsReply { get; }

    /// <summary>Where the sink listens (after <see cref="Start"/>; the real port when 0 was asked).</summary>
    public IPEndPoint EndPoint => _listener?.EndPoint ?? throw new InvalidOperationException("not started");

    /// <summary>Messages whose data ended (whatever the reply).</summary>
    public long Messages => Volatile.Read(ref _messages);
    public long Accepted => Volatile.Read(ref _accepted);
    public long Bytes => Volatile.Read(ref _bytes);
    public long Connections => Volatile.Read(ref _connections);
    public long ActiveConnections => Volatile.Read(ref _activeConnections);

    /// <summary>The <see cref="Stopwatch"/> timestamp of the last message's end; 0 before any.</summary>
    public long LastMessageTimestamp => Volatile.Read(ref _lastMessageTimestamp);

    /// <summary>Completes when --exit-after messages have been received.</summary>
    public Task ExitAfterReached => _exitAfter.Task;

    /// <summary>Binds and starts accepting. Throws <see cref="Config.ConfigException"/> when the address is taken.</summary>
    public void Start()
    {
        if (_options.SaveDirectory is { } dir)
        {
            Directory.CreateDirectory(dir);
            _filePrefix = DateTime.UtcNow.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture);
            _envelopes = new StreamWriter(new FileStream(Path.Combine(dir, "envelopes.log"), FileMode.Append, FileAccess.Write, FileShare.Read));
        }
        try
        {
            _listener = new SocketListener(_options.Listen, this, new ConnectionLimiter(100_000, 100_000), _log);
        }
        catch (System.Net.Sockets.SocketException e)
        {
            throw new Config.ConfigException($"sink: cannot listen on {_options.Listen}: {e.SocketErrorCode}");
        }
        _listener.Start(_stopping.Token);
    }

    public async Task HandleAsync(SocketConnection connection, ListenerInfo listener, CancellationToken stopping)
    {
        Interlocked.Increment(ref _connections);
        Interlocked.Increment(ref _activeConnections);
        try
        {
            var session = new SinkSession(this, connection);
            await session.RunAsync(stopping);
            await session.DisposeTlsAsync();
        }
        finally
        {
            Interlocked.Decrement(ref _activeConnections);
        }
    }

    internal void CountRecipient(bool accepted)
    {
        if (accepted)
            Interlocked.Increment(ref _recipients);
        else
            Interlocked.Increment(ref _recipientsRefused);
    }

    internal void DataStarted()
    {
        if (Volatile.Read(ref _firstDataTimestamp) == 0)
            Interlocked.CompareExchange(ref _firstDataTimestamp, Stopwatch.GetTimestamp(), 0);
    }

    internal void CountBareLineEnding() => Interlocked.Increment(ref _bareLineEndings);

    /// <summary>A message's data ended; returns its number (1-based).</summary>
    internal long CountMessage(long bytes, bool accepted)
    {
        if (accepted)
            Interlocked.Increment(ref _accepted);
        Interlocked.Add(ref _bytes, bytes);
        Volatile.Write(ref _lastMessageTimestamp, Stopwatch.GetTimestamp());
        long n = Interlocked.Increment(ref _messages);
        if (n == _options.ExitAfter)
            _exitAfter.TrySetResult();
        return n;
    }

    /// <summary>Writes one received message to the --save directory and its envelope to envelopes.log.</summary>
    internal async ValueTask SaveAsync(ReadOnlyMemory<byte> message, string sender, IReadOnlyList<string> recipients)
    {
        long n = Interlocked.Increment(ref _saved);
        string name = $"{_filePrefix}-{n:D8}.eml";
        string path = Path.Combine(_options.SaveDirectory!, name);
        try
        {
            await using (var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.None, 4096, useAsync: true))
                await file.WriteAsync(message);
            lock (_envelopeLock)
            {
                _envelopes!.Write(name);
                _envelopes.Write(" from=<");
                _envelopes.Write(sender);
                _envelopes.Write('>');
                foreach (var r in recipients)
                {
                    _envelopes.Write(" to=<");
                    _envelopes.Write(r);
                    _envelopes.Write('>');
                }
                _envelopes.Write('\n');
                _envelopes.Flush();
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            _log.Error($"sink: cannot save {path}: {ExceptionText.Of(e)}");
        }
    }

    /// <summary>Waits (polling every millisecond or so) until at least <paramref name="count"/> messages arrived.</summary>
    public async Task<bool> WaitForMessagesAsync(long count, CancellationToken cancel)
    {
        while (Messages < count)
        {
            try
            {
                await Task.Delay(1, cancel);
            }
            catch (OperationCanceledException)
            {
                return false;
            }
        }
        return true;
    }

    /// <summary>Stops accepting, asks idle sessions to leave (421), and waits for the rest up to the deadline.</summary>
    public async Task StopAsync(TimeSpan deadline)
    {
        if (_listener is null)
            return;
        _listener.StopAccepting();
        _stopping.Cancel();
        await _listener.DrainAsync(deadline);
        lock (_envelopeLock)
        {
            _envelopes?.Dispose();
            _envelopes = null;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(TimeSpan.FromSeconds(2));
        if (_listener is not null)
            await _listener.DisposeAsync();
        _stopping.Dispose();
    }

    /// <summary>The counts so far, and rates over the time from the first data to the last message.</summary>
    public SinkSummary Summarize()
    {
        long first = Volatile.Read(ref _firstDataTimestamp);
        long last = Volatile.Read(ref _lastMessageTimestamp);
        double active = first == 0 || last <= first ? 0 : LatencyHistogram.ElapsedMicroseconds(first, last) / 1e6;
        return new SinkSummary
        {
            Listen = _listener?.EndPoint.ToString() ?? _options.Listen.ToString(),
            Messages = Messages,
            Accepted = Accepted,
            Bytes = Bytes,
            Recipients = Volatile.Read(ref _recipients),
            RecipientsRefused = Volatile.Read(ref _recipientsRefused),
            Connections = Connections,
            BareLineEndings = Volatile.Read(ref _bareLineEndings),
            ActiveSeconds = active,
            UptimeSeconds = LatencyHistogram.ElapsedMicroseconds(_createdTimestamp, Stopwatch.GetTimestamp()) / 1e6,
        };
    }

    private static string Enhanced(int code) => (code / 100) switch
    {
        2 => "2.0.0",
        4 => "4.3.0",
        _ => "5.7.1",
    };
}

/// <summary>What a sink received.</summary>
public sealed class SinkSummary
{
    public required string Listen { get; init; }
    public required long Messages { get; init; }
    public required long Accepted { get; init; }
    public long Refused => Messages - Accepted;
    public required long Bytes { get; init; }
    public required long Recipients { get; init; }
    public required long RecipientsRefused { get; init; }
    public required long Connections { get; init; }
    public required long BareLineEndings { get; init; }
    /// <summary>From the first DATA/BDAT to the last message's end.</summary>
    public required double ActiveSeconds { get; init; }
    public required double UptimeSeconds { get; init; }
    public double MessagesPerSecond => ActiveSeconds > 0 ? Messages / ActiveSeconds : 0;
    public double MegabytesPerSecond => ActiveSeconds > 0 ? Bytes / ActiveSeconds / 1e6 : 0;

    public void WriteText(TextWriter w)
    {
        var c = CultureInfo.InvariantCulture;
        w.WriteLine(string.Create(c, $"sink: {Messages} message(s) on {Listen}: {Accepted} accepted, {Refused} refused; {Recipients} recipient(s) accepted, {RecipientsRefused} refused"));
        w.WriteLine(string.Create(c, $"  {Bytes / 1e6:0.00} MB over {Connections} connection(s); first data to last message {ActiveSeconds:0.000} s: {MessagesPerSecond:0} msg/s, {MegabytesPerSecond:0.00} MB/s"));
        if (BareLineEndings > 0)
            w.WriteLine(string.Create(c, $"  {BareLineEndings} message(s) refused for a bare CR or LF"));
    }

    public void WriteJson(Stream stream)
    {
        using var j = new Utf8JsonWriter(stream);
        j.WriteStartObject();
        j.WriteString("tool", "sink");
        j.WriteString("listen", Listen);
        j.WriteNumber("messages", Messages);
        j.WriteNumber("accepted", Accepted);
        j.WriteNumber("refused", Refused);
        j.WriteNumber("recipients", Recipients);
        j.WriteNumber("recipients_refused", RecipientsRefused);
        j.WriteNumber("bytes", Bytes);
        j.WriteNumber("connections", Connections);
        j.WriteNumber("bare_line_endings", BareLineEndings);
        j.WriteNumber("active_s", Math.Round(ActiveSeconds, 6));
        j.WriteNumber("msgs_per_s", Math.Round(MessagesPerSecond, 1));
        j.WriteNumber("mb_per_s", Math.Round(MegabytesPerSecond, 3));
        j.WriteNumber("uptime_s", Math.Round(UptimeSeconds, 3));
        j.WriteEndObject();
        j.Flush();
        stream.Write("\n"u8);
        stream.Flush();
    }
}
