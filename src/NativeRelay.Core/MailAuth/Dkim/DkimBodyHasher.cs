using System.Buffers;
using System.Security.Cryptography;

namespace NativeRelay.MailAuth.Dkim;

/// <summary>
/// The body hash (bh=) of RFC 6376 3.4.3/3.4.4 and 3.7, fed the body in any number of pieces
/// (the pooled blocks of a message cut anywhere, even inside a CRLF). Canonical bytes are collected
/// in a small buffer and hashed in runs; empty lines are only counted, so the empty lines at the
/// end of the body, which both algorithms ignore, are never hashed. One instance is reused
/// message after message (<see cref="Reset"/>): hashing allocates nothing.
/// </summary>
public sealed class DkimBodyHasher : IDisposable
{
    private readonly IncrementalHash _hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
    private readonly byte[] _out = new byte[4096];
    private int _outLength;
    private DkimCanonicalization _mode;
    private long _limit;          // l= of a signature being verified; long.MaxValue when none
    private long _hashed;         // canonical bytes hashed (or waiting in _out)
    private int _pendingLines;    // CRLFs seen and not yet emitted: they are emitted before the next content
    private bool _pendingCr;      // a CR whose LF may come in the next piece
    private bool _pendingSpace;   // relaxed: white space inside a line, emitted as one SP before the next content
    private bool _anyContent;

    public DkimBodyHasher(DkimCanonicalization mode = DkimCanonicalization.Relaxed) => Reset(mode);

    /// <summary>Starts a new body. <paramref name="limit"/>: hash only that many canonical bytes (a verified l=).</summary>
    public void Reset(DkimCanonicalization mode, long limit = long.MaxValue)
    {
        _mode = mode;
        _limit = limit;
        _hashed = 0;
        _outLength = 0;
        _pendingLines = 0;
        _pendingCr = false;
        _pendingSpace = false;
        _anyContent = false;
        _hash.GetHashAndReset(stackalloc byte[32]);
    }

    /// <summary>The canonical body's length so far (what l= would count).</summary>
    public long CanonicalLength => _hashed;

    public void Append(ReadOnlySpan<byte> data)
    {
        if (_mode == DkimCanonicalization.Relaxed)
        {
            AppendRelaxed(data);
            return;
        }
        while (!data.IsEmpty)
        {
            if (_pendingCr)
            {
                _pendingCr = false;
                if (data[0] == (byte)'\n')
                {
                    _pendingLines++;
                    data = data[1..];
                    continue;
                }
                Content("\r"u8);
                continue;
            }
            int i = data.IndexOf((byte)'\r');
            var run = i < 0 ? data : data[..i];
            if (!run.IsEmpty)
                Content(run);
            if (i < 0)
                return;
            _pendingCr = true;
            data = data[(i + 1)..];
        }
    }

    /// <summary>
    /// Relaxed (RFC 6376 3.4.4): white space at line ends dropped, every other run of SP/HTAB made
    /// one SP. Text is hashed in runs that end only at a CR, a tab or two spaces in a row, so a lone
    /// space between words costs nothing; the search for "  " is done once per piece, not per line.
    /// </summary>
    private void AppendRelaxed(ReadOnlySpan<byte> data)
    {
        int pos = 0;
        int nextDouble = -1; // where the next "  " starts (data.Length when there is none); -1: not searched yet
        while (pos < data.Length)
        {
            byte b = data[pos];
            if (_pendingCr)
            {
                _pendingCr = false;
                if (b == (byte)'\n')
                {
                    _pendingLines++;
                    _pendingSpace = false; // white space at the end of a line is dropped
                    pos++;
                    continue;
                }
                Content("\r"u8);
                continue;
            }
            if (b is (byte)' ' or (byte)'\t')
            {
                _pendingSpace = true; // one SP before the next text, nothing before a line end
                pos++;
                continue;
            }
            if (b == (byte)'\r')
            {
                _pendingCr = true;
                pos++;
                continue;
            }
            // Text: up to the next CR or tab, or two spaces in a row.
            int stop = data[pos..].IndexOfAny((byte)'\r', (byte)'\t');
            stop = stop < 0 ? data.Length : pos + stop;
            if (nextDouble < pos)
            {
                int d = data[pos..].IndexOf("  "u8);
                nextDouble = d < 0 ? data.Length : pos + d;
            }
            stop = Math.Min(stop, nextDouble);
            // Spaces at the end of the run are white space (before a line end, a tab, or the next piece).
            int end = stop;
            while (end > pos && data[end - 1] == (byte)' ')
                end--;
            Content(data[pos..end]);
            if (end < stop)
                _pendingSpace = true;
            pos = stop;
        }
    }

    /// <summary>Ends the body and writes its SHA-256 into <paramref name="destination"/> (32 bytes).</summary>
    public void Finish(Span<byte> destination)
    {
        if (_pendingCr)
        {
            _pendingCr = false;
            Content("\r"u8);
        }
        if (_anyContent || _mode == DkimCanonicalization.Simple)
            Emit("\r\n"u8); // the last line's end; an empty body is one CRLF in simple, nothing in relaxed
        FlushOut();
        _hash.GetHashAndReset(destination);
    }

    private void Content(ReadOnlySpan<byte> run)
    {
        for (; _pendingLines > 0; _pendingLines--)
            Emit("\r\n"u8);
        if (_pendingSpace)
        {
            _pendingSpace = false;
            Emit(" "u8);
        }
        _anyContent = true;
        Emit(run);
    }

    private void Emit(ReadOnlySpan<byte> bytes)
    {
        if (_hashed + bytes.Length > _limit)
            bytes = bytes[..(int)Math.Max(0, _limit - _hashed)];
        _hashed += bytes.Length;
        if (bytes.Length >= _out.Length)
        {
            FlushOut();
            _hash.AppendData(bytes);
            return;
        }
        if (_outLength + bytes.Length > _out.Length)
            FlushOut();
        bytes.CopyTo(_out.AsSpan(_outLength));
        _outLength += bytes.Length;
    }

    private void FlushOut()
    {
        if (_outLength > 0)
            _hash.AppendData(_out.AsSpan(0, _outLength));
        _outLength = 0;
    }

    public void Dispose() => _hash.Dispose();
}
