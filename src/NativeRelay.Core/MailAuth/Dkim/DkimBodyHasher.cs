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
    private static readonly SearchValues<byte> RelaxedSpecial = SearchValues.Create(" \t\r"u8);

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
        var special = _mode == DkimCanonicalization.Relaxed ? RelaxedSpecial : null;
        while (!data.IsEmpty)
        {
            if (_pendingCr)
            {
                _pendingCr = false;
                if (data[0] == (byte)'\n')
                {
                    _pendingLines++;
                    _pendingSpace = false; // white space at the end of a line is dropped (relaxed)
                    data = data[1..];
                    continue;
                }
                Content("\r"u8);
                continue;
            }
            int i = special is null ? data.IndexOf((byte)'\r') : NextRelaxedSpecial(data, special);
            var run = i < 0 ? data : data[..i];
            if (!run.IsEmpty)
                Content(run);
            if (i < 0)
                return;
            if (data[i] == (byte)'\r')
                _pendingCr = true;
            else
                _pendingSpace = true;
            data = data[(i + 1)..];
        }
    }

    /// <summary>
    /// Where relaxed canonicalization has work to do: a CR, a tab, or a space that is not a lone
    /// space between two other bytes of the line. A lone space inside a run of text is kept as it
    /// is, so ordinary text is hashed in long runs rather than word by word.
    /// </summary>
    private static int NextRelaxedSpecial(ReadOnlySpan<byte> data, SearchValues<byte> special)
    {
        int from = 0;
        while (true)
        {
            int i = data[from..].IndexOfAny(special);
            if (i < 0)
                return -1;
            i += from;
            // A space with text on both sides within this piece (the byte before is text: runs hold no specials).
            if (data[i] == (byte)' ' && i > 0 && i + 1 < data.Length && data[i + 1] is not ((byte)' ' or (byte)'\t' or (byte)'\r'))
            {
                from = i + 1;
                continue;
            }
            return i;
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
