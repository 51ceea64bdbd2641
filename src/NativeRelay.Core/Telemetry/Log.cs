using System.Buffers;
using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Unicode;

namespace NativeRelay.Telemetry;

public enum LogLevel { Debug, Info, Warn, Error }

/// <summary>Text: <c>TIME LEVEL message</c>. Json: <c>{"time":..,"level":..,"message":..}</c>, one object per line.</summary>
public enum LogFormat { Text, Json }

/// <summary>
/// One line per event on standard output, written by a background flusher so a burst of log
/// lines never stalls a session on a slow terminal or pipe. Lines are buffered for at most
/// <see cref="FlushInterval"/>; <see cref="Flush"/> is called at shutdown. The level and the
/// format can change while it runs (<see cref="Configure"/>, on SIGHUP).
/// <para>
/// A line is UTF-8 from end to end: an interpolated message (<c>log.Info($"{id}: queued ...")</c>)
/// binds to <see cref="LogLine{TLevel}"/>, which formats its values straight into pooled bytes
/// and only if the level is enabled, and the line is copied into the pending buffer under a
/// short lock. Some lines are written per message (the "queued" line), so nothing on this path
/// allocates. If the output cannot keep up, the pending buffer stops at
/// <see cref="MaxPendingBytes"/>: further lines are dropped and counted, and the count is
/// reported on the next line that gets out, rather than the relay growing without bound.
/// </para>
/// </summary>
public sealed class Log : IDisposable
{
    private static readonly TimeSpan FlushInterval = TimeSpan.FromMilliseconds(100);
    internal const int MaxPendingBytes = 8 * 1024 * 1024;
    private const string TimeFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";

    private readonly Stream? _stream;     // the usual output: bytes as they are
    private readonly TextWriter? _writer; // tests and tools that collect text
    private readonly object _gate = new();      // the pending buffer
    private readonly object _flushGate = new(); // one flush at a time, in order
    private byte[] _pending = new byte[16 * 1024];
    private byte[] _spare = new byte[16 * 1024];
    private int _pendingLength;
    private long _dropped; // since the last flush
    private readonly ArrayBufferWriter<byte> _json = new(256);
    private readonly Utf8JsonWriter _jsonWriter;
    private readonly Timer _timer;
    private volatile LogLevel _minimum;
    private volatile LogFormat _format;

    /// <summary>A log onto a byte stream (standard output).</summary>
    public Log(Stream output, LogLevel minimum = LogLevel.Info, LogFormat format = LogFormat.Text)
        : this(output, null, minimum, format)
    {
    }

    /// <summary>A log onto a text writer (tests, the tools' diagnostics).</summary>
    public Log(TextWriter output, LogLevel minimum = LogLevel.Info, LogFormat format = LogFormat.Text)
        : this(null, output, minimum, format)
    {
    }

    private Log(Stream? stream, TextWriter? writer, LogLevel minimum, LogFormat format)
    {
        _stream = stream;
        _writer = writer;
        _minimum = minimum;
        _format = format;
        _jsonWriter = new Utf8JsonWriter(_json);
        _timer = new Timer(static s => ((Log)s!).FlushIfIdle(), this, FlushInterval, FlushInterval);
    }

    /// <summary>A log that writes nothing (tests, benchmarks).</summary>
    public static Log Null { get; } = new(TextWriter.Null, LogLevel.Error);

    public bool IsEnabled(LogLevel level) => level >= _minimum;

    public LogLevel Level => _minimum;
    public LogFormat Format => _format;

    /// <summary>Changes the level and format for the lines written from now on.</summary>
    public void Configure(LogLevel minimum, LogFormat format)
    {
        _minimum = minimum;
        _format = format;
    }

    public static string LevelName(LogLevel level) =>
        level switch { LogLevel.Debug => "debug", LogLevel.Info => "info", LogLevel.Warn => "warn", _ => "error" };

    public void Debug(string message) => Write(LogLevel.Debug, message);
    public void Info(string message) => Write(LogLevel.Info, message);
    public void Warn(string message) => Write(LogLevel.Warn, message);
    public void Error(string message) => Write(LogLevel.Error, message);

    // An interpolated message binds to these rather than to the string overloads, and is only
    // formatted when its level is enabled.
    public void Debug([InterpolatedStringHandlerArgument("")] ref LogLine<LogLevels.Debug> line) => line.Finish();
    public void Info([InterpolatedStringHandlerArgument("")] ref LogLine<LogLevels.Info> line) => line.Finish();
    public void Warn([InterpolatedStringHandlerArgument("")] ref LogLine<LogLevels.Warn> line) => line.Finish();
    public void Error([InterpolatedStringHandlerArgument("")] ref LogLine<LogLevels.Error> line) => line.Finish();

    /// <summary>A line whose level is decided at run time.</summary>
    public void Write(LogLevel level, [InterpolatedStringHandlerArgument("", "level")] ref LogLine<LogLevels.Given> line) => line.Finish();

