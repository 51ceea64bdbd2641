using System.Text;
using NativeRelay.Message;

namespace NativeRelay.MailAuth.Dmarc;

/// <summary>
/// The RFC5322.From domain DMARC is about (RFC 7489 3.1, 6.6.1), found with the zero-copy
/// header scanner. A message must have exactly one From field with exactly one address in it;
/// otherwise there is no single domain to evaluate and the <see cref="Problem"/> says why (the
/// evaluator reports it as a DMARC permerror: see <see cref="DmarcEvaluator"/>).
/// </summary>
public readonly record struct FromDomain(string? Domain, string? Problem)
{
    /// <summary>Finds the From domain (lower case, A-labels) in a message's header section.</summary>
    public static FromDomain Find(ReadOnlySpan<byte> message)
    {
        var scanner = new HeaderScanner(message);
        HeaderField from = default;
        int count = 0;
        while (scanner.TryReadNext(out var field))
        {
            if (!field.NameEquals(message, "From"u8))
                continue;
            if (++count == 1)
                from = field;
        }
        if (count == 0)
            return new FromDomain(null, "no From field");
        if (count > 1)
            return new FromDomain(null, $"{count} From fields");
        string value = Encoding.UTF8.GetString(from.RawValue(message));
        var addresses = Addresses(value);
        if (addresses.Count == 0)
            return new FromDomain(null, "no address in From");
        if (addresses.Count > 1)
            return new FromDomain(null, $"{addresses.Count} addresses in From");
        string address = addresses[0];
        int at = address.LastIndexOf('@');
        if (at <= 0 || at == address.Length - 1)
            return new FromDomain(null, "the From address has no domain");
        string domain = address[(at + 1)..].Trim().TrimEnd('.');
        if (domain.StartsWith('['))
            return new FromDomain(null, "the From domain is an address literal");
        string? normalized = PublicSuffixList.Normalize(domain, null);
        if (normalized is null || !Spf.SpfEvaluator.IsDomainName(normalized))
            return new FromDomain(null, $"'{domain}' is not a domain name");
        return new FromDomain(normalized, null);
    }

    /// <summary>
    /// The addr-specs of an address-list (RFC 5322 3.4): comments and quoted strings skipped, the
    /// text inside angle brackets taken when there is one, group names and empty groups dropped.
    /// </summary>
    internal static List<string> Addresses(string value)
    {
        var result = new List<string>();
        var plain = new StringBuilder();   // the mailbox outside comments (quoted strings kept as-is)
        string? angle = null;
        int depth = 0;
        bool quoted = false, inAngle = false;
        var current = new StringBuilder();
        for (int i = 0; i < value.Length; i++)
        {
            char c = value[i];
            if (quoted)
            {
                if (c == '\\' && i + 1 < value.Length)
                    i++;
                else if (c == '"')
                    quoted = false;
                plain.Append('x'); // a display name or quoted local part: not an address separator
                continue;
            }
            if (depth > 0)
            {
                if (c == '\\')
                    i++;
                else if (c == '(')
                    depth++;
                else if (c == ')')
                    depth--;
                continue;
            }
            switch (c)
            {
                case '(':
                    depth++;
                    continue;
                case '"':
                    quoted = true;
                    if (inAngle)
                        current.Append('"');
                    continue;
                case '<':
                    inAngle = true;
                    current.Clear();
                    continue;
                case '>':
                    inAngle = false;
                    angle = current.ToString();
                    continue;
                case ':' when !inAngle:
                    plain.Clear(); // "group:" - what follows are the group's members
                    continue;
                case ',' or ';' when !inAngle:
                    Flush();
                    continue;
            }
            if (inAngle)
                current.Append(c);
            else
                plain.Append(c);
        }
        Flush();
        return result;

        void Flush()
        {
            string address = (angle ?? plain.ToString()).Trim(" \t\r\n".ToCharArray());
            // A bare addr-spec: take the whole token (quoted local parts were replaced above, which is enough to find '@').
            if (angle is null)
                address = string.Concat(address.Where(ch => !char.IsWhiteSpace(ch)));
            if (address.Length > 0 && address.Contains('@'))
                result.Add(address);
            plain.Clear();
            current.Clear();
            angle = null;
        }
    }
}
