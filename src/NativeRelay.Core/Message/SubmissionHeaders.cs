using System.Buffers;

namespace NativeRelay.Message;

/// <summary>What the header section of a received message holds, as far as the receiving side cares.</summary>
public struct HeaderFacts
{
    /// <summary>Received: fields (mail loop detection).</summary>
    public int ReceivedCount;
    public bool HasMessageId;
    public bool HasDate;

    /// <summary>A "TLS-Required: No" field (RFC 8689 5): the sender asks for delivery even where TLS policies fail.</summary>
    public bool TlsRequiredNo;

    /// <summary>The blank line that ends the header section (or a line that cannot be a header) was inside the scanned bytes.</summary>
    public bool HeaderSectionComplete;

    /// <summary>Scans a header section (or a whole message) once, without allocating.</summary>
    public static HeaderFacts Scan(ReadOnlySpan<byte> message)
    {
        var facts = default(HeaderFacts);
        var scanner = new HeaderScanner(message);
        while (scanner.TryReadNext(out var field))
        {
            var name = field.Name(message);
            if (name.Length == 8 && System.Text.Ascii.EqualsIgnoreCase(name, "Received"u8))
                facts.ReceivedCount++;
            else if (name.Length == 10 && System.Text.Ascii.EqualsIgnoreCase(name, "Message-ID"u8))
                facts.HasMessageId = true;
            else if (name.Length == 4 && System.Text.Ascii.EqualsIgnoreCase(name, "Date"u8))
                facts.HasDate = true;
            else if (name.Length == 12 && System.Text.Ascii.EqualsIgnoreCase(name, "TLS-Required"u8)
                     && IsNo(field.RawValue(message)))
                facts.TlsRequiredNo = true;
        }
        facts.HeaderSectionComplete = scanner.Status != HeaderScanStatus.NoBody;
        return facts;
    }

    private static bool IsNo(ReadOnlySpan<byte> value) => System.Text.Ascii.EqualsIgnoreCase(value[System.Text.Ascii.Trim(value)], "No"u8);
}

/// <summary>
/// The header fields a submission server adds when the client left them out (RFC 6409 8.2 and
/// 8.3): <c>Message-ID:</c> in Postfix's form (<c>&lt;YYYYMMDDhhmmss.QUEUEID@hostname&gt;</c>, unique
/// because the queue id is) and <c>Date:</c> of the time the message arrived.
/// </summary>
public static class SubmissionHeaders
{
    /// <summary>"Message-ID: &lt;" 13 + 14 + "." 1 + id 64 + "@" 1 + host 255 + "&gt;\r\n" 3.</summary>
    public const int MaxMessageIdLength = 13 + 14 + 1 + 64 + 1 + 255 + 3;

    /// <summary>"Date: " 6 + date 31 + CRLF 2.</summary>
    public const int MaxDateLength = 6 + Rfc5322Date.MaxLength + 2;

    public const int MaxLength = MaxMessageIdLength + MaxDateLength;

    private static readonly SearchValues<byte> HostBytes =
        SearchValues.Create("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._"u8);

    public static int WriteMessageId(Span<byte> destination, DateTimeOffset time, ReadOnlySpan<byte> queueId, ReadOnlySpan<byte> hostname)
    {
        if (queueId.Length > 64)
            queueId = queueId[..64];
        if (hostname.Length > 255)
            hostname = hostname[..255];
        int n = Append(destination, 0, "Message-ID: <"u8);
        var utc = time.UtcDateTime;
        n += FormatDigits(destination[n..], utc.Year, 4);
        n += FormatDigits(destination[n..], utc.Month, 2);
        n += FormatDigits(destination[n..], utc.Day, 2);
        n += FormatDigits(destination[n..], utc.Hour, 2);
        n += FormatDigits(destination[n..], utc.Minute, 2);
        n += FormatDigits(destination[n..], utc.Second, 2);
        destination[n++] = (byte)'.';
        n = Append(destination, n, queueId);
        destination[n++] = (byte)'@';
        int hostStart = n;
        n = Append(destination, n, hostname);
        // The host name is validated config, but a Message-ID must never carry a stray byte.
        var host = destination[hostStart..n];
        int bad;
        while ((bad = host.IndexOfAnyExcept(HostBytes)) >= 0)
        {
            host[bad] = (byte)'-';
            host = host[(bad + 1)..];
        }
        return Append(destination, n, ">\r\n"u8);
    }

    public static int WriteDate(Span<byte> destination, DateTimeOffset time)
    {
        int n = Append(destination, 0, "Date: "u8);
        n += Rfc5322Date.Write(time, destination[n..]);
        return Append(destination, n, "\r\n"u8);
    }

    private static int Append(Span<byte> destination, int at, ReadOnlySpan<byte> text)
    {
        text.CopyTo(destination[at..]);
        return at + text.Length;
    }

    private static int FormatDigits(Span<byte> destination, int value, int digits)
    {
        for (int i = digits - 1; i >= 0; i--)
        {
            destination[i] = (byte)('0' + value % 10);
            value /= 10;
        }
        return digits;
    }
}
