using System.Buffers.Binary;
using System.Text;

namespace NativeRelay.Spool;

/// <summary>Little-endian writer over a span that the caller sized exactly.</summary>
internal ref struct SpanWriter(Span<byte> dest)
{
    private readonly Span<byte> _dest = dest;
    private int _pos;

    public void U8(byte v) => _dest[_pos++] = v;
    public void U16(ushort v) { BinaryPrimitives.WriteUInt16LittleEndian(_dest[_pos..], v); _pos += 2; }
    public void U32(uint v) { BinaryPrimitives.WriteUInt32LittleEndian(_dest[_pos..], v); _pos += 4; }
    public void I64(long v) { BinaryPrimitives.WriteInt64LittleEndian(_dest[_pos..], v); _pos += 8; }

    public void Bytes16(ReadOnlySpan<byte> v)
    {
        U16(checked((ushort)v.Length));
        v.CopyTo(_dest[_pos..]);
        _pos += v.Length;
    }

    public void Utf8(string v)
    {
        int n = Encoding.UTF8.GetBytes(v, _dest[(_pos + 2)..]);
        U16(checked((ushort)n));
        _pos += n;
    }

    public Span<byte> Take(int length)
    {
        var span = _dest.Slice(_pos, length);
        _pos += length;
        return span;
    }
}

/// <summary>Little-endian reader that reports truncation instead of throwing: records come from disk.</summary>
internal ref struct SpanReader(ReadOnlySpan<byte> src)
{
    private readonly ReadOnlySpan<byte> _src = src;
    private int _pos;

    public int Remaining => _src.Length - _pos;

    /// <summary>Bytes read so far.</summary>
    public int Position => _pos;

    public bool Skip(long count)
    {
        if (count < 0 || Remaining < count) return false;
        _pos += (int)count;
        return true;
    }

    /// <summary>Steps over a length-prefixed (2+n) field.</summary>
    public bool Skip16() => U16(out ushort n) && Skip(n);

    public bool U8(out byte v)
    {
        v = 0;
        if (Remaining < 1) return false;
        v = _src[_pos++];
        return true;
    }

    public bool U16(out ushort v)
    {
        v = 0;
        if (Remaining < 2) return false;
        v = BinaryPrimitives.ReadUInt16LittleEndian(_src[_pos..]);
        _pos += 2;
        return true;
    }

    public bool U32(out uint v)
    {
        v = 0;
        if (Remaining < 4) return false;
        v = BinaryPrimitives.ReadUInt32LittleEndian(_src[_pos..]);
        _pos += 4;
        return true;
    }

    public bool I64(out long v)
    {
        v = 0;
        if (Remaining < 8) return false;
        v = BinaryPrimitives.ReadInt64LittleEndian(_src[_pos..]);
        _pos += 8;
        return true;
    }

    public bool Bytes16(out byte[] v)
    {
        v = [];
        if (!U16(out ushort n) || Remaining < n) return false;
        v = _src.Slice(_pos, n).ToArray();
        _pos += n;
        return true;
    }

    /// <summary>The next <paramref name="length"/> bytes (the caller checked <see cref="Remaining"/>).</summary>
    public ReadOnlySpan<byte> Take(int length)
    {
        var v = _src.Slice(_pos, length);
        _pos += length;
        return v;
    }

    public bool Utf8(out string v)
    {
        v = "";
        if (!U16(out ushort n) || Remaining < n) return false;
        v = Encoding.UTF8.GetString(_src.Slice(_pos, n));
        _pos += n;
        return true;
    }
}
