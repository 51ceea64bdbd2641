using System.Buffers;
using System.Text;
using System.Text.Json;

namespace NativeRelay.Telemetry;

public enum LogLevel { Debug, Info, Warn, Error }

/// <summary>Text: <c>TIME LEVEL message</c>. Json: <c>{"time":..,"level":..,"message":..}</c>, one object per line.</summary>
public enum LogFormat { Text, Json }

/// <summary>
/// One line per event on standard output, written by a background flusher so a burst of log
/// lines never stalls a session on a slow terminal or pipe. Lines are buffered for at most
/// <see cref="FlushInterval"/>; <see cref="Flush"/> is called at shutdown. The level and the
/// format can change while it runs (<see cref="Configure"/>, on SIGHUP).
/// </summary>
public sealed class Log : IDisposable
{
    private static readonly TimeSpan FlushInterval = TimeSpan.FromMilliseconds(100);

    private readonly TextWriter _out;
    private readonly StringBuilder _pending = new();
    private readonly Timer _timer;
    private readonly ArrayBufferWriter<byte> _json = new(256);
    private volatile LogLevel _minimum;
    private volatile LogFormat _format;

    public Log(TextWriter output, LogLevel minimum = LogLevel.Info, LogFormat format = LogFormat.Text)
    {
        _out = output;
        _minimum = minimum;
        _format = format;
        _timer = new Timer(static s => ((Log)s!).Flush(), this, FlushInterval, FlushInterval);
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

    public void Write(LogLevel level, string message)
    {
        if (level < _minimum)
            return;
        var now = DateTime.UtcNow;
        lock (_pending)
        {
            if (_format == LogFormat.Json)
            {
                AppendJson(now, level, message);
                return;
            }
            _pending.Append(now.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture))
                .Append(' ')
                .Append(level switch { LogLevel.Debug => "debug", LogLevel.Info => "info ", LogLevel.Warn => "warn ", _ => "error" })
                .Append(' ')
                .Append(message)
                .Append('\n');
        }
    }

    // Utf8JsonWriter escapes whatever a message carries (quotes, control characters, client input).
    private void AppendJson(DateTime now, LogLevel level, string message)
    {
        _json.Clear();
        using (var w = new Utf8JsonWriter(_json))
        {
            w.WriteStartObject();
            w.WriteString("time"u8, now.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));
            w.WriteString("level"u8, LevelName(level));
            w.WriteString("message"u8, message);
            w.WriteEndObject();
        }
        _pending.Append(Encoding.UTF8.GetString(_json.WrittenSpan)).Append('\n');
    }

    public void Flush()
    {
        string text;
        lock (_pending)
        {
            if (_pending.Length == 0)
                return;
            text = _pending.ToString();
            _pending.Clear();
        }
        try
        {
            _out.Write(text);
            _out.Flush();
        }
        catch (IOException)
        {
            // stdout went away (closed pipe): the relay carries on without its log.
        }
    }

    public void Dispose()
    {
        _timer.Dispose();
        Flush();
    }
}
