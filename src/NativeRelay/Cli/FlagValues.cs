using System.Globalization;
using System.Net;
using NativeRelay.Config;

namespace NativeRelay.Cli;

/// <summary>
/// Parsers for the values of flags, given the flag's name and its text. Every mistake is a
/// one-line <see cref="ConfigException"/> naming the flag; <see cref="Usage"/> prints it with the
/// verb and its --help, exit code 2.
/// </summary>
internal static class FlagValues
{
    /// <summary>A whole number in [min, max].</summary>
    public static long Long(string flag, string text, long min, long max)
    {
        if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n < min || n > max)
            throw new ConfigException($"{flag} must be a whole number from {min} to {max} (got '{text}')");
        return n;
    }

    public static int Int(string flag, string text, int min, int max) => (int)Long(flag, text, min, max);

    /// <summary>A decimal number, at least 0 (more than 0 when <paramref name="positive"/>), at most <paramref name="max"/>.</summary>
    public static double Double(string flag, string text, double max, bool positive = false)
    {
        if (!double.TryParse(text, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double d) || d < 0 || d > max)
            throw new ConfigException($"{flag} must be a number from 0 to {max} (got '{text}')");
        if (positive && d == 0)
            throw new ConfigException($"{flag} must be positive");
        return d;
    }

    /// <summary>Seconds, more than 0, at most <paramref name="max"/>.</summary>
    public static TimeSpan Seconds(string flag, string text, double max) =>
        TimeSpan.FromSeconds(Double(flag, text, max, positive: true));

    /// <summary>A size in bytes: digits with an optional k/K (KiB) or m/M (MiB) suffix.</summary>
    public static long Size(string flag, string text, long min, long max)
    {
        if (!TryParseSize(text, out long n) || n < min || n > max)
            throw new ConfigException($"{flag} must be a size from {min} to {max} bytes, e.g. 1024, 100k or 1m (got '{text}')");
        return n;
    }

    internal static bool TryParseSize(string text, out long bytes)
    {
        bytes = 0;
        if (text.Length == 0)
            return false;
        long multiplier = 1;
        char last = text[^1];
        if (last is 'k' or 'K')
            multiplier = 1024;
        else if (last is 'm' or 'M')
            multiplier = 1024 * 1024;
        var digits = multiplier == 1 ? text : text[..^1];
        if (!long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n > long.MaxValue / multiplier)
            return false;
        bytes = n * multiplier;
        return true;
    }

    /// <summary>An SMTP reply code usable as a final answer: 2xx, 4xx or 5xx.</summary>
    public static int ReplyCode(string flag, string text)
    {
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int code)
            || code is < 200 or > 599 || code / 100 == 3)
            throw new ConfigException($"{flag} must be an SMTP reply code 200-299, 400-499 or 500-599 (got '{text}')");
        return code;
    }

    /// <summary>IP:PORT with an explicit port (0 allowed: any free port).</summary>
    public static IPEndPoint ListenEndPoint(string flag, string text)
    {
        if (IPEndPoint.TryParse(text, out var ep) && HasPort(text))
            return ep;
        throw new ConfigException($"{flag} must be IP:PORT, e.g. 127.0.0.1:2526 or [::1]:2526 (got '{text}')");
    }

    /// <summary>HOST:PORT; the host may be a name (resolved when the tool starts) or an IP literal.</summary>
    public static (string Host, int Port) HostPort(string flag, string text)
    {
        if (TryParseHostPort(text, out var host, out int port))
            return (host, port);
        throw new ConfigException($"{flag} must be HOST:PORT, e.g. 127.0.0.1:2525 or localhost:2525 (got '{text}')");
    }

    internal static bool TryParseHostPort(string text, out string host, out int port)
    {
        host = "";
        port = 0;
        if (IPEndPoint.TryParse(text, out var ep) && ep.Port != 0 && HasPort(text))
        {
            host = ep.Address.ToString();
            port = ep.Port;
            return true;
        }
        int colon = text.LastIndexOf(':');
        if (colon <= 0 || !int.TryParse(text.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out port)
            || port is <= 0 or > 65535)
            return false;
        host = text[..colon];
        return RelaySettings.IsValidHostname(host);
    }

    private static bool HasPort(string text)
    {
        int colon = text.LastIndexOf(':');
        int bracket = text.LastIndexOf(']');
        return colon > 0 && colon > bracket && (bracket >= 0 || text.IndexOf(':') == colon);
    }

    /// <summary>A mailbox local@domain without brackets, plain ASCII.</summary>
    public static string Address(string flag, string text)
    {
        int at = text.LastIndexOf('@');
        if (at <= 0 || at == text.Length - 1 || text.Any(c => c <= ' ' || c > '~' || c is '<' or '>'))
            throw new ConfigException($"{flag} must be an address like user@example.com (got '{text}')");
        return text;
    }

    /// <summary>A host name (letters, digits, dots and hyphens).</summary>
    public static string HostName(string flag, string text) =>
        RelaySettings.IsValidHostname(text) ? text : throw new ConfigException($"{flag} must be a host name (got '{text}')");
}
