using System.Buffers.Binary;
using System.IO.Hashing;
using System.Text;

namespace NativeRelay.Traffic.Suppression;

/// <summary>One record of the journal: an entry added (with when and why) or removed.</summary>
public readonly record struct SuppressionRecord(bool Added, long TimeUnixMs, string Scope, byte[] Address, string Reason);

/// <summary>
/// The suppression list's file format, <c>SPOOL/suppression/journal</c>: an 8-byte header, then
/// records appended one after another:
/// <code>u32 body length | u32 CRC-32 of the body | body
/// body: u8 op (1 add, 2 remove) | i64 time (Unix ms) | u8 scope length | scope (UTF-8: global,
///       pool:NAME, domain:DOMAIN) | u16 address length | address (UTF-8, ASCII lowercased) |
///       u16 reason length | reason (UTF-8)</code>
/// All integers little-endian. A record that is cut short or fails its checksum ends the journal:
/// it was never acknowledged (the list commits before it answers), and opening truncates it away.
/// </summary>
internal static class SuppressionJournal
{
    public static ReadOnlySpan<byte> Header => "NRSUPJ1\n"u8;
    public const int HeaderLength = 8;
    public const int MaxAddressLength = 1024;
    public const int MaxReasonLength = 512;
    public const int MaxBody = 1 + 8 + 1 + 255 + 2 + MaxAddressLength + 2 + MaxReasonLength * 4;

    private const byte OpAdd = 1;
    private const byte OpRemove = 2;

    /// <summary>Writes one record into <paramref name="destination"/> (at least <see cref="MaxRecordLength"/> long); returns its length.</summary>
    public static int Write(Span<byte> destination, bool added, long timeUnixMs, ReadOnlySpan<byte> scope, ReadOnlySpan<byte> address, string reason)
    {
        var body = destination[8..];
        int n = 0;
        body[n++] = added ? OpAdd : OpRemove;
        BinaryPrimitives.WriteInt64LittleEndian(body[n..], timeUnixMs);
        n += 8;
        body[n++] = (byte)scope.Length;
        scope.CopyTo(body[n..]);
        n += scope.Length;
        BinaryPrimitives.WriteUInt16LittleEndian(body[n..], (ushort)address.Length);
        n += 2;
        for (int i = 0; i < address.Length; i++)
        {
            byte b = address[i];
            body[n + i] = (uint)(b - 'A') <= 'Z' - 'A' ? (byte)(b | 0x20) : b;
        }
        n += address.Length;
        if (reason.Length > MaxReasonLength)
            reason = reason[..MaxReasonLength];
        int reasonBytes = Encoding.UTF8.GetBytes(reason, body[(n + 2)..]);
        BinaryPrimitives.WriteUInt16LittleEndian(body[n..], (ushort)reasonBytes);
        n += 2 + reasonBytes;
        BinaryPrimitives.WriteUInt32LittleEndian(destination, (uint)n);
        BinaryPrimitives.WriteUInt32LittleEndian(destination[4..], Crc32.HashToUInt32(body[..n]));
        return 8 + n;
    }

    public const int MaxRecordLength = 8 + MaxBody;

    internal static bool TryDecode(ReadOnlySpan<byte> body, out SuppressionRecord record)
    {
        record = default;
        byte op = body[0];
        if (op is not (OpAdd or OpRemove))
            return false;
        long time = BinaryPrimitives.ReadInt64LittleEndian(body[1..]);
        int n = 9;
        int scopeLength = body[n++];
        if (n + scopeLength + 2 > body.Length)
            return false;
        string scope = Encoding.UTF8.GetString(body.Slice(n, scopeLength));
        n += scopeLength;
        int addressLength = BinaryPrimitives.ReadUInt16LittleEndian(body[n..]);
        n += 2;
        if (addressLength == 0 || n + addressLength + 2 > body.Length)
            return false;
        byte[] address = body.Slice(n, addressLength).ToArray();
        n += addressLength;
        int reasonLength = BinaryPrimitives.ReadUInt16LittleEndian(body[n..]);
        n += 2;
        if (n + reasonLength != body.Length)
            return false;
        string reason = Encoding.UTF8.GetString(body.Slice(n, reasonLength));
        record = new SuppressionRecord(op == OpAdd, time, scope, address, reason);
        return true;
    }

}

/// <summary>
/// Reads a journal's records in order from <c>start</c> (just after the header) up to <c>end</c>,
/// stopping at the first record cut short or damaged; <see cref="End"/> is then where the valid
/// part ends (what opening truncates to).
/// </summary>
internal sealed class SuppressionJournalReader
{
    private readonly Stream _stream;
    private readonly long _start;
    private readonly long _end;

    public SuppressionJournalReader(Stream stream, long start, long end)
    {
        _stream = stream;
        _start = start;
        _end = end;
        End = start;
    }

    public long End { get; private set; }

    public IEnumerable<(SuppressionRecord Record, long Offset)> Records()
    {
        var buffer = new byte[SuppressionJournal.MaxRecordLength];
        long offset = _start;
        while (offset + 8 <= _end)
        {
            if (!ReadExactly(buffer, 8))
                break;
            uint length = BinaryPrimitives.ReadUInt32LittleEndian(buffer);
            uint crc = BinaryPrimitives.ReadUInt32LittleEndian(buffer.AsSpan(4));
            if (length < 14 || length > SuppressionJournal.MaxBody || offset + 8 + length > _end)
                break;
            if (!ReadExactly(buffer, (int)length) || Crc32.HashToUInt32(buffer.AsSpan(0, (int)length)) != crc
                || !SuppressionJournal.TryDecode(buffer.AsSpan(0, (int)length), out var record))
                break;
            long at = offset;
            offset += 8 + length;
            End = offset;
            yield return (record, at);
        }
    }

    private bool ReadExactly(byte[] destination, int count)
    {
        int total = 0;
        while (total < count)
        {
            int n = _stream.Read(destination, total, count - total);
            if (n == 0)
                return false;
            total += n;
        }
        return true;
    }
}