    public void Write(LogLevel level, string? message)
    {
        if (!IsEnabled(level))
            return;
        message ??= "";
        byte[] bytes = ArrayPool<byte>.Shared.Rent(Encoding.UTF8.GetMaxByteCount(message.Length));
        int length = Encoding.UTF8.GetBytes(message, bytes);
        Append(level, bytes.AsSpan(0, length));
        ArrayPool<byte>.Shared.Return(bytes);
    }

    /// <summary>Adds one line (the message as UTF-8) to what the next flush writes.</summary>
    internal void Append(LogLevel level, ReadOnlySpan<byte> message)
    {
        Span<byte> time = stackalloc byte[32];
        time = Now(time);
        lock (_gate)
            AppendLocked(time, level, message);
    }

    private static Span<byte> Now(Span<byte> destination)
    {
        DateTime.UtcNow.TryFormat(destination, out int length, TimeFormat, CultureInfo.InvariantCulture);
        return destination[..length];
    }

    // Under _gate.
    private void AppendLocked(ReadOnlySpan<byte> time, LogLevel level, ReadOnlySpan<byte> message)
    {
        if (_format == LogFormat.Json)
        {
            AppendJson(time, level, message);
            return;
        }
        ReadOnlySpan<byte> levelText = level switch
        {
            LogLevel.Debug => "debug"u8,
            LogLevel.Info => "info "u8,
            LogLevel.Warn => "warn "u8,
            _ => "error"u8,
        };
        var line = Reserve(time.Length + 1 + levelText.Length + 1 + message.Length + 1);
        if (line.IsEmpty)
            return;
        time.CopyTo(line);
        int at = time.Length;
        line[at++] = (byte)' ';
        levelText.CopyTo(line[at..]);
        at += levelText.Length;
        line[at++] = (byte)' ';
        message.CopyTo(line[at..]);
        line[^1] = (byte)'\n';
    }

    // Utf8JsonWriter escapes whatever a message carries (quotes, control characters, client input).
    private void AppendJson(ReadOnlySpan<byte> time, LogLevel level, ReadOnlySpan<byte> message)
    {
        _json.Clear();
        _jsonWriter.Reset(_json);
        _jsonWriter.WriteStartObject();
        _jsonWriter.WriteString("time"u8, time);
        _jsonWriter.WriteString("level"u8, LevelName(level));
        if (Utf8.IsValid(message))
            _jsonWriter.WriteString("message"u8, message);
        else
            _jsonWriter.WriteString("message"u8, Encoding.UTF8.GetString(message)); // invalid sequences become U+FFFD
        _jsonWriter.WriteEndObject();
        _jsonWriter.Flush();
        var line = Reserve(_json.WrittenCount + 1);
        if (line.IsEmpty)
            return;
        _json.WrittenSpan.CopyTo(line);
        line[^1] = (byte)'\n';
    }

    /// <summary>Room for one line at the end of the pending buffer; empty (and counted) when the output is too far behind.</summary>
    private Span<byte> Reserve(int length)
    {
        if (_pendingLength + length > _pending.Length)
        {
            if (_pendingLength + length > MaxPendingBytes)
            {
                _dropped++;
                return default;
            }
            int size = _pending.Length;
            while (size < _pendingLength + length)
                size *= 2;
            Array.Resize(ref _pending, Math.Min(size, MaxPendingBytes));
        }
        var span = _pending.AsSpan(_pendingLength, length);
        _pendingLength += length;
        return span;
    }

    /// <summary>Writes what is pending. Writers only wait for a buffer swap, never for the output.</summary>
    public void Flush()
    {
        lock (_flushGate)
            FlushLocked();
    }

    // The timer's flush: while a flush is stuck in a slow output, further ticks leave at once
    // instead of each parking a thread-pool thread behind it.
    private void FlushIfIdle()
    {
        if (!Monitor.TryEnter(_flushGate))
            return;
        try
        {
            FlushLocked();
        }
        finally
        {
            Monitor.Exit(_flushGate);
        }
    }

    // Under _flushGate.
    private void FlushLocked()
    {
        byte[] full;
        int length;
        lock (_gate)
        {
            if (_pendingLength == 0)
                return;
            full = _pending;
            length = _pendingLength;
            _pending = _spare;
            _pendingLength = 0;
            _spare = full;
            if (_dropped > 0)
            {
                // The dropped lines came after everything in this batch: the notice opens the
                // next one, whatever the level (the operator must learn that lines are missing).
                Span<byte> notice = stackalloc byte[96];
                Utf8.TryWrite(notice, CultureInfo.InvariantCulture, $"log: {_dropped} line(s) dropped, the output did not keep up", out int noticeLength);
                _dropped = 0;
                Span<byte> time = stackalloc byte[32];
                AppendLocked(Now(time), LogLevel.Warn, notice[..noticeLength]);
            }
        }
        try
        {
            WriteOut(full.AsSpan(0, length));
        }
        catch (IOException)
        {
            // stdout went away (closed pipe): the relay carries on without its log.
        }
        // A burst may have grown the buffer: keep the normal size as the spare.
        if (full.Length > 1024 * 1024)
            _spare = new byte[16 * 1024];
    }

