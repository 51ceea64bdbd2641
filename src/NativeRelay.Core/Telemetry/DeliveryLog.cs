using System.Buffers;
using System.Text.Encodings.Web;
using System.Text.Json;
using NativeRelay.Spool;

namespace NativeRelay.Telemetry;

/// <summary>One event of the delivery log. Strings may be null (the field is then left out).</summary>
public readonly struct DeliveryEvent
{
    /// <summary>delivered, deferred, failed, expired, delayed, relayed, bounce, deleted, held, released, flushed, returned.</summary>
    public required string Event { get; init; }
    public required ulong Id { get; init; }
    /// <summary>The recipient (UTF-8 bytes as in the envelope), or empty for a message-level event.</summary>
    public ReadOnlyMemory<byte> Recipient { get; init; }
    public int Attempt { get; init; }
    /// <summary>The next hop's host name (MX host, route host or address literal).</summary>
    public string? Host { get; init; }
    /// <summary>The next hop's address and port.</summary>
    public string? Ip { get; init; }
    /// <summary>The SMTP reply (from the next hop, or made up locally for DNS and connection failures).</summary>
    public string? Reply { get; init; }
    /// <summary>The bounce class of a failed or deferred reply (invalid-recipient, mailbox-full, ...; Traffic/Bounces).</summary>
    public string? Class { get; init; }
    /// <summary>"TLSv1.3 TLS_AES_256_GCM_SHA384" and whether the certificate verified, when TLS was used.</summary>
    public string? Tls { get; init; }
    /// <summary>The TLS policy applied (none, opportunistic, required, verify, dane, mta-sts, mta-sts-testing).</summary>
    public string? TlsPolicy { get; init; }
    /// <summary>What was verified: none (plain text), encrypted, ca, dane, mta-sts.</summary>
    public string? TlsVerified { get; init; }
    /// <summary>The RFC 8460 result type when a TLS policy refused the next hop.</summary>
    public string? TlsFailure { get; init; }
    /// <summary>The egress source the attempt left from (traffic control; "default" for the system's address).</summary>
    public string? Source { get; init; }
    /// <summary>The site (MX rollup or the operator's label) the attempt went to.</summary>
    public string? Site { get; init; }
    /// <summary>The queue id of the DSN this event produced, if any.</summary>
    public ulong DsnId { get; init; }
    /// <summary>When the next attempt is due (deferred), as Unix milliseconds; 0: not given.</summary>
    public long NextAttemptUnixMs { get; init; }
}

/// <summary>
/// The delivery log: one JSON object per line for every attempt and outcome (time, queue id,
/// recipient, next-hop host and IP, SMTP reply, outcome, attempt number), so "what happened to
/// this message" is one grep away: <c>grep '"id":"0191F0C2A3B40001"' delivery.log</c>.
/// Lines are written with <see cref="Utf8JsonWriter"/> (no reflection) into a buffer that a timer
/// appends to the file every 100 ms, so a delivery never waits for the disk; the file is opened
/// for appending and shared, so it can be read while the relay runs and rotated by copy-truncate.
/// </summary>
public sealed class DeliveryLog : IDisposable
{
    private static readonly TimeSpan FlushInterval = TimeSpan.FromMilliseconds(100);
    private static readonly JsonWriterOptions WriterOptions = new()
    {
        // Addresses and replies stay readable UTF-8; JSON's own escaping (quotes, control characters) still applies.
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        SkipValidation = true,
    };

    private readonly Stream? _file;
    private ArrayBufferWriter<byte> _buffer = new(64 * 1024);
    private ArrayBufferWriter<byte> _spare = new(64 * 1024);
    private readonly object _flushGate = new();
    private readonly Utf8JsonWriter _writer;
    private readonly Timer? _timer;
    private readonly object _gate = new();
    private bool _disposed;

    private DeliveryLog(Stream? file)
    {
        _file = file;
        _writer = new Utf8JsonWriter(_buffer, WriterOptions);
        if (file is not null)
            _timer = new Timer(static s => ((DeliveryLog)s!).Flush(), this, FlushInterval, FlushInterval);
    }

