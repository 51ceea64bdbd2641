namespace NativeRelay.Spool;

/// <summary>
/// Queue ids: milliseconds since the epoch in the high bits and a counter in the low 16, so ids
/// are unique across restarts (the generator never goes below the largest id it recovered) and
/// sort by arrival. Shown as 16 upper-case hex digits.
/// </summary>
public sealed class QueueIdGenerator
{
    private long _last;

    public void Observe(ulong recovered)
    {
        long value = (long)recovered;
        long seen;
        while ((seen = Volatile.Read(ref _last)) < value && Interlocked.CompareExchange(ref _last, value, seen) != seen)
        {
        }
    }

    public ulong Next()
    {
        long floor = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() << 16;
        while (true)
        {
            long last = Volatile.Read(ref _last);
            long next = Math.Max(last + 1, floor);
            if (Interlocked.CompareExchange(ref _last, next, last) == last)
                return (ulong)next;
        }
    }

    public static int Format(ulong id, Span<byte> destination)
    {
        const string digits = "0123456789ABCDEF";
        for (int i = 15; i >= 0; i--)
        {
            destination[i] = (byte)digits[(int)(id & 0xF)];
            id >>= 4;
        }
        return 16;
    }

    public static string ToString(ulong id) => id.ToString("X16");

    public static bool TryParse(string text, out ulong id) =>
        ulong.TryParse(text, System.Globalization.NumberStyles.HexNumber, null, out id) && text.Length == 16;
}

/// <summary>A queue id as its 16 hex digits, formatted where it is written (a log line) instead of as a string first.</summary>
public readonly struct QueueIdText(ulong id) : IUtf8SpanFormattable
{
    public bool TryFormat(Span<byte> destination, out int written, ReadOnlySpan<char> format, IFormatProvider? provider)
    {
        written = destination.Length >= 16 ? QueueIdGenerator.Format(id, destination) : 0;
        return written == 16;
    }

    public override string ToString() => QueueIdGenerator.ToString(id);
}