    private void WriteOut(ReadOnlySpan<byte> bytes)
    {
        if (_stream is not null)
        {
            _stream.Write(bytes);
            _stream.Flush();
        }
        else
        {
            _writer!.Write(Encoding.UTF8.GetString(bytes));
            _writer.Flush();
        }
    }

    public void Dispose()
    {
        _timer.Dispose();
        Flush();
        Flush(); // a drop notice the first flush put in line
    }
}

/// <summary>Levels as types, so that each of <see cref="Log.Info(ref LogLine{LogLevels.Info})"/> and its siblings knows its level before it formats anything.</summary>
public interface ILogLevel
{
    static abstract LogLevel Value { get; }
}

public static class LogLevels
{
    public readonly struct Debug : ILogLevel { public static LogLevel Value => LogLevel.Debug; }
    public readonly struct Info : ILogLevel { public static LogLevel Value => LogLevel.Info; }
    public readonly struct Warn : ILogLevel { public static LogLevel Value => LogLevel.Warn; }
    public readonly struct Error : ILogLevel { public static LogLevel Value => LogLevel.Error; }
    /// <summary>The level comes as an argument (<see cref="Log.Write(LogLevel, ref LogLine{Given})"/>).</summary>
    public readonly struct Given : ILogLevel { public static LogLevel Value => LogLevel.Error; }
}

/// <summary>UTF-8 text for a log line as it is (an address from the envelope), without making a string of it.</summary>
public readonly ref struct Utf8Text(ReadOnlySpan<byte> bytes)
{
    public ReadOnlySpan<byte> Bytes { get; } = bytes;
}

/// <summary>
/// The interpolated-string handler behind <see cref="Log"/>'s lines: formats each value as UTF-8
/// into a pooled buffer (numbers and other <see cref="IUtf8SpanFormattable"/> values without a
/// string in between), or does nothing at all when the line's level is not enabled.
/// </summary>
[InterpolatedStringHandler]
public ref struct LogLine<TLevel> where TLevel : struct, ILogLevel
{
    private const int MaxFormatRoom = 1024 * 1024;

    private readonly Log? _log; // null: the level is off, everything is skipped
    private readonly LogLevel _level;
    private byte[]? _buffer;
    private int _length;

    public LogLine(int literalLength, int formattedCount, Log log, out bool enabled)
        : this(literalLength, formattedCount, log, TLevel.Value, out enabled)
    {
    }

    public LogLine(int literalLength, int formattedCount, Log log, LogLevel level, out bool enabled)
    {
        enabled = log.IsEnabled(level);
        _level = level;
        _length = 0;
        if (enabled)
        {
            _log = log;
            _buffer = ArrayPool<byte>.Shared.Rent(Math.Max(256, literalLength * 2 + formattedCount * 24));
        }
    }

    public void AppendLiteral(string text) => AppendChars(text);

    public void AppendFormatted(string? text) => AppendChars(text);

    public void AppendFormatted(ReadOnlySpan<char> text) => AppendChars(text);

    public void AppendFormatted(Utf8Text text)
    {
        text.Bytes.CopyTo(Room(text.Bytes.Length));
        _length += text.Bytes.Length;
    }

    public void AppendFormatted<T>(T value) => AppendFormatted(value, null);

    // Optimized from the first call: only optimized code drops the box of a value-type T below
    // (native AOT always is; under the JIT, tier 0 would box every number for a while).
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void AppendFormatted<T>(T value, string? format)
    {
        if (value is IUtf8SpanFormattable)
        {
            // For a value type the generic instantiation makes these direct calls, with no box.
            // A value that does not fit even in MaxFormatRoom is written as its text instead.
            bool fits;
            int written;
            while (!(fits = ((IUtf8SpanFormattable)value).TryFormat(_buffer.AsSpan(_length), out written, format, CultureInfo.InvariantCulture))
                   && _buffer!.Length < MaxFormatRoom)
                Grow(_buffer.Length);
            if (fits)
            {
                _length += written;
                return;
            }
        }
        AppendChars(value is IFormattable formattable ? formattable.ToString(format, CultureInfo.InvariantCulture) : value?.ToString());
    }

    private void AppendChars(ReadOnlySpan<char> text)
    {
        if (text.IsEmpty)
            return;
        int written = Encoding.UTF8.GetBytes(text, Room(Encoding.UTF8.GetMaxByteCount(text.Length)));
        _length += written;
    }

    private Span<byte> Room(int length)
    {
        if (_buffer!.Length - _length < length)
            Grow(length);
        return _buffer.AsSpan(_length);
    }

    private void Grow(int atLeast)
    {
        var bigger = ArrayPool<byte>.Shared.Rent(Math.Max(_buffer!.Length * 2, _length + atLeast));
        _buffer.AsSpan(0, _length).CopyTo(bigger);
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = bigger;
    }

    /// <summary>Hands the line to the log and gives the buffer back.</summary>
    internal void Finish()
    {
        if (_log is null || _buffer is null)
            return;
        _log.Append(_level, _buffer.AsSpan(0, _length));
        ArrayPool<byte>.Shared.Return(_buffer);
        _buffer = null;
    }
}
