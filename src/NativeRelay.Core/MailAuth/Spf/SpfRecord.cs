using System.Net;
using System.Net.Sockets;

namespace NativeRelay.MailAuth.Spf;

public enum SpfMechanismKind : byte
{
    All,
    Include,
    A,
    Mx,
    Ptr,
    Ip4,
    Ip6,
    Exists,
}

/// <summary>
/// One directive of a record: qualifier, mechanism, its domain-spec (a macro-string, expanded at
/// evaluation; null means the current domain) and its network or CIDR lengths.
/// </summary>
public sealed record SpfMechanism(SpfResult Qualifier, SpfMechanismKind Kind, string? DomainSpec, IPAddress? Network, int Cidr4, int Cidr6, string Text)
{
    /// <summary>Whether evaluating it costs a DNS-querying term (RFC 7208 4.6.4).</summary>
    public bool QueriesDns => Kind is SpfMechanismKind.Include or SpfMechanismKind.A or SpfMechanismKind.Mx or SpfMechanismKind.Ptr or SpfMechanismKind.Exists;
}

/// <summary>
/// A parsed SPF record (RFC 7208 sections 4.5, 4.6, 5, 6 and 12): "v=spf1" followed by
/// directives and modifiers. The parser is strict, because a record with a syntax error is a
/// <c>permerror</c> as a whole (4.6): unknown mechanisms, a bad IP network or CIDR length, a
/// malformed macro, a repeated <c>redirect</c> or <c>exp</c> all fail. Unknown modifiers are
/// kept out of the record but must still be well formed (6).
/// </summary>
public sealed class SpfRecord
{
    private SpfRecord(IReadOnlyList<SpfMechanism> mechanisms, string? redirect, string? explanation)
    {
        Mechanisms = mechanisms;
        Redirect = redirect;
        Explanation = explanation;
    }

    public IReadOnlyList<SpfMechanism> Mechanisms { get; }

    /// <summary>The <c>redirect=</c> domain-spec, or null.</summary>
    public string? Redirect { get; }

    /// <summary>The <c>exp=</c> domain-spec, or null.</summary>
    public string? Explanation { get; }

    /// <summary>RFC 7208 4.5: a record is one whose text is "v=spf1" alone or followed by a space (case-insensitive).</summary>
    public static bool IsSpfRecord(string text) =>
        text.StartsWith("v=spf1", StringComparison.OrdinalIgnoreCase) && (text.Length == 6 || text[6] == ' ');

    /// <summary>Parses a record; false with the problem when its syntax is wrong (a permerror).</summary>
    public static bool TryParse(string text, out SpfRecord record, out string? error)
    {
        record = null!;
        error = null;
        if (!IsSpfRecord(text))
        {
            error = "not an SPF record";
            return false;
        }
        var mechanisms = new List<SpfMechanism>();
        string? redirect = null, explanation = null;
        foreach (var term in text[6..].Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (!TryParseTerm(term, mechanisms, ref redirect, ref explanation, out error))
            {
                error = $"'{term}': {error}";
                return false;
            }
        }
        record = new SpfRecord(mechanisms, redirect, explanation);
        return true;
    }

