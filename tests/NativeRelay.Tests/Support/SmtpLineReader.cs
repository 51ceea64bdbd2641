namespace NativeRelay.Tests.Support;

/// <summary>
/// Reads a byte stream line by line, keeping every byte. A line ends with LF; the returned array
/// includes its line end (CRLF, or a bare LF), so callers can see exactly what was on the wire.
/// Used by both the test sink and the test client.
/// </summary>
public sealed class SmtpLineReader
{
    private readonly Stream _stream;
    private readonly int _maxLineLength;
    private readonly byte[] _buffer = new byte[16 * 1024];
    private int _start;
    private int _end;

    public SmtpLineReader(Stream stream, int maxLineLength = 1024 * 1024)
    {
        _stream = stream;
        _maxLineLength = maxLineLength;
    }

    /// <summary>True when bytes that were already received are waiting in the buffer.</summary>
    public bool HasBufferedData => _end > _start;

    /// <summary>
    /// Returns the next line including its LF, or null at end of stream. If the stream ends in
    /// the middle of a line, that partial line is returned without a line end.
    /// </summary>
    public async Task<byte[]?> ReadLineAsync(CancellationToken cancellationToken)
    {
        using var line = new MemoryStream();
        while (true)
        {
            int lf = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
            if (lf >= 0)
            {
                line.Write(_buffer, _start, lf + 1 - _start);
                _start = lf + 1;
                return line.ToArray();
            }

            line.Write(_buffer, _start, _end - _start);
            _start = _end = 0;
            if (line.Length > _maxLineLength)
            {
                throw new InvalidDataException($"line longer than {_maxLineLength} bytes");
            }

            int read = await _stream.ReadAsync(_buffer.AsMemory(), cancellationToken).ConfigureAwait(false);
            if (read == 0)
            {
                return line.Length == 0 ? null : line.ToArray();
            }

            _end = read;
        }
    }
}
