using System.Net;
using System.Text;
using NativeRelay.Config;
using NativeRelay.Message;
using NativeRelay.Net;

namespace NativeRelay.Traffic.Sources;

/// <summary>
/// Which pool a message belongs to, decided at reception (the end of data) and stored with it
/// (<see cref="NativeRelay.Spool.Envelope.Pool"/>): the first rule whose conditions all hold, on
/// the authenticated user, the listener, the envelope sender's domain, or a header the operator
/// names. No rule: the default pool (stored as none). Immutable; the receiving side holds the one
/// of its configuration.
/// </summary>
public sealed class PoolRules
{
    public static PoolRules Empty { get; } = new([], new HashSet<string>());

    private readonly Rule[] _rules;

    private PoolRules(Rule[] rules, IReadOnlySet<string> pools)
    {
        _rules = rules;
        Pools = pools;
        var headers = new List<string>();
        foreach (var r in rules)
            if (r.Header is { } h && !headers.Contains(h, StringComparer.OrdinalIgnoreCase))
                headers.Add(h);
        Headers = headers;
        HeaderBytes = headers.Select(Encoding.ASCII.GetBytes).ToArray();
    }

    public bool IsEmpty => _rules.Length == 0;

    /// <summary>The header fields rules name (each removed from a trusted client's message).</summary>
    public IReadOnlyList<string> Headers { get; }

    internal byte[][] HeaderBytes { get; }

    /// <summary>The configured pools (a header may only name one of these).</summary>
    public IReadOnlySet<string> Pools { get; }

    public int Count => _rules.Length;