    private static bool TryParseTerm(string term, List<SpfMechanism> mechanisms, ref string? redirect, ref string? explanation, out string? error)
    {
        error = null;
        // A modifier is name "=" macro-string, the name being ALPHA *(ALPHA / DIGIT / "-" / "_" / ".").
        int nameEnd = 0;
        while (nameEnd < term.Length && (char.IsAsciiLetterOrDigit(term[nameEnd]) || term[nameEnd] is '-' or '_' or '.'))
            nameEnd++;
        if (nameEnd > 0 && nameEnd < term.Length && term[nameEnd] == '=' && char.IsAsciiLetter(term[0]))
        {
            string name = term[..nameEnd];
            string value = term[(nameEnd + 1)..];
            if (!SpfMacro.IsValid(value, allowExplanationLetters: false, out error))
                return false;
            if (name.Equals("redirect", StringComparison.OrdinalIgnoreCase))
                return SetOnce(ref redirect, "redirect", value, out error);
            if (name.Equals("exp", StringComparison.OrdinalIgnoreCase))
                return SetOnce(ref explanation, "exp", value, out error);
            return true; // unknown modifiers are ignored (RFC 7208 6)
        }

        var qualifier = SpfResult.Pass;
        int at = 0;
        switch (term[0])
        {
            case '+': qualifier = SpfResult.Pass; at = 1; break;
            case '-': qualifier = SpfResult.Fail; at = 1; break;
            case '~': qualifier = SpfResult.SoftFail; at = 1; break;
            case '?': qualifier = SpfResult.Neutral; at = 1; break;
        }
        string body = term[at..];
        int colon = body.IndexOf(':');
        int slash = body.IndexOf('/');
        int nameLength = colon >= 0 ? colon : slash >= 0 ? slash : body.Length;
        string mechanism = body[..nameLength].ToLowerInvariant();
        string rest = body[nameLength..];
        string? argument = rest.StartsWith(':') ? rest[1..] : null;
        switch (mechanism)
        {
            case "all":
                if (rest.Length != 0)
                    return Fail("all takes no argument", out error);
                mechanisms.Add(new SpfMechanism(qualifier, SpfMechanismKind.All, null, null, 32, 128, term));
                return true;
            case "include" or "exists":
                if (argument is null || !SpfMacro.IsValid(argument, false, out error) || !IsDomainSpec(argument, out error))
                    return Fail(error ?? $"{mechanism} needs a domain", out error);
                mechanisms.Add(new SpfMechanism(qualifier, mechanism == "include" ? SpfMechanismKind.Include : SpfMechanismKind.Exists, argument, null, 32, 128, term));
                return true;
            case "a" or "mx":
            {
                // [":" domain-spec] [dual-cidr-length]; the CIDR part is the trailing "/N", "//N" or "/N//M".
                string spec = rest.StartsWith(':') ? rest[1..] : rest;
                if (!rest.StartsWith(':') && rest.Length > 0 && rest[0] != '/')
                    return Fail("unknown mechanism", out error);
                if (!SplitDualCidr(ref spec, out int cidr4, out int cidr6, out error))
                    return false;
                string? domain = null;
                if (rest.StartsWith(':'))
                {
                    if (spec.Length == 0 || !SpfMacro.IsValid(spec, false, out error) || !IsDomainSpec(spec, out error))
                        return Fail(error ?? "empty domain", out error);
                    domain = spec;
                }
                else if (spec.Length != 0)
                {
                    return Fail("unknown mechanism", out error);
                }
                mechanisms.Add(new SpfMechanism(qualifier, mechanism == "a" ? SpfMechanismKind.A : SpfMechanismKind.Mx, domain, null, cidr4, cidr6, term));
                return true;
            }
            case "ptr":
            {
                string? domain = null;
                if (argument is not null)
                {
                    if (argument.Length == 0 || !SpfMacro.IsValid(argument, false, out error) || !IsDomainSpec(argument, out error))
                        return Fail(error ?? "empty domain", out error);
                    domain = argument;
                }
                else if (rest.Length != 0)
                {
                    return Fail("unknown mechanism", out error);
                }
                mechanisms.Add(new SpfMechanism(qualifier, SpfMechanismKind.Ptr, domain, null, 32, 128, term));
                return true;
            }
            case "ip4" or "ip6":
            {
                if (argument is null)
                    return Fail($"{mechanism} needs a network", out error);
                bool six = mechanism == "ip6";
                int length = six ? 128 : 32;
                string address = argument;
                int cut = argument.IndexOf('/');
                if (cut >= 0)
                {
                    address = argument[..cut];
                    if (!TryCidr(argument[(cut + 1)..], six ? 128 : 32, out length))
                        return Fail("bad CIDR length", out error);
                }
                if (!(six ? TryIp6(address, out var ip) : TryIp4(address, out ip)))
                    return Fail($"bad {mechanism} address", out error);
                mechanisms.Add(new SpfMechanism(qualifier, six ? SpfMechanismKind.Ip6 : SpfMechanismKind.Ip4, null, ip, six ? 32 : length, six ? length : 128, term));
                return true;
            }
            default:
                return Fail("unknown mechanism", out error);
        }
    }

