namespace NativeRelay.TlsPolicies.MtaSts;

/// <summary>The policy's mode (RFC 8461 5).</summary>
public enum MtaStsMode : byte
{
    /// <summary>The domain asks for no MTA-STS (a policy being withdrawn).</summary>
    None,
    /// <summary>Report failures (TLS-RPT), deliver anyway.</summary>
    Testing,
    /// <summary>Deliver only to MX hosts that match a pattern, over STARTTLS with a certificate that verifies.</summary>
    Enforce,
}

/// <summary>
/// An MTA-STS policy (RFC 8461 3.2), parsed strictly: "key: value" lines ended by CRLF or LF;
/// version (STSv1), mode (enforce, testing or none) and max_age (0 to 31557600 seconds) exactly
/// once each; mx (one or more; at least one unless the mode is none), each a host name or a
/// wildcard "*." followed by a host name; extension fields by the RFC's grammar, ignored. Anything
/// else makes the policy invalid, which the sender treats as a failed fetch (RFC 8461 3.3).
/// </summary>
public sealed class MtaStsPolicy
{
    /// <summary>RFC 8461 3.2: max_age "up to 31557600" (about a year).</summary>
    public const long MaxMaxAge = 31_557_600;

    private MtaStsPolicy(MtaStsMode mode, long maxAge, string[] mx, string text)
    {
        Mode = mode;
        MaxAge = maxAge;
        Mx = mx;
        Text = text;
    }

    public MtaStsMode Mode { get; }

    /// <summary>Seconds the policy may be cached.</summary>
    public long MaxAge { get; }

    /// <summary>The mx patterns, lower case, without a trailing dot.</summary>
    public IReadOnlyList<string> Mx { get; }

    /// <summary>The policy as fetched (kept for the cache file and for TLS-RPT's policy-string).</summary>
    public string Text { get; }

    /// <summary>The policy's lines, as TLS-RPT's "policy-string" array wants them (RFC 8460 4.4).</summary>
    public string[] Lines => Text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

    public static string ModeName(MtaStsMode mode) => mode switch
    {
        MtaStsMode.Enforce => "enforce",
        MtaStsMode.Testing => "testing",
        _ => "none",
    };

    /// <summary>Parses a policy body; null with the reason when it is not a valid STSv1 policy.</summary>
    public static MtaStsPolicy? TryParse(string text, out string? error)
    {
        error = null;
        string? version = null;
        MtaStsMode? mode = null;
        long? maxAge = null;
        var mx = new List<string>();
        int lineNumber = 0;
        foreach (var raw in text.Split('\n'))
        {
            lineNumber++;
            var line = raw.EndsWith('\r') ? raw[..^1] : raw;
            if (line.Length == 0)
                continue; // the terminator of the last line, or blank lines between fields
            int colon = line.IndexOf(':');
            if (colon <= 0)
            {
                error = $"line {lineNumber} is not 'key: value'";
                return null;
            }
            var key = line.AsSpan(0, colon).TrimEnd(" \t");
            var value = line.AsSpan(colon + 1).Trim(" \t");
            if (!MtaStsRecord.IsExtensionName(key))
            {
                error = $"line {lineNumber}: '{key}' is not a field name";
                return null;
            }
            if (value.Length == 0)
            {
                error = $"line {lineNumber}: '{key}' has no value";
                return null;
            }
            foreach (char c in value)
            {
                if (c is < ' ' and not '\t' or > '~')
                {
                    error = $"line {lineNumber}: '{key}' has a character that is not printable ASCII";
                    return null;
                }
            }
            switch (key)
            {
                case "version":
                    if (version is not null)
                        return Fail(out error, "version appears twice");
                    if (!value.SequenceEqual("STSv1"))
                        return Fail(out error, $"version '{value}' is not STSv1");
                    version = "STSv1";
                    break;
                case "mode":
                    if (mode is not null)
                        return Fail(out error, "mode appears twice");
                    mode = value switch
                    {
                        "enforce" => MtaStsMode.Enforce,
                        "testing" => MtaStsMode.Testing,
                        "none" => MtaStsMode.None,
                        _ => null,
                    };
                    if (mode is null)
                        return Fail(out error, $"mode '{value}' is not enforce, testing or none");
                    break;
                case "max_age":
                    if (maxAge is not null)
                        return Fail(out error, "max_age appears twice");
                    if (value.Length > 10 || !IsDigits(value) || !long.TryParse(value, out long seconds) || seconds > MaxMaxAge)
                        return Fail(out error, $"max_age '{value}' is not 0 to {MaxMaxAge} seconds");
                    maxAge = seconds;
                    break;
                case "mx":
                    var pattern = value.ToString().ToLowerInvariant();
                    if (!IsMxPattern(pattern))
                        return Fail(out error, $"mx '{value}' is not a host name or *.host name");
                    mx.Add(pattern);
                    break;
                default:
                    break; // an extension field (3.2: ignored)
            }
        }
        if (version is null)
            return Fail(out error, "no version");
        if (mode is null)
            return Fail(out error, "no mode");
        if (maxAge is null)
            return Fail(out error, "no max_age");
        if (mx.Count == 0 && mode != MtaStsMode.None)
            return Fail(out error, "no mx");
        return new MtaStsPolicy(mode.Value, maxAge.Value, [.. mx], text);
    }

    private static MtaStsPolicy? Fail(out string? error, string why)
    {
        error = why;
        return null;
    }

    private static bool IsDigits(ReadOnlySpan<char> s)
    {
        foreach (char c in s)
            if (!char.IsAsciiDigit(c))
                return false;
        return true;
    }

    private static bool IsMxPattern(string pattern)
    {
        var host = pattern.StartsWith("*.", StringComparison.Ordinal) ? pattern[2..] : pattern;
        return host.Contains('.') && NativeRelay.Config.RelaySettings.IsValidHostname(host) && !host.Contains('*');
    }

    /// <summary>
    /// Whether an MX host name matches one of the policy's patterns (RFC 8461 4.1): equal, ASCII
    /// case-insensitively, or, for "*.suffix", the host is exactly one label followed by ".suffix".
    /// </summary>
    public bool MatchesMx(string host) => MatchesMx(Mx, host);

    public static bool MatchesMx(IReadOnlyList<string> patterns, string host)
    {
        var name = host.AsSpan().TrimEnd('.');
        foreach (var pattern in patterns)
        {
            if (pattern.StartsWith("*.", StringComparison.Ordinal))
            {
                var suffix = pattern.AsSpan(1); // ".suffix"
                if (name.Length > suffix.Length && name.EndsWith(suffix, StringComparison.OrdinalIgnoreCase)
                    && name[..^suffix.Length].IndexOf('.') < 0)
                    return true;
            }
            else if (name.Equals(pattern, StringComparison.OrdinalIgnoreCase))
                return true;
        }
        return false;
    }
}
