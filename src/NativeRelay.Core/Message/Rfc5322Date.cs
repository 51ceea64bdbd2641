namespace NativeRelay.Message;

/// <summary>
/// Writes an RFC 5322 3.3 date-time, e.g. "Mon, 23 Nov 2026 06:55:01 +0000", straight into bytes.
/// Formatting through DateTime.ToString would allocate per message and depend on culture data,
/// which an invariant-globalization AOT binary does not carry; this needs neither.
/// </summary>
/// <remarks>
/// The day of month is written without a leading zero ("1 Dec"), as RFC 5322 3.3 allows 1*2DIGIT.
/// The time is written in the offset of the given value, and that offset is the zone.
/// </remarks>
public static class Rfc5322Date
{
    /// <summary>Longest output: "Wed, 31 Dec 9999 23:59:59 +1400".</summary>
    public const int MaxLength = 31;

    // Three letters per name, indexed by DayOfWeek (Sunday = 0) and by month - 1.
    private static ReadOnlySpan<byte> DayNames => "SunMonTueWedThuFriSat"u8;
    private static ReadOnlySpan<byte> MonthNames => "JanFebMarAprMayJunJulAugSepOctNovDec"u8;

    /// <summary>Writes the date and returns the number of bytes written.</summary>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is shorter than the date.</exception>
    public static int Write(DateTimeOffset timestamp, Span<byte> destination)
    {
        int day = timestamp.Day;
        int length = day < 10 ? MaxLength - 1 : MaxLength;
        if (destination.Length < length)
        {
            throw new ArgumentException($"The date needs {length} bytes.", nameof(destination));
        }

        DayNames.Slice((int)timestamp.DayOfWeek * 3, 3).CopyTo(destination);
        destination[3] = (byte)',';
        destination[4] = (byte)' ';
        int p = 5;
        if (day >= 10)
        {
            destination[p++] = Digit(day / 10);
        }

        destination[p++] = Digit(day % 10);
        destination[p++] = (byte)' ';
        MonthNames.Slice((timestamp.Month - 1) * 3, 3).CopyTo(destination[p..]);
        p += 3;
        destination[p++] = (byte)' ';
        p += WriteFourDigits(timestamp.Year, destination[p..]);
        destination[p++] = (byte)' ';
        p += WriteTwoDigits(timestamp.Hour, destination[p..]);
        destination[p++] = (byte)':';
        p += WriteTwoDigits(timestamp.Minute, destination[p..]);
        destination[p++] = (byte)':';
        p += WriteTwoDigits(timestamp.Second, destination[p..]);
        destination[p++] = (byte)' ';

        // DateTimeOffset keeps whole minutes within +-14:00, so hhmm always fits in four digits.
        int offsetMinutes = (int)(timestamp.Offset.Ticks / TimeSpan.TicksPerMinute);
        destination[p++] = offsetMinutes < 0 ? (byte)'-' : (byte)'+';
        offsetMinutes = Math.Abs(offsetMinutes);
        p += WriteTwoDigits(offsetMinutes / 60, destination[p..]);
        p += WriteTwoDigits(offsetMinutes % 60, destination[p..]);
        return p;
    }

    private static byte Digit(int value) => (byte)('0' + value);

    private static int WriteTwoDigits(int value, Span<byte> destination)
    {
        destination[0] = Digit(value / 10);
        destination[1] = Digit(value % 10);
        return 2;
    }

    private static int WriteFourDigits(int value, Span<byte> destination)
    {
        destination[0] = Digit(value / 1000);
        destination[1] = Digit(value / 100 % 10);
        destination[2] = Digit(value / 10 % 10);
        destination[3] = Digit(value % 10);
        return 4;
    }
}