    /// <summary>redirect and exp: a domain-spec each, at most once (RFC 7208 6).</summary>
    private static bool SetOnce(ref string? slot, string name, string value, out string? error)
    {
        if (slot is not null)
            return Fail($"{name} appears twice", out error);
        if (!IsDomainSpec(value, out error))
            return false;
        slot = value;
        return true;
    }

    private static bool Fail(string message, out string? error)
    {
        error = message;
        return false;
    }

    /// <summary>Takes a trailing dual-cidr-length ("/24", "//64", "/24//64") off a domain-spec.</summary>
    private static bool SplitDualCidr(ref string spec, out int cidr4, out int cidr6, out string? error)
    {
        cidr4 = 32;
        cidr6 = 128;
        error = null;
        int six = spec.LastIndexOf("//", StringComparison.Ordinal);
        if (six >= 0 && IsDigits(spec.AsSpan(six + 2)))
        {
            if (!TryCidr(spec[(six + 2)..], 128, out cidr6))
                return Fail("bad IPv6 CIDR length", out error);
            spec = spec[..six];
        }
        int four = spec.LastIndexOf('/');
        if (four >= 0 && IsDigits(spec.AsSpan(four + 1)))
        {
            if (!TryCidr(spec[(four + 1)..], 32, out cidr4))
                return Fail("bad IPv4 CIDR length", out error);
            spec = spec[..four];
        }
        else if (spec.EndsWith('/'))
        {
            return Fail("bad CIDR length", out error);
        }
        return true;
    }

    private static bool IsDigits(ReadOnlySpan<char> text) => text.Length > 0 && !text.ContainsAnyExceptInRange('0', '9');

    /// <summary>RFC 7208 12: a CIDR length is decimal without leading zeros, at most 32 (IPv4) or 128 (IPv6).</summary>
    private static bool TryCidr(string text, int max, out int length)
    {
        length = 0;
        if (!IsDigits(text) || (text.Length > 1 && text[0] == '0') || text.Length > 3)
            return false;
        length = int.Parse(text, System.Globalization.CultureInfo.InvariantCulture);
        return length <= max;
    }

    /// <summary>Dotted-quad only (IPAddress.Parse would take "1" or "0x7f.1" too).</summary>
    private static bool TryIp4(string text, out IPAddress address)
    {
        address = IPAddress.None;
        var parts = text.Split('.');
        if (parts.Length != 4)
            return false;
        foreach (var part in parts)
            if (!IsDigits(part) || part.Length > 3 || int.Parse(part, System.Globalization.CultureInfo.InvariantCulture) > 255)
                return false;
        return IPAddress.TryParse(text, out address!) && address.AddressFamily == AddressFamily.InterNetwork;
    }

    private static bool TryIp6(string text, out IPAddress address)
    {
        address = IPAddress.None;
        return text.Contains(':') && !text.Contains('%') && !text.Contains('[')
               && IPAddress.TryParse(text, out address!) && address.AddressFamily == AddressFamily.InterNetworkV6;
    }

    /// <summary>
    /// domain-spec = macro-string domain-end, domain-end = ("." toplabel ["."]) / macro-expand
    /// (RFC 7208 7.1). A spec ending in a macro is checked once expanded.
    /// </summary>
    private static bool IsDomainSpec(string spec, out string? error)
    {
        error = null;
        if (spec.EndsWith('}') || spec.EndsWith("%%") || spec.EndsWith("%_") || spec.EndsWith("%-"))
            return true;
        string name = spec.EndsWith('.') ? spec[..^1] : spec;
        int dot = name.LastIndexOf('.');
        if (dot < 0)
            return Fail("domain needs a dot and a top-level label", out error);
        if (!IsTopLabel(name.AsSpan(dot + 1)))
            return Fail("bad top-level label", out error);
        return true;
    }

    /// <summary>toplabel: letters, digits and inner hyphens, not all digits (RFC 7208 7.1).</summary>
    internal static bool IsTopLabel(ReadOnlySpan<char> label)
    {
        if (label.Length == 0 || label.Length > 63 || label[0] == '-' || label[^1] == '-')
            return false;
        bool letter = false;
        foreach (char c in label)
        {
            if (char.IsAsciiLetter(c))
                letter = true;
            else if (!char.IsAsciiDigit(c) && c != '-')
                return false;
        }
        return letter || label.Contains('-');
    }
}
