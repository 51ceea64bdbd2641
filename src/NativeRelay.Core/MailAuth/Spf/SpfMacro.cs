using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace NativeRelay.MailAuth.Spf;

/// <summary>What the macro letters of RFC 7208 section 7.2 stand for in one check.</summary>
public sealed class SpfMacroContext
{
    public SpfMacroContext(IPAddress ip, string sender, string domain, string helo)
    {
        Ip = ip;
        Sender = sender;
        Domain = domain;
        Helo = helo;
        int at = sender.LastIndexOf('@');
        LocalPart = at > 0 ? sender[..at] : "postmaster";
        SenderDomain = at >= 0 ? sender[(at + 1)..] : sender;
    }

    public IPAddress Ip { get; }
    public string Sender { get; }
    public string LocalPart { get; }
    public string SenderDomain { get; }
    /// <summary>The current domain (%{d}): changes with include and redirect.</summary>
    public string Domain { get; init; }
    public string Helo { get; }
    /// <summary>%{p}: the validated name of the client, found by the evaluator when a macro asks for it.</summary>
    public string ValidatedName { get; set; } = "unknown";
    /// <summary>%{r}: this relay's name (explanations only).</summary>
    public string ReceiverName { get; init; } = "unknown";
    /// <summary>%{t}: seconds since the epoch (explanations only).</summary>
    public long Timestamp { get; init; }

    public SpfMacroContext WithDomain(string domain) => new(Ip, Sender, domain, Helo)
    {
        ValidatedName = ValidatedName,
        ReceiverName = ReceiverName,
        Timestamp = Timestamp,
    };
}

/// <summary>
/// Macro-strings (RFC 7208 section 7): <c>%{letter digits r delimiters}</c>, <c>%%</c>, <c>%_</c>,
/// <c>%-</c>; an upper-case letter URL-escapes its value. Checked when a record is parsed (a bad
/// macro makes the record a permerror) and expanded while it is evaluated.
/// </summary>
public static class SpfMacro
{
    private const string Delimiters = ".-+,/_=";

    /// <summary>Whether <paramref name="text"/> is a macro-string (c, r and t only in explanations).</summary>
    public static bool IsValid(string text, bool allowExplanationLetters, out string? error)
    {
        error = null;
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (c != '%')
            {
                // macro-literal = %x21-24 / %x26-7E (and SP inside explanations)
                if (c is < '!' or > '~' && !(allowExplanationLetters && c == ' '))
                {
                    error = "a character outside printable ASCII";
                    return false;
                }
                continue;
            }
            if (i + 1 >= text.Length)
            {
                error = "a lone '%'";
                return false;
            }
            char next = text[++i];
            if (next is '%' or '_' or '-')
                continue;
            if (next != '{')
            {
                error = $"'%{next}' is not a macro";
                return false;
            }
            int close = text.IndexOf('}', i);
            if (close < 0 || !TryParseExpand(text.AsSpan(i + 1, close - i - 1), allowExplanationLetters, out _, out _, out _, out _))
            {
                error = "a malformed macro";
                return false;
            }
            i = close;
        }
        return true;
    }

    private static bool TryParseExpand(ReadOnlySpan<char> body, bool allowExplanationLetters, out char letter, out int digits, out bool reverse, out string delimiters)
    {
        letter = '\0';
        digits = 0;
        reverse = false;
        delimiters = ".";
        if (body.Length == 0)
            return false;
        letter = body[0];
        string letters = allowExplanationLetters ? "slodiphvcrt" : "slodiphv";
        if (!letters.Contains(char.ToLowerInvariant(letter)))
            return false;
        int i = 1;
        int start = i;
        while (i < body.Length && char.IsAsciiDigit(body[i]))
            i++;
        if (i > start)
        {
            if (!int.TryParse(body[start..i], NumberStyles.None, CultureInfo.InvariantCulture, out digits) || digits == 0)
                return false; // RFC 7208 7.1: the number must be nonzero
        }
        if (i < body.Length && (body[i] is 'r' or 'R'))
        {
            reverse = true;
            i++;
        }
        if (i < body.Length)
        {
            foreach (char d in body[i..])
                if (!Delimiters.Contains(d))
                    return false;
            delimiters = body[i..].ToString();
        }
        return true;
    }

    /// <summary>Expands a macro-string that <see cref="IsValid"/> accepted.</summary>
    public static string Expand(string text, SpfMacroContext context, bool explanation = false)
    {
        if (!text.Contains('%'))
            return text;
        var result = new StringBuilder(text.Length + 32);
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (c != '%')
            {
                result.Append(c);
                continue;
            }
            char next = text[++i];
            switch (next)
            {
                case '%': result.Append('%'); continue;
                case '_': result.Append(' '); continue;
                case '-': result.Append("%20"); continue;
            }
            int close = text.IndexOf('}', i);
            TryParseExpand(text.AsSpan(i + 1, close - i - 1), explanation, out char letter, out int digits, out bool reverse, out string delimiters);
            string value = Value(char.ToLowerInvariant(letter), context);
            value = Transform(value, digits, reverse, delimiters);
            if (char.IsAsciiLetterUpper(letter))
                value = Uri.EscapeDataString(value);
            result.Append(value);
            i = close;
        }
        return result.ToString();
    }

    private static string Value(char letter, SpfMacroContext context) => letter switch
    {
        's' => context.Sender,
        'l' => context.LocalPart,
        'o' => context.SenderDomain,
        'd' => context.Domain,
        'i' => DottedIp(context.Ip),
        'p' => context.ValidatedName,
        'v' => context.Ip.AddressFamily == AddressFamily.InterNetworkV6 ? "ip6" : "in-addr",
        'h' => context.Helo,
        'c' => context.Ip.ToString(),
        'r' => context.ReceiverName,
        't' => context.Timestamp.ToString(CultureInfo.InvariantCulture),
        _ => "",
    };

    /// <summary>%{i}: IPv4 dotted; IPv6 as 32 dot-separated nibbles (RFC 7208 7.3).</summary>
    internal static string DottedIp(IPAddress ip)
    {
        if (ip.AddressFamily != AddressFamily.InterNetworkV6)
            return ip.ToString();
        Span<byte> bytes = stackalloc byte[16];
        ip.TryWriteBytes(bytes, out _);
        var text = new StringBuilder(63);
        foreach (byte b in bytes)
        {
            if (text.Length > 0)
                text.Append('.');
            text.Append("0123456789abcdef"[b >> 4]).Append('.').Append("0123456789abcdef"[b & 15]);
        }
        return text.ToString();
    }

    /// <summary>Split on the delimiters, reverse if asked, keep the rightmost N parts, join with ".".</summary>
    private static string Transform(string value, int digits, bool reverse, string delimiters)
    {
        if (digits == 0 && !reverse && delimiters == ".")
            return value;
        var parts = value.Split(delimiters.ToCharArray());
        if (reverse)
            Array.Reverse(parts);
        int skip = digits > 0 && digits < parts.Length ? parts.Length - digits : 0;
        return string.Join('.', parts, skip, parts.Length - skip);
    }
}
