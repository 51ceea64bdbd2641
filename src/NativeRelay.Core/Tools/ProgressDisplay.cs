namespace NativeRelay.Tools;

/// <summary>
/// A bounded, low-rate progress display: on a terminal a line redrawn in place (at most four
/// times a second), otherwise a plain line a second. It samples counters through a callback and
/// never touches the hot path. Stops when disposed, finishing the in-place line with a newline.
/// </summary>
public sealed class ProgressDisplay : IAsyncDisposable
{
    private readonly TextWriter _writer;
    private readonly bool _terminal;
    private readonly Func<bool, string> _line;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private int _lastLength;

    /// <param name="writer">Where to draw (standard error, so standard output stays the result).</param>
    /// <param name="terminal">True to redraw one line in place; false for a line per second.</param>
    /// <param name="line">Makes the current line; its argument says whether it is for a terminal.</param>
    public ProgressDisplay(TextWriter writer, bool terminal, Func<bool, string> line)
    {
        _writer = writer;
        _terminal = terminal;
        _line = line;
        _loop = RunAsync();
    }

    /// <summary>True when standard error is a terminal (where progress is drawn).</summary>
    public static bool ErrorIsTerminal => !Console.IsErrorRedirected;

    private async Task RunAsync()
    {
        var period = _terminal ? TimeSpan.FromMilliseconds(250) : TimeSpan.FromSeconds(1);
        using var timer = new PeriodicTimer(period);
        try
        {
            while (await timer.WaitForNextTickAsync(_stop.Token))
                Draw();
        }
        catch (OperationCanceledException)
        {
        }
    }

    private void Draw()
    {
        string text = _line(_terminal);
        try
        {
            if (_terminal)
            {
                string padded = text.Length < _lastLength ? text.PadRight(_lastLength) : text;
                _lastLength = text.Length;
                _writer.Write('\r' + padded);
            }
            else
            {
                _writer.WriteLine(text);
            }
            _writer.Flush();
        }
        catch (IOException)
        {
        }
    }

    /// <summary>A bar like [##########..........] for a fraction in [0, 1].</summary>
    public static string Bar(double fraction, int width = 24)
    {
        int filled = (int)Math.Round(Math.Clamp(fraction, 0, 1) * width);
        return "[" + new string('#', filled) + new string('.', width - filled) + "]";
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        await _loop;
        if (_terminal && _lastLength > 0)
        {
            Draw();
            try
            {
                _writer.WriteLine();
                _writer.Flush();
            }
            catch (IOException)
            {
            }
        }
        _stop.Dispose();
    }
}
