namespace NativeRelay.TlsPolicies.MtaSts;

/// <summary>
/// The "_mta-sts.DOMAIN" TXT record (RFC 8461 3.1): "v=STSv1; id=ID;" with optional extension
/// fields. Parsed strictly by the RFC's grammar, because the record only says that a policy
/// exists and which version it is: a record that does not parse means "no MTA-STS" (3.1: "If
/// the number of resulting records is not one, or if the resulting record is syntactically
/// invalid, senders MUST assume the recipient domain does not have an available MTA-STS Policy").
/// </summary>
public sealed record MtaStsRecord(string Id)
{
    /// <summary>The one STSv1 record among a name's TXT records, or null (none, several, or invalid), with why.</summary>
    public static MtaStsRecord? FromTxt(IReadOnlyList<string> records, out string? error)
    {
        MtaStsRecord? found = null;
        int candidates = 0;
        error = null;
        foreach (var text in records)
        {
            // Records that do not begin with "v=STSv1;" are discarded (3.1).
            if (!text.StartsWith("v=STSv1", StringComparison.Ordinal))
                continue;
            candidates++;
            found = TryParse(text, out error);
        }
        if (candidates > 1)
        {
            error = $"{candidates} STSv1 records";
            return null;
        }
        if (candidates == 0)
            error = "no STSv1 record";
        return found;
    }

    /// <summary>
    /// sts-text-record = sts-version 1*(sts-field-delim sts-field) [sts-field-delim];
    /// sts-field-delim = *WSP ";" *WSP; sts-id = "id=" 1*32(ALPHA / DIGIT);
    /// sts-extension = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".") "=" 1*(%x21-3A / %x3C / %x3E-7E).
    /// </summary>
    public static MtaStsRecord? TryParse(string text, out string? error)
    {
        error = null;
        const string Version = "v=STSv1";
        if (!text.StartsWith(Version, StringComparison.Ordinal))
        {
            error = "the record does not start with v=STSv1";
            return null;
        }
        string? id = null;
        int i = Version.Length;
        bool anyField = false;
        while (i < text.Length)
        {
            // sts-field-delim
            while (i < text.Length && IsWsp(text[i]))
                i++;
            if (i == text.Length)
                break;
            if (text[i] != ';')
            {
                error = $"expected ';' at offset {i}";
                return null;
            }
            i++;
            while (i < text.Length && IsWsp(text[i]))
                i++;
            if (i == text.Length)
                break; // the optional trailing delimiter
            int nameStart = i;
            while (i < text.Length && text[i] != '=' && text[i] != ';' && !IsWsp(text[i]))
                i++;
            var name = text.AsSpan(nameStart, i - nameStart);
            if (i == text.Length || text[i] != '=')
            {
                error = $"field '{name}' has no '='";
                return null;
            }
            i++;
            int valueStart = i;
            while (i < text.Length && text[i] is >= '!' and <= '~' && text[i] != ';' && text[i] != '=')
                i++;
            var value = text.AsSpan(valueStart, i - valueStart);
            if (value.Length == 0)
            {
                error = $"field '{name}' has an empty or invalid value";
                return null;
            }
            anyField = true;
            if (name.SequenceEqual("id"))
            {
                if (id is not null)
                {
                    error = "id appears twice";
                    return null;
                }
                if (value.Length > 32 || !IsAlphaNumeric(value))
                {
                    error = "id must be 1 to 32 letters and digits";
                    return null;
                }
                id = value.ToString();
            }
            else if (!IsExtensionName(name))
            {
                error = $"'{name}' is not a field name";
                return null;
            }
        }
        if (!anyField || id is null)
        {
            error = "the record has no id";
            return null;
        }
        return new MtaStsRecord(id);
    }

    internal static bool IsWsp(char c) => c is ' ' or '\t';

    private static bool IsAlphaNumeric(ReadOnlySpan<char> s)
    {
        foreach (char c in s)
            if (!char.IsAsciiLetterOrDigit(c))
                return false;
        return true;
    }

    /// <summary>(ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / "."): the extension names of both grammars.</summary>
    internal static bool IsExtensionName(ReadOnlySpan<char> name)
    {
        if (name.Length is 0 or > 32 || !char.IsAsciiLetterOrDigit(name[0]))
            return false;
        foreach (char c in name[1..])
            if (!char.IsAsciiLetterOrDigit(c) && c is not ('_' or '-' or '.'))
                return false;
        return true;
    }
}
