namespace NativeRelay.MailAuth.Dkim;

/// <summary>
/// RFC 6376 3.2 tag=value lists (the DKIM-Signature header's value and the DNS key record), parsed
/// in place into offsets: names are case-sensitive, white space around names and values (folding
/// included) is not part of them, a duplicated tag makes the list invalid, a trailing ';' is allowed.
/// </summary>
public static class DkimTagList
{
    /// <summary>At most this many tags are read (a signature has about twelve).</summary>
    public const int MaxTags = 32;

    /// <summary>Fills <paramref name="tags"/> with each tag's name and value ranges; false if the list is malformed.</summary>
    public static bool TryParse(ReadOnlySpan<byte> text, Span<(Range Name, Range Value)> tags, out int count)
    {
        count = 0;
        int pos = 0;
        while (pos < text.Length)
        {
            int end = text[pos..].IndexOf((byte)';');
            end = end < 0 ? text.Length : pos + end;
            var spec = text[pos..end];
            int eq = spec.IndexOf((byte)'=');
            if (eq < 0)
            {
                // Only white space may stand between the last ';' and the end.
                if (!IsWhitespace(spec))
                    return false;
                pos = end + 1;
                continue;
            }
            var (nameStart, nameEnd) = Trim(text, pos, pos + eq);
            var (valueStart, valueEnd) = Trim(text, pos + eq + 1, end);
            if (nameEnd == nameStart || !IsTagName(text[nameStart..nameEnd]))
                return false;
            for (int i = 0; i < count; i++)
                if (text[tags[i].Name].SequenceEqual(text[nameStart..nameEnd]))
                    return false; // RFC 6376 3.2: a duplicate tag is an error
            if (count == tags.Length)
                return false;
            tags[count++] = (nameStart..nameEnd, valueStart..valueEnd);
            pos = end + 1;
        }
        return true;
    }

    /// <summary>The value of tag <paramref name="name"/>, if present.</summary>
    public static bool TryGet(ReadOnlySpan<byte> text, ReadOnlySpan<(Range Name, Range Value)> tags, ReadOnlySpan<byte> name, out Range value)
    {
        foreach (var (n, v) in tags)
        {
            if (text[n].SequenceEqual(name))
            {
                value = v;
                return true;
            }
        }
        value = default;
        return false;
    }

    /// <summary>Copies a value without its folding white space (b=, bh=, p= are base64 with FWS allowed anywhere).</summary>
    public static int CopyWithoutWhitespace(ReadOnlySpan<byte> value, Span<byte> destination)
    {
        int n = 0;
        foreach (byte b in value)
            if (b is not ((byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n'))
                destination[n++] = b;
        return n;
    }

    private static (int Start, int End) Trim(ReadOnlySpan<byte> text, int start, int end)
    {
        while (start < end && IsWsp(text[start]))
            start++;
        while (end > start && IsWsp(text[end - 1]))
            end--;
        return (start, end);
    }

    private static bool IsWhitespace(ReadOnlySpan<byte> s)
    {
        foreach (byte b in s)
            if (!IsWsp(b))
                return false;
        return true;
    }

    private static bool IsWsp(byte b) => b is (byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n';

    // tag-name = ALPHA *ALNUMPUNC (ALNUMPUNC = ALPHA / DIGIT / "_")
    private static bool IsTagName(ReadOnlySpan<byte> name)
    {
        if (!char.IsAsciiLetter((char)name[0]))
            return false;
        foreach (byte b in name)
            if (!(char.IsAsciiLetterOrDigit((char)b) || b == (byte)'_'))
                return false;
        return true;
    }
}
