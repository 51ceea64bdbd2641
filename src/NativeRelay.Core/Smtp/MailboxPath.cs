using System.Buffers;
using System.Text;
using System.Text.Unicode;

namespace NativeRelay.Smtp;

/// <summary>Why a MAIL FROM / RCPT TO argument was rejected by <see cref="MailboxPath.Parse"/>.</summary>
public enum PathError : byte
{
    /// <summary>Valid (including the null path "&lt;&gt;").</summary>
    None,

    /// <summary>Malformed path: missing or unclosed brackets, bad local part, text glued after "&gt;", a domain-less address other than postmaster.</summary>
    Syntax,

    /// <summary>The argument does not start with the expected "FROM:" / "TO:".</summary>
    MissingPrefix,

    /// <summary>The whole path, counted with its angle brackets, is over 256 octets (RFC 5321 4.5.3.1.3).</summary>
    TooLong,

    /// <summary>The local part is over 64 octets (RFC 5321 4.5.3.1.1), quotes included.</summary>
    LocalPartTooLong,

    /// <summary>A domain is over 255 octets (RFC 5321 4.5.3.1.2).</summary>
    DomainTooLong,

    /// <summary>Empty domain, empty label, leading or trailing hyphen, label over 63 octets, bad address literal.</summary>
    BadDomain,

    /// <summary>An octet >= 0x80 in the path without SMTPUTF8 (RFC 6531); the session answers 553 5.6.7.</summary>
    NonAscii,

    /// <summary>Nothing after the prefix ("MAIL FROM:").</summary>
    Empty,
}

/// <summary>
/// Parses the reverse-path of MAIL and the forward-path of RCPT (RFC 5321 4.1.2), without allocating.
/// </summary>
/// <remarks>
/// Semantics callers must know:
/// <list type="bullet">
/// <item>The null path "&lt;&gt;" returns <see cref="PathError.None"/> with an empty address. It is only meaningful for MAIL;
///   the session must refuse an empty address for RCPT.</item>
/// <item>A domain-less address is accepted only for "postmaster" (any case, RFC 5321 4.5.1), whatever the prefix;
///   <see cref="TrySplit"/> returns false for it. The session should accept it for RCPT only.</item>
/// <item>The returned address is the raw text between the brackets minus any source route: a quoted local part keeps its
///   quotes and backslashes (<c>"a b"@example.com</c>). It is never unquoted or case-folded here.</item>
/// <item>A trailing dot in a domain ("example.com.") is rejected as <see cref="PathError.BadDomain"/>: the RFC 5321 grammar
///   has no root label, and accepting it would give two spellings of one destination.</item>
/// <item>Address literals: "[1.2.3.4]" and "[IPv6:...]" (case-insensitive tag, "::" may stand for one or more zero groups).
///   General literals with other tags are refused as BadDomain: none are registered.</item>
/// <item>Length limits are checked after syntax: local part 64, domain 255, whole path 256 octets counted with its brackets
///   (a bare address counts as if bracketed). Because "&lt;x@" + 255 + "&gt;" is already 259, a 255-octet domain always ends
///   as <see cref="PathError.TooLong"/>; <see cref="PathError.DomainTooLong"/> is reported for 256 and up.</item>
/// <item>With SMTPUTF8 (<c>allowUtf8</c>), well-formed UTF-8 is allowed in the local part (atoms and quoted strings) and in
///   domain labels; malformed UTF-8 is <see cref="PathError.Syntax"/>. The 63-octet label limit is applied to ASCII labels only,
///   because a U-label's real length is that of its A-label after IDNA conversion, which is the router's job.</item>
/// <item>Parameters are returned raw, leading spaces trimmed; enumerate them with <see cref="EsmtpParameters"/>.</item>
/// </list>
/// </remarks>
public static class MailboxPath
{
    public const int MaxLocalPartLength = 64;
    public const int MaxDomainLength = 255;
    public const int MaxPathLength = 256;
    public const int MaxLabelLength = 63;

    /// <summary>The prefix of the MAIL argument.</summary>
    public static ReadOnlySpan<byte> MailFromPrefix => "FROM:"u8;

