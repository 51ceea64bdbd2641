using System.Buffers.Binary;
using System.Numerics;

namespace NativeRelay.Events;

/// <summary>One event as the journal holds it: its sequence number (the event id's second half), what sinks filter on, and its JSON.</summary>
public readonly record struct JournalRecord(long Seq, RelayEventType Type, string? Pool, ReadOnlyMemory<byte> Json)
{
    public string PoolForFilter => Pool ?? "default";
}

/// <summary>
/// The journal's record layout, little-endian:
/// <c>u32 body length, u32 CRC-32C of (seq, body), u64 seq, body</c>, where the body is
/// <c>u8 type, u8 pool length, pool (UTF-8), JSON</c>. The CRC and the expected sequence number
/// tell a whole record from a torn or stale one after a crash.
/// </summary>
internal static class JournalFormat
{
    public const int HeaderSize = 16;

    /// <summary>An event is at most this large (metadata included); a larger one is refused, not stored.</summary>
    public const int MaxBodySize = 1 << 20;

    public static int BodySize(int poolLength, int jsonLength) => 2 + poolLength + jsonLength;

    public static void WriteHeader(Span<byte> header, long seq, ReadOnlySpan<byte> body)
    {
        BinaryPrimitives.WriteUInt32LittleEndian(header, (uint)body.Length);
        BinaryPrimitives.WriteInt64LittleEndian(header[8..], seq);
        BinaryPrimitives.WriteUInt32LittleEndian(header[4..], Checksum(header[8..16], body));
    }

    /// <summary>Reads a header: false when it cannot be the start of a record (a length out of range).</summary>
    public static bool TryReadHeader(ReadOnlySpan<byte> header, out int bodyLength, out uint crc, out long seq)
    {
        bodyLength = (int)Math.Min(BinaryPrimitives.ReadUInt32LittleEndian(header), int.MaxValue);
        crc = BinaryPrimitives.ReadUInt32LittleEndian(header[4..]);
        seq = BinaryPrimitives.ReadInt64LittleEndian(header[8..]);
        return bodyLength >= 2 && bodyLength <= MaxBodySize + 2 + 255;
    }

    public static bool Verify(ReadOnlySpan<byte> header, ReadOnlySpan<byte> body, uint crc) => Checksum(header[8..16], body) == crc;

    public static JournalRecord Decode(long seq, byte[] body)
    {
        var type = (RelayEventType)body[0];
        int poolLength = body[1];
        string? pool = poolLength == 0 ? null : System.Text.Encoding.UTF8.GetString(body, 2, poolLength);
        return new JournalRecord(seq, type, pool, body.AsMemory(2 + poolLength));
    }

    // CRC-32C through the CPU's instruction (BitOperations falls back to a table where there is none).
    private static uint Checksum(ReadOnlySpan<byte> seq, ReadOnlySpan<byte> body)
    {
        uint crc = ~0u;
        crc = Update(crc, seq);
        crc = Update(crc, body);
        return ~crc;
    }

    private static uint Update(uint crc, ReadOnlySpan<byte> data)
    {
        while (data.Length >= 8)
        {
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }
        foreach (byte b in data)
            crc = BitOperations.Crc32C(crc, b);
        return crc;
    }
}