    /// <summary>A log that writes nothing.</summary>
    public static DeliveryLog Null { get; } = new(null);

    public bool IsEnabled => _file is not null;

    /// <summary>Opens the log: a path, "-" for standard output, null for none.</summary>
    public static DeliveryLog Open(string? path)
    {
        if (path is null)
            return new DeliveryLog(null);
        if (path == "-")
            return new DeliveryLog(Console.OpenStandardOutput());
        var directory = Path.GetDirectoryName(path);
        if (!string.IsNullOrEmpty(directory))
            Directory.CreateDirectory(directory);
        var file = new FileStream(path, FileMode.Append, FileAccess.Write, FileShare.ReadWrite | FileShare.Delete, 4096);
        return new DeliveryLog(file);
    }

    public void Write(in DeliveryEvent e)
    {
        if (_file is null)
            return;
        Span<byte> id = stackalloc byte[16];
        Span<byte> time = stackalloc byte[32];
        var now = DateTime.UtcNow;
        now.TryFormat(time, out int timeLength, "yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture);
        lock (_gate)
        {
            if (_disposed)
                return;
            var w = _writer;
            w.WriteStartObject();
            w.WriteString("time"u8, time[..timeLength]);
            w.WriteString("event"u8, e.Event);
            QueueIdGenerator.Format(e.Id, id);
            w.WriteString("id"u8, id);
            if (!e.Recipient.IsEmpty)
                w.WriteString("rcpt"u8, e.Recipient.Span);
            if (e.Attempt > 0)
                w.WriteNumber("attempt"u8, e.Attempt);
            if (e.Host is not null)
                w.WriteString("host"u8, e.Host);
            if (e.Ip is not null)
                w.WriteString("ip"u8, e.Ip);
            if (e.Reply is not null)
                w.WriteString("reply"u8, e.Reply);
            if (e.Class is not null)
                w.WriteString("class"u8, e.Class);
            if (e.Tls is not null)
                w.WriteString("tls"u8, e.Tls);
            if (e.TlsPolicy is not null)
                w.WriteString("tlsPolicy"u8, e.TlsPolicy);
            if (e.TlsVerified is not null)
                w.WriteString("tlsVerified"u8, e.TlsVerified);
            if (e.TlsFailure is not null)
                w.WriteString("tlsFailure"u8, e.TlsFailure);
            if (e.Source is not null)
                w.WriteString("source"u8, e.Source);
            if (e.Site is not null)
                w.WriteString("site"u8, e.Site);
            if (e.DsnId != 0)
            {
                QueueIdGenerator.Format(e.DsnId, id);
                w.WriteString("dsn"u8, id);
            }
            if (e.NextAttemptUnixMs > 0)
            {
                DateTimeOffset.FromUnixTimeMilliseconds(e.NextAttemptUnixMs).UtcDateTime
                    .TryFormat(time, out timeLength, "yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture);
                w.WriteString("next"u8, time[..timeLength]);
            }
            w.WriteEndObject();
            w.Flush();
            w.Reset();
            _buffer.GetSpan(1)[0] = (byte)'\n';
            _buffer.Advance(1);
        }
    }

    /// <summary>Appends what was logged so far to the file. Writers only wait for a buffer swap, never for the disk.</summary>
    public void Flush()
    {
        if (_file is null)
            return;
        lock (_flushGate)
        {
            ArrayBufferWriter<byte> full;
            lock (_gate)
            {
                if (_buffer.WrittenCount == 0 || _disposed)
                    return;
                full = _buffer;
                _buffer = _spare;
                _spare = full;
                _writer.Reset(_buffer);
            }
            try
            {
                _file.Write(full.WrittenSpan);
                _file.Flush();
            }
            catch (IOException)
            {
                // The disk or the pipe went away: delivery goes on without its log.
            }
            full.Clear();
        }
    }

    public void Dispose()
    {
        _timer?.Dispose();
        Flush();
        lock (_flushGate)
        {
            lock (_gate)
            {
                _disposed = true;
                _writer.Dispose();
            }
            if (_file is FileStream)
                _file.Dispose();
        }
    }
}