    /// <summary>The prefix of the RCPT argument.</summary>
    public static ReadOnlySpan<byte> RcptToPrefix => "TO:"u8;

    private const byte Space = (byte)' ';
    private const byte Quote = (byte)'"';
    private const byte Backslash = (byte)'\\';
    private const byte At = (byte)'@';
    private const byte Dot = (byte)'.';
    private const byte Hyphen = (byte)'-';

    // RFC 5322 atext (used by RFC 5321 Atom) plus '.', so a Dot-string is checked in one vectorised pass.
    private static ReadOnlySpan<byte> AsciiAtextOrDot =>
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~."u8;

    // RFC 5321 Let-dig / Ldh-str.
    private static ReadOnlySpan<byte> AsciiLetterDigitHyphen =>
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"u8;

    private static readonly SearchValues<byte> AtextOrDot = SearchValues.Create(AsciiAtextOrDot);
    private static readonly SearchValues<byte> AtextOrDotOrUtf8 = CreateWithNonAscii(AsciiAtextOrDot);
    private static readonly SearchValues<byte> LetterDigitHyphen = SearchValues.Create(AsciiLetterDigitHyphen);
    private static readonly SearchValues<byte> LetterDigitHyphenOrUtf8 = CreateWithNonAscii(AsciiLetterDigitHyphen);
    private static readonly SearchValues<byte> HexDigits = SearchValues.Create("0123456789ABCDEFabcdef"u8);

    /// <summary>Parses a MAIL / RCPT argument.</summary>
    /// <param name="argument">The command argument as returned by <see cref="SmtpCommandParser.Parse"/>.</param>
    /// <param name="prefix">"FROM:" or "TO:" (<see cref="MailFromPrefix"/>, <see cref="RcptToPrefix"/>); matched case-insensitively.</param>
    /// <param name="allowUtf8">The client asked for SMTPUTF8 (RFC 6531).</param>
    /// <param name="allowBareAddress">Accept "FROM:a@b" without angle brackets (for broken clients, off by default).</param>
    /// <param name="address">The mailbox, source route removed; empty for "&lt;&gt;" and on error.</param>
    /// <param name="parameters">The raw ESMTP parameters after the path; empty if none or on error.</param>
    public static PathError Parse(ReadOnlySpan<byte> argument, ReadOnlySpan<byte> prefix, bool allowUtf8, bool allowBareAddress,
                                  out ReadOnlySpan<byte> address, out ReadOnlySpan<byte> parameters)
    {
        address = default;
        parameters = default;

        if (argument.Length < prefix.Length || !Ascii.EqualsIgnoreCase(argument[..prefix.Length], prefix))
        {
            return PathError.MissingPrefix;
        }

        // Many clients send "FROM: <a@b>"; RFC 5321 has no space there, but refusing it helps nobody.
        ReadOnlySpan<byte> rest = argument[prefix.Length..].TrimStart(Space);
        if (rest.IsEmpty)
        {
            return PathError.Empty;
        }

        ReadOnlySpan<byte> path;
        ReadOnlySpan<byte> afterPath;
        int pathOctets;
        if (rest[0] == (byte)'<')
        {
            int close = IndexOfOutsideQuotes(rest[1..], (byte)'>');
            if (close < 0)
            {
                return PathError.Syntax;
            }

            path = rest.Slice(1, close);
            afterPath = rest[(close + 2)..];
            pathOctets = close + 2;
        }
        else
        {
            if (!allowBareAddress)
            {
                return PathError.Syntax;
            }

            int end = IndexOfOutsideQuotes(rest, Space);
            if (end < 0)
            {
                end = rest.Length;
            }

            path = rest[..end];
            afterPath = rest[end..];
            pathOctets = end + 2;
        }

        // Parameters are separated from the path by SP; "<a@b>SIZE=1" is not a path followed by a parameter.
        if (!afterPath.IsEmpty && afterPath[0] != Space)
        {
            return PathError.Syntax;
        }

        if (path.IsEmpty)
        {
            parameters = afterPath.TrimStart(Space);
            return PathError.None;
        }

        // Vectorised check first: nearly every path is ASCII, and then nothing below needs to think about UTF-8 validity.
        if (!Ascii.IsValid(path))
        {
            if (!allowUtf8)
            {
                return PathError.NonAscii;
            }

            if (!Utf8.IsValid(path))
            {
                return PathError.Syntax;
            }
        }

        ReadOnlySpan<byte> mailbox = path;
        if (path[0] == At)
        {
            PathError routeError = SkipSourceRoute(path, allowUtf8, out mailbox);
            if (routeError != PathError.None)
            {
                return routeError;
            }
        }

        PathError mailboxError = ValidateMailbox(mailbox, allowUtf8);
        if (mailboxError != PathError.None)
        {
            return mailboxError;
        }

        if (pathOctets > MaxPathLength)
        {
            return PathError.TooLong;
        }

        address = mailbox;
        parameters = afterPath.TrimStart(Space);
        return PathError.None;
    }