    private sealed record Rule(string? AuthUser, string? ListenerAddress, ListenerKind? ListenerKind, string? SenderDomain,
        bool SenderSubdomains, string? Header, string? Value, string? Pool)
    {
        public string Describe()
        {
            var when = new List<string>();
            if (AuthUser is not null) when.Add($"user {AuthUser}");
            if (ListenerAddress is not null) when.Add($"listener {ListenerAddress}");
            if (ListenerKind is { } k) when.Add($"{ListenerSettings.KindName(k)} listeners");
            if (SenderDomain is not null) when.Add($"sender domain {(SenderSubdomains ? "." : "")}{SenderDomain}");
            if (Header is not null) when.Add(Value is null ? $"header {Header} (its value names the pool)" : $"header {Header}: {Value}");
            return $"{string.Join(" and ", when)} -> {Pool ?? "(the header's pool)"}";
        }
    }

    public IEnumerable<string> Describe() => _rules.Select(r => r.Describe());

    /// <summary>Checks the rules against the pools that exist; every problem is a <see cref="ConfigException"/>.</summary>
    public static PoolRules Validate(IReadOnlyList<PoolRuleOptions> options, IReadOnlySet<string> pools)
    {
        if (options.Count == 0)
            return Empty;
        var rules = new Rule[options.Count];
        for (int i = 0; i < rules.Length; i++)
        {
            var o = options[i] ?? throw new ConfigException($"traffic.poolRules[{i}]: null");
            string what = $"traffic.poolRules[{i}]";
            if (o.AuthUser is null && o.Listener is null && o.SenderDomain is null && o.Header is null)
                throw new ConfigException($"{what}: a rule needs a condition (authUser, listener, senderDomain or header)");
            if (o.Pool is null && (o.Header is null || o.Value is not null))
                throw new ConfigException($"{what}: pool is needed (only a header rule without a value takes the pool from the header)");
            if (o.Pool is not null && !pools.Contains(o.Pool))
                throw new ConfigException($"{what}.pool: no pool '{o.Pool}' in traffic.pools");
            if (o.Value is not null && o.Header is null)
                throw new ConfigException($"{what}.value: only with header");
            string? address = null;
            ListenerKind? kind = null;
            if (o.Listener is { } listener)
            {
                if (listener.Trim().ToLowerInvariant() is "smtp" or "submission" or "implicit-tls" or "submissions")
                    kind = ListenerSettings.ParseKind(listener, what + ".listener");
                else if (IPEndPoint.TryParse(listener, out var ep) && ep.Port != 0)
                    address = ep.ToString();
                else
                    throw new ConfigException($"{what}.listener: '{listener}' is neither IP:PORT nor a kind (smtp, submission, implicit-tls)");
            }
            string? domain = null;
            bool subdomains = false;
            if (o.SenderDomain is { } d)
            {
                domain = d.Trim().TrimEnd('.').ToLowerInvariant();
                if (domain.StartsWith('.'))
                {
                    subdomains = true;
                    domain = domain[1..];
                }
                if (!RelaySettings.IsValidHostname(domain))
                    throw new ConfigException($"{what}.senderDomain: '{d}' is not a domain");
            }
            if (o.Header is { } header && (header.Length == 0 || header.Any(c => c is <= ' ' or > '~' or ':')))
                throw new ConfigException($"{what}.header: '{header}' is not a header field name");
            rules[i] = new Rule(o.AuthUser, address, kind, domain, subdomains, o.Header, o.Value, o.Pool);
        }
        return new PoolRules(rules, pools);
    }

    /// <summary>
    /// The pool for a message, or null (the default pool). <paramref name="headerValue"/> gives a
    /// named header's value (null when absent, or when the client is not trusted).
    /// </summary>
    public string? Choose(ListenerInfo listener, string? authenticatedUser, ReadOnlySpan<byte> sender, Func<string, string?> headerValue)
    {
        var senderDomain = SenderDomain(sender);
        foreach (var r in _rules)
        {
            if (r.AuthUser is not null && !string.Equals(r.AuthUser, authenticatedUser, StringComparison.Ordinal))
                continue;
            if (r.ListenerKind is { } kind && listener.Kind != kind)
                continue;
            if (r.ListenerAddress is not null && !string.Equals(r.ListenerAddress, listener.EndPoint.ToString(), StringComparison.Ordinal))
                continue;
            if (r.SenderDomain is not null && !DomainMatches(senderDomain, r.SenderDomain, r.SenderSubdomains))
                continue;
            if (r.Header is not null)
            {
                var value = headerValue(r.Header)?.Trim();
                if (value is null)
                    continue;
                if (r.Value is not null)
                {
                    if (!string.Equals(value, r.Value, StringComparison.OrdinalIgnoreCase))
                        continue;
                }
                else
                {
                    if (!Pools.Contains(value))
                        continue; // names no pool: not this rule's
                    return value;
                }
            }
            return r.Pool;
        }
        return null;
    }

    private static ReadOnlySpan<byte> SenderDomain(ReadOnlySpan<byte> sender)
    {
        int at = sender.LastIndexOf((byte)'@');
        return at < 0 ? default : sender[(at + 1)..];
    }

    private static bool DomainMatches(ReadOnlySpan<byte> domain, string pattern, bool subdomains)
    {
        if (domain.IsEmpty)
            return false;
        Span<char> chars = stackalloc char[256];
        if (domain.Length > chars.Length || !Encoding.UTF8.TryGetChars(domain, chars, out int n))
            return false;
        var name = chars[..n].TrimEnd('.');
        if (name.Equals(pattern, StringComparison.OrdinalIgnoreCase))
            return true;
        return subdomains && name.Length > pattern.Length && name.EndsWith(pattern, StringComparison.OrdinalIgnoreCase)
               && name[name.Length - pattern.Length - 1] == '.';
    }

    /// <summary>
    /// Finds the named header fields in the first block of a message's header section (what the
    /// receiving side scans), with their values; a field beyond it is not seen.
    /// </summary>
    internal static List<(int Offset, int Length, string Name, string Value)> FindHeaders(ReadOnlySpan<byte> headerSection, byte[][] names)
    {
        var found = new List<(int, int, string, string)>(1);
        var scanner = new HeaderScanner(headerSection);
        while (scanner.TryReadNext(out var field))
        {
            // A field cut off by the end of the block (or of the message) is neither read nor removed.
            if (field.End >= headerSection.Length)
                break;
            for (int i = 0; i < names.Length; i++)
            {
                if (!field.NameEquals(headerSection, names[i]))
                    continue;
                string value = Encoding.UTF8.GetString(field.RawValue(headerSection)).Replace("\r\n", "", StringComparison.Ordinal).Trim();
                found.Add((field.Start, field.End - field.Start, Encoding.ASCII.GetString(names[i]), value));
                break;
            }
        }
        return found;
    }
}
