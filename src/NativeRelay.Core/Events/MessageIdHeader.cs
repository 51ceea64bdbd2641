using NativeRelay.Message;

namespace NativeRelay.Events;

/// <summary>The Message-ID of a message, for its events: the header scanner over the header section, the value unfolded and trimmed.</summary>
public static class MessageIdHeader
{
    /// <summary>Longest Message-ID kept (a longer one is not an id any receiver matches on).</summary>
    private const int MaxLength = 998;

    public static string? Find(ReadOnlySpan<byte> message)
    {
        var scanner = new HeaderScanner(message);
        while (scanner.TryReadNext(out var field))
        {
            if (!field.NameEquals(message, "Message-ID"u8))
                continue;
            var value = field.RawValue(message);
            if (value.Length > MaxLength)
                return null;
            Span<byte> unfolded = stackalloc byte[value.Length];
            int n = 0;
            foreach (byte b in value)
                if (b is not ((byte)'\r' or (byte)'\n'))
                    unfolded[n++] = b;
            var trimmed = unfolded[System.Text.Ascii.Trim(unfolded[..n])];
            return trimmed.IsEmpty ? null : System.Text.Encoding.UTF8.GetString(trimmed);
        }
        return null;
    }
}