    /// <summary>Splits a validated address at its last '@' (a quoted local part may itself contain '@').</summary>
    /// <returns>False when there is no domain ("postmaster", or the null path); <paramref name="localPart"/> is then the
    /// whole address and <paramref name="domain"/> empty.</returns>
    public static bool TrySplit(ReadOnlySpan<byte> address, out ReadOnlySpan<byte> localPart, out ReadOnlySpan<byte> domain)
    {
        int at = address.LastIndexOf(At);
        if (at < 0)
        {
            localPart = address;
            domain = default;
            return false;
        }

        localPart = address[..at];
        domain = address[(at + 1)..];
        return true;
    }

    /// <summary>True for the domain-less "postmaster" (any case) that every SMTP server must accept (RFC 5321 4.5.1).</summary>
    public static bool IsPostmaster(ReadOnlySpan<byte> address) => Ascii.EqualsIgnoreCase(address, "postmaster"u8);

    /// <summary>Checks a domain as it may appear in a path: sub-domains or an address literal.</summary>
    /// <returns><see cref="PathError.None"/>, <see cref="PathError.DomainTooLong"/> or <see cref="PathError.BadDomain"/>.</returns>
    public static PathError ValidateDomain(ReadOnlySpan<byte> domain, bool allowUtf8)
    {
        if (domain.IsEmpty)
        {
            return PathError.BadDomain;
        }

        if (domain.Length > MaxDomainLength)
        {
            return PathError.DomainTooLong;
        }

        if (domain[0] == (byte)'[')
        {
            return domain[^1] == (byte)']' && IsValidAddressLiteral(domain[1..^1]) ? PathError.None : PathError.BadDomain;
        }

        SearchValues<byte> allowed = allowUtf8 ? LetterDigitHyphenOrUtf8 : LetterDigitHyphen;
        ReadOnlySpan<byte> remaining = domain;
        while (true)
        {
            int dot = remaining.IndexOf(Dot);
            ReadOnlySpan<byte> label = dot < 0 ? remaining : remaining[..dot];
            if (!IsValidLabel(label, allowed))
            {
                return PathError.BadDomain;
            }

            if (dot < 0)
            {
                return PathError.None;
            }

            // A dot at the very end leaves an empty last label, which IsValidLabel refuses: no trailing dots.
            remaining = remaining[(dot + 1)..];
        }
    }

    private static bool IsValidLabel(ReadOnlySpan<byte> label, SearchValues<byte> allowed)
    {
        if (label.IsEmpty || label[0] == Hyphen || label[^1] == Hyphen || label.ContainsAnyExcept(allowed))
        {
            return false;
        }

        // Non-ASCII bytes only get here with SMTPUTF8; see the remarks on U-label length.
        return label.Length <= MaxLabelLength || !Ascii.IsValid(label);
    }

