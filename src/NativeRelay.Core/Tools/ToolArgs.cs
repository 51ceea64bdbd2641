using System.Globalization;
using System.Net;
using NativeRelay.Config;

namespace NativeRelay.Tools;

/// <summary>
/// Walks the "--flag value" / "--flag=value" arguments of the tool verbs (blast, sink, bench).
/// Every mistake is a one-line <see cref="ConfigException"/> naming the flag, which the
/// executable prints with exit code 2.
/// </summary>
internal sealed class ToolArgs(string[] args, string verb)
{
    private int _next;
    private string? _pendingValue;

    public string Verb { get; } = verb;

    public bool TryNextFlag(out string flag)
    {
        if (_pendingValue is not null)
            throw new ConfigException($"{Verb}: unexpected value '{_pendingValue}'");
        if (_next >= args.Length)
        {
            flag = "";
            return false;
        }
        flag = args[_next++];
        if (!flag.StartsWith("--", StringComparison.Ordinal))
            throw new ConfigException($"{Verb}: unexpected argument '{flag}' (try nativerelay {Verb} --help)");
        int eq = flag.IndexOf('=');
        if (eq > 0)
        {
            _pendingValue = flag[(eq + 1)..];
            flag = flag[..eq];
        }
        return true;
    }

    public string Value(string flag)
    {
        if (_pendingValue is not null)
        {
            var v = _pendingValue;
            _pendingValue = null;
            return v;
        }
        if (_next >= args.Length || args[_next].StartsWith("--", StringComparison.Ordinal))
            throw new ConfigException($"{Verb}: {flag} needs a value");
        return args[_next++];
    }

    public void NoValue(string flag)
    {
        if (_pendingValue is not null)
            throw new ConfigException($"{Verb}: {flag} takes no value");
    }

    public ConfigException Unknown(string flag) =>
        new($"{Verb}: unknown flag '{flag}' (try nativerelay {Verb} --help)");

    /// <summary>A whole number in [min, max].</summary>
    public long Long(string flag, long min, long max)
    {
        var text = Value(flag);
        if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long n) || n < min || n > max)
            throw new ConfigException($"{Verb}: {flag} must be a whole number from {min} to {max} (got '{text}')");
        return n;
    }

    public int Int(string flag, int min, int max) => (int)Long(flag, min, max);

    /// <summary>A non-negative decimal number, at most <paramref name="max"/>.</summary>
    public double Double(string flag, double max)
    {
        var text = Value(flag);
        if (!double.TryParse(text, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double d) || d < 0 || d > max)
            throw new ConfigException($"{Verb}: {flag} must be a number from 0 to {max} (got '{text}')");
        return d;
    }

    /// <summary>A size in bytes: digits with an optional k/K (KiB) or m/M (MiB) suffix.</summary>
    public long Size(string flag, long min, long max)
    {
        var text = Value(flag);
        if (!TryParseSize(text, out long n) || n < min || n > max)
            throw new ConfigException($"{Verb}: {flag} must be a size from {min} to {max} bytes, e.g. 1024, 100k or 1m (got '{text}')");
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
    public int ReplyCode(string flag)
    {
        var text = Value(flag);
        if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int code)
            || code is < 200 or > 599 || code / 100 == 3)
            throw new ConfigException($"{Verb}: {flag} must be an SMTP reply code 200-299, 400-499 or 500-599 (got '{text}')");
        return code;
    }

    /// <summary>IP:PORT with an explicit port (0 allowed: any free port).</summary>
    public IPEndPoint ListenEndPoint(string flag)
    {
        var text = Value(flag);
        if (IPEndPoint.TryParse(text, out var ep) && HasPort(text))
            return ep;
        throw new ConfigException($"{Verb}: {flag} must be IP:PORT, e.g. 127.0.0.1:2526 or [::1]:2526 (got '{text}')");
    }

    /// <summary>HOST:PORT; the host may be a name (resolved when the tool starts) or an IP literal.</summary>
    public (string Host, int Port) HostPort(string flag)
    {
        var text = Value(flag);
        if (TryParseHostPort(text, out var host, out int port))
            return (host, port);
        throw new ConfigException($"{Verb}: {flag} must be HOST:PORT, e.g. 127.0.0.1:2525 or localhost:2525 (got '{text}')");
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
    public string Address(string flag)
    {
        var text = Value(flag);
        int at = text.LastIndexOf('@');
        if (at <= 0 || at == text.Length - 1 || text.Any(c => c <= ' ' || c > '~' || c is '<' or '>'))
            throw new ConfigException($"{Verb}: {flag} must be an address like user@example.com (got '{text}')");
        return text;
    }

    /// <summary>True if the arguments ask for help (-h, --help, help).</summary>
    public static bool WantsHelp(string[] args) => args.Any(a => a is "--help" or "-h" or "help");
}
