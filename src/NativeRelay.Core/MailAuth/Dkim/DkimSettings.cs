using NativeRelay.Config;

namespace NativeRelay.MailAuth.Dkim;

[Flags]
public enum DkimSignBy : byte
{
    None = 0,
    From = 1,
    Sender = 2,
    User = 4,
}

/// <summary>One configured key: where it is and which domains it signs for.</summary>
public sealed record DkimKeySettings(string Domain, string Selector, string KeyFile, bool Subdomains);

/// <summary>The validated <c>dkim</c> section.</summary>
public sealed record DkimSettings
{
    /// <summary>What gets signed when the operator names no headers (issue list; RFC 6376 5.4.1's advice).</summary>
    public static readonly IReadOnlyList<string> DefaultHeaders =
    [
        "From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To", "MIME-Version", "Content-Type",
        "Content-Transfer-Encoding", "In-Reply-To", "References", "List-Id", "List-Unsubscribe",
        "List-Unsubscribe-Post", "Feedback-ID",
    ];

    public static readonly DkimSettings Off = Validate(new DkimOptions());

    public IReadOnlyList<DkimKeySettings> Keys { get; init; } = [];
    public IReadOnlyList<string> Headers { get; init; } = DefaultHeaders;
    public IReadOnlyList<string> OverSign { get; init; } = ["From"];
    public DkimCanonicalization HeaderCanonicalization { get; init; } = DkimCanonicalization.Relaxed;
    public DkimCanonicalization BodyCanonicalization { get; init; } = DkimCanonicalization.Relaxed;
    public long ExpirationSeconds { get; init; }
    /// <summary>The order the domains are tried in.</summary>
    public IReadOnlyList<DkimSignBy> SignBy { get; init; } = [DkimSignBy.From];
    public int MaxSignatures { get; init; } = 5;
    public int KeyCacheSize { get; init; } = 10_000;

    public bool Signs => Keys.Count > 0;

    public static DkimSettings Validate(DkimOptions o)
    {
        var keys = new List<DkimKeySettings>();
        var seen = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var k in o.Keys)
        {
            var domain = k.Domain.Trim().TrimEnd('.').ToLowerInvariant();
            if (!RelaySettings.IsValidHostname(domain) || !domain.Contains('.'))
                throw new ConfigException($"dkim.keys: domain '{k.Domain}' is not a domain name");
            var selector = k.Selector.Trim();
            if (selector.Length == 0 || !RelaySettings.IsValidHostname(selector))
                throw new ConfigException($"dkim.keys: selector '{k.Selector}' of {domain} is not a DNS label (letters, digits, '-', '.')");
            if (string.IsNullOrWhiteSpace(k.KeyFile))
                throw new ConfigException($"dkim.keys: {selector}._domainkey.{domain} needs a keyFile");
            if (!seen.Add(selector + "." + domain))
                throw new ConfigException($"dkim.keys: {selector}._domainkey.{domain} is listed twice");
            keys.Add(new DkimKeySettings(domain, selector, k.KeyFile, k.Subdomains));
        }

        var headers = o.Headers ?? [.. DefaultHeaders];
        foreach (var h in headers.Concat(o.OverSign))
            if (!IsFieldName(h))
                throw new ConfigException($"dkim: '{h}' is not a header field name");
        if (o.Headers is not null && !headers.Any(h => h.Equals("From", StringComparison.OrdinalIgnoreCase)))
            throw new ConfigException("dkim.headers: must include From (RFC 6376 5.4)");
        if (headers.Any(h => h.Equals("DKIM-Signature", StringComparison.OrdinalIgnoreCase)))
            throw new ConfigException("dkim.headers: DKIM-Signature cannot be signed by another signature here");

        if (!DkimCanonicalizer.TryParse(o.Canonicalization, out var hc, out var bc))
            throw new ConfigException($"dkim.canonicalization: '{o.Canonicalization}' (relaxed/relaxed, simple/simple, relaxed/simple or simple/relaxed)");
        if (o.ExpirationSeconds < 0)
            throw new ConfigException("dkim.expirationSeconds must not be negative (0: no x=)");

        var signBy = new List<DkimSignBy>();
        foreach (var s in o.SignBy)
        {
            var by = s.ToLowerInvariant() switch
            {
                "from" => DkimSignBy.From,
                "sender" => DkimSignBy.Sender,
                "user" => DkimSignBy.User,
                _ => throw new ConfigException($"dkim.signBy: '{s}' (from, sender or user)"),
            };
            if (!signBy.Contains(by))
                signBy.Add(by);
        }
        if (signBy.Count == 0)
            throw new ConfigException("dkim.signBy: at least one of from, sender, user");
        if (o.Verify.MaxSignatures is < 1 or > 50)
            throw new ConfigException("dkim.verify.maxSignatures: 1 to 50");
        if (o.Verify.KeyCacheSize is < 1)
            throw new ConfigException("dkim.verify.keyCacheSize must be positive");

        return new DkimSettings
        {
            Keys = keys,
            Headers = headers,
            OverSign = o.OverSign,
            HeaderCanonicalization = hc,
            BodyCanonicalization = bc,
            ExpirationSeconds = o.ExpirationSeconds,
            SignBy = signBy,
            MaxSignatures = o.Verify.MaxSignatures,
            KeyCacheSize = o.Verify.KeyCacheSize,
        };
    }

    private static bool IsFieldName(string name)
    {
        if (name.Length == 0)
            return false;
        foreach (char c in name)
            if (c is < '!' or > '~' or ':')
                return false;
        return true;
    }
}