    // RFC 5321 4.1.2: Mailbox = Local-part "@" ( Domain / address-literal ), plus the bare "postmaster" of 4.1.1.3.
    private static PathError ValidateMailbox(ReadOnlySpan<byte> mailbox, bool allowUtf8)
    {
        if (mailbox.IsEmpty)
        {
            return PathError.Syntax;
        }

        int localLength;
        if (mailbox[0] == Quote)
        {
            int closingQuote = EndOfQuotedString(mailbox, allowUtf8);
            if (closingQuote < 0)
            {
                return PathError.Syntax;
            }

            localLength = closingQuote + 1;
        }
        else
        {
            // '@' is not atext, so the first '@' ends a Dot-string.
            localLength = mailbox.IndexOf(At);
            if (localLength < 0)
            {
                localLength = mailbox.Length;
            }

            if (!IsValidDotString(mailbox[..localLength], allowUtf8))
            {
                return PathError.Syntax;
            }
        }

        if (localLength == mailbox.Length)
        {
            return IsPostmaster(mailbox) ? PathError.None : PathError.Syntax;
        }

        if (mailbox[localLength] != At)
        {
            return PathError.Syntax;
        }

        if (localLength > MaxLocalPartLength)
        {
            return PathError.LocalPartTooLong;
        }

        return ValidateDomain(mailbox[(localLength + 1)..], allowUtf8);
    }

    private static bool IsValidDotString(ReadOnlySpan<byte> local, bool allowUtf8) =>
        !local.IsEmpty
        && local[0] != Dot
        && local[^1] != Dot
        && !local.ContainsAnyExcept(allowUtf8 ? AtextOrDotOrUtf8 : AtextOrDot)
        && local.IndexOf(".."u8) < 0;

    // RFC 5321 Quoted-string with qtextSMTP / quoted-pairSMTP (RFC 6531 adds UTF-8 to qtextSMTP).
    // Returns the index of the closing quote, or -1 if the string is unterminated or holds a forbidden octet.
    private static int EndOfQuotedString(ReadOnlySpan<byte> text, bool allowUtf8)
    {
        for (int i = 1; i < text.Length; i++)
        {
            byte c = text[i];
            if (c == Quote)
            {
                return i;
            }

            if (c == Backslash)
            {
                i++;
                if (i == text.Length || text[i] < 32 || text[i] > 126)
                {
                    return -1;
                }

                continue;
            }

            bool isQtext = c is >= 32 and <= 126 || (c >= 0x80 && allowUtf8);
            if (!isQtext)
            {
                return -1;
            }
        }

        return -1;
    }

    // Finds `terminator` but skips over quoted strings, where '>' and SP are ordinary characters.
    // Jumps between the interesting bytes with vectorised searches instead of looking at every byte.
    private static int IndexOfOutsideQuotes(ReadOnlySpan<byte> text, byte terminator)
    {
        int offset = 0;
        while (true)
        {
            int found = text[offset..].IndexOfAny(terminator, Quote);
            if (found < 0)
            {
                return -1;
            }

            offset += found;
            if (text[offset] == terminator)
            {
                return offset;
            }

            // Inside a quoted string: skip escaped pairs until the closing quote.
            offset++;
            while (true)
            {
                found = text[offset..].IndexOfAny(Quote, Backslash);
                if (found < 0)
                {
                    return -1;
                }

                offset += found;
                if (text[offset] == Quote)
                {
                    offset++;
                    break;
                }

                offset += 2;
                if (offset > text.Length)
                {
                    return -1;
                }
            }
        }
    }

    // RFC 5321 4.1.2: A-d-l = At-domain *( "," At-domain ) ":" . The route must be syntactically valid but is then
    // ignored (RFC 5321 C: "servers MUST ignore the route"), so only the mailbox after ':' is returned.
    private static PathError SkipSourceRoute(ReadOnlySpan<byte> path, bool allowUtf8, out ReadOnlySpan<byte> mailbox)
    {
        mailbox = default;
        ReadOnlySpan<byte> remaining = path;
        while (true)
        {
            if (remaining.IsEmpty || remaining[0] != At)
            {
                return PathError.Syntax;
            }

            remaining = remaining[1..];

            // An IPv6 literal contains ':', so a bracketed domain ends at ']' rather than at the first ':'.
            int domainEnd = !remaining.IsEmpty && remaining[0] == (byte)'['
                ? remaining.IndexOf((byte)']') + 1
                : remaining.IndexOfAny((byte)',', (byte)':');
            if (domainEnd <= 0 || domainEnd == remaining.Length)
            {
                return domainEnd == 0 ? PathError.BadDomain : PathError.Syntax;
            }

            PathError domainError = ValidateDomain(remaining[..domainEnd], allowUtf8);
            if (domainError != PathError.None)
            {
                return domainError;
            }

            byte separator = remaining[domainEnd];
            remaining = remaining[(domainEnd + 1)..];
            if (separator == (byte)':')
            {
                mailbox = remaining;
                return PathError.None;
            }

            if (separator != (byte)',')
            {
                return PathError.Syntax;
            }
        }
    }

