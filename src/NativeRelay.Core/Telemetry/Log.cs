using System.Text;

namespace NativeRelay.Telemetry;

public enum LogLevel { Debug, Info, Warn, Error }

/// <summary>
/// One line per event on standard output, written by a background flusher so a burst of log
/// lines never stalls a session on a slow terminal or pipe. Lines are buffered for at most
/// <see cref="FlushInterval"/>; <see cref="Flush"/> is called at shutdown.
/// </summary>
public sealed class Log : IDisposable
{
    private static readonly TimeSpan FlushInterval = TimeSpan.FromMilliseconds(100);

    private readonly TextWriter _out;
    private readonly StringBuilder _pending = new();
    private readonly Timer _timer;
    private readonly LogLevel _minimum;

    public Log(TextWriter output, LogLevel minimum = LogLevel.Info)
    {
        _out = output;
        _minimum = minimum;
        _timer = new Timer(static s => ((Log)s!).Flush(), this, FlushInterval, FlushInterval);
    }

    /// <summary>A log that writes nothing (tests, benchmarks).</summary>
    public static Log Null { get; } = new(TextWriter.Null, LogLevel.Error);

    public bool IsEnabled(LogLevel level) => level >= _minimum;

    public void Debug(string message) => Write(LogLevel.Debug, message);
    public void Info(string message) => Write(LogLevel.Info, message);
    public void Warn(string message) => Write(LogLevel.Warn, message);
    public void Error(string message) => Write(LogLevel.Error, message);

    public void Write(LogLevel level, string message)
    {
        if (level < _minimum)
            return;
        lock (_pending)
        {
            _pending.Append(DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ"))
                .Append(' ')
                .Append(level switch { LogLevel.Debug => "debug", LogLevel.Info => "info ", LogLevel.Warn => "warn ", _ => "error" })
                .Append(' ')
                .Append(message)
                .Append('\n');
        }
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
