namespace NativeRelay.Config;

/// <summary>
/// The <c>http</c> section: the HTTP server (Kestrel) of the injection API and one-click
/// unsubscribe. Off unless <see cref="Listen"/> is set; validated into
/// <see cref="NativeRelay.Api.HttpSettings"/>.
/// </summary>
public sealed class HttpOptions
{
    /// <summary>IP:PORT to serve the API on; null (the default) turns the HTTP server off.</summary>
    public string? Listen { get; set; }

    /// <summary>Serve HTTPS with the relay's certificate (<c>tls.certificate</c>/<c>tls.key</c>). Default: plain HTTP.</summary>
    public bool Tls { get; set; }

    /// <summary>The bearer tokens file (lines made by <c>nativerelay token add</c>); required when the API is on.</summary>
    public string? TokensFile { get; set; }

    /// <summary>Largest request body in bytes (413 above it). Default 25 MiB.</summary>
    public long MaxRequestBytes { get; set; } = 25L * 1024 * 1024;

    /// <summary>Most recipients in one injection request (422 above it).</summary>
    public int MaxRecipients { get; set; } = 1000;

    /// <summary>Requests per second a token may make (a token's own <c>rate=</c> overrides it); 0: unlimited.</summary>
    public int RequestsPerSecond { get; set; } = 100;

    /// <summary>One-click unsubscribe (RFC 8058) for the pools that turn it on.</summary>
    public UnsubscribeOptions Unsubscribe { get; set; } = new();
}

/// <summary>The <c>http.unsubscribe</c> section.</summary>
public sealed class UnsubscribeOptions
{
    /// <summary>Pools whose messages get List-Unsubscribe and List-Unsubscribe-Post. Default: none.</summary>
    public List<string> Pools { get; set; } = [];

    /// <summary>Where recipients reach this relay's /u/ path, e.g. "https://mail.example.com" (required with pools).</summary>
    public string? BaseUrl { get; set; }

    /// <summary>The mailto: address in List-Unsubscribe (RFC 2369), e.g. "unsubscribe@example.com"; null: only the https link.</summary>
    public string? Mailto { get; set; }

    /// <summary>The HMAC key of the links (a file of at least 32 bytes); null: a random key kept in the spool directory (unsubscribe.key).</summary>
    public string? SecretFile { get; set; }

    /// <summary>How long a link stays valid.</summary>
    public int ValidDays { get; set; } = 60;
}