    // RFC 5321 4.1.3: IPv4-address-literal / "IPv6:" IPv6-addr. General-address-literal needs a registered tag; there is none.
    private static bool IsValidAddressLiteral(ReadOnlySpan<byte> literal)
    {
        ReadOnlySpan<byte> ipv6Tag = "IPv6:"u8;
        if (literal.Length > ipv6Tag.Length && Ascii.EqualsIgnoreCase(literal[..ipv6Tag.Length], ipv6Tag))
        {
            return IsValidIPv6(literal[ipv6Tag.Length..]);
        }

        return IsValidIPv4(literal);
    }

    private static bool IsValidIPv4(ReadOnlySpan<byte> text)
    {
        for (int octet = 0; octet < 4; octet++)
        {
            int digits = 0;
            int value = 0;
            while (digits < text.Length && digits < 4 && char.IsAsciiDigit((char)text[digits]))
            {
                value = (value * 10) + (text[digits] - '0');
                digits++;
            }

            if (digits is 0 or > 3 || value > 255)
            {
                return false;
            }

            text = text[digits..];
            if (octet < 3)
            {
                if (text.IsEmpty || text[0] != Dot)
                {
                    return false;
                }

                text = text[1..];
            }
        }

        return text.IsEmpty;
    }

    // Groups of 1-4 hex digits separated by ':', at most one "::", an optional dotted IPv4 tail worth two groups;
    // eight groups without "::", at most seven with it (RFC 4291 2.2 lets "::" stand for a single zero group).
    private static bool IsValidIPv6(ReadOnlySpan<byte> text)
    {
        int groups = 0;
        bool sawDoubleColon = false;
        int i = 0;

        if (text.StartsWith("::"u8))
        {
            sawDoubleColon = true;
            i = 2;
            if (i == text.Length)
            {
                return true;
            }
        }

        while (true)
        {
            int tokenEnd = text[i..].IndexOf((byte)':');
            tokenEnd = tokenEnd < 0 ? text.Length : i + tokenEnd;
            ReadOnlySpan<byte> token = text[i..tokenEnd];

            if (token.Contains(Dot))
            {
                // The IPv4 tail must be last.
                if (tokenEnd != text.Length || !IsValidIPv4(token))
                {
                    return false;
                }

                groups += 2;
                break;
            }

            if (token.IsEmpty || token.Length > 4 || token.ContainsAnyExcept(HexDigits))
            {
                return false;
            }

            groups++;
            if (tokenEnd == text.Length)
            {
                break;
            }

            i = tokenEnd + 1;
            if (i < text.Length && text[i] == (byte)':')
            {
                if (sawDoubleColon)
                {
                    return false;
                }

                sawDoubleColon = true;
                i++;
                if (i == text.Length)
                {
                    break;
                }
            }
            else if (i == text.Length)
            {
                // A single trailing ':'.
                return false;
            }
        }

        return sawDoubleColon ? groups <= 7 : groups == 8;
    }

    private static SearchValues<byte> CreateWithNonAscii(ReadOnlySpan<byte> ascii)
    {
        // Runs once per set at type initialisation; the per-command checks then stay single vectorised calls.
        byte[] values = new byte[ascii.Length + 128];
        ascii.CopyTo(values);
        for (int b = 0x80; b <= 0xFF; b++)
        {
            values[ascii.Length + b - 0x80] = (byte)b;
        }

        return SearchValues.Create(values);
    }
}
