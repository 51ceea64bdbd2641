using System.Net;
using NativeRelay.Config;

namespace NativeRelay.Api;

/// <summary>The validated <c>http</c> section; null in <see cref="RelaySettings"/> when the API is off.</summary>
public sealed record HttpSettings(IPEndPoint Listen, bool Tls, string TokensFile, long MaxRequestBytes, int MaxRecipients,
    int RequestsPerSecond, UnsubscribeSettings? Unsubscribe)
{
    /// <summary>A recipient list is refused as a whole above this, whatever maxRecipients says (a request must stay small enough to answer).</summary>
    public const int MaxRecipientsCeiling = 100_000;

    public static HttpSettings? Validate(HttpOptions? o, string spoolDirectory, bool hasCertificate)
    {
        if (o is null || string.IsNullOrWhiteSpace(o.Listen))
            return null;
        var listen = RelaySettings.ParseEndPoint(o.Listen.Trim(), "http.listen");
        if (string.IsNullOrWhiteSpace(o.TokensFile))
            throw new ConfigException("http.tokensFile: the API needs a tokens file (nativerelay token add NAME --file FILE)");
        if (o.Tls && !hasCertificate)
            throw new ConfigException("http.tls: needs the relay's certificate (tls.certificate and tls.key)");
        if (o.MaxRequestBytes is < 1024 or > 1L << 30)
            throw new ConfigException("http.maxRequestBytes: 1024 to 1073741824");
        if (o.MaxRecipients < 1 || o.MaxRecipients > MaxRecipientsCeiling)
            throw new ConfigException($"http.maxRecipients: 1 to {MaxRecipientsCeiling}");
        if (o.RequestsPerSecond < 0)
            throw new ConfigException("http.requestsPerSecond must not be negative (0: unlimited)");
        return new HttpSettings(listen, o.Tls, Path.GetFullPath(o.TokensFile), o.MaxRequestBytes, o.MaxRecipients,
            o.RequestsPerSecond, UnsubscribeSettings.Validate(o.Unsubscribe, spoolDirectory));
    }
}

/// <summary>The validated <c>http.unsubscribe</c> section; null when no pool turns it on.</summary>
public sealed record UnsubscribeSettings(IReadOnlyList<string> Pools, Uri BaseUrl, string? Mailto, string SecretFile, bool SecretIsGenerated, TimeSpan Validity)
{
    public bool AppliesTo(string pool) => Pools.Contains(pool, StringComparer.OrdinalIgnoreCase);

    public static UnsubscribeSettings? Validate(UnsubscribeOptions? o, string spoolDirectory)
    {
        if (o is null || o.Pools.Count == 0)
            return null;
        if (string.IsNullOrWhiteSpace(o.BaseUrl) || !Uri.TryCreate(o.BaseUrl.TrimEnd('/'), UriKind.Absolute, out var url)
            || (url.Scheme != "https" && url.Scheme != "http"))
            throw new ConfigException("http.unsubscribe.baseUrl: the absolute http(s) URL recipients reach this relay at, e.g. https://mail.example.com");
        if (o.Mailto is { } m && (m.Contains('<') || m.Contains('>') || m.Contains(',') || !m.Contains('@') || m.Any(char.IsWhiteSpace)))
            throw new ConfigException($"http.unsubscribe.mailto: '{m}' is not a plain address");
        if (o.ValidDays is < 1 or > 3650)
            throw new ConfigException("http.unsubscribe.validDays: 1 to 3650");
        bool generated = string.IsNullOrWhiteSpace(o.SecretFile);
        var secret = generated ? Path.Combine(spoolDirectory, "unsubscribe.key") : Path.GetFullPath(o.SecretFile!);
        return new UnsubscribeSettings(o.Pools.Select(p => p.Trim()).ToArray(), url, o.Mailto, secret, generated, TimeSpan.FromDays(o.ValidDays));
    }
}
