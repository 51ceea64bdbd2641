using System.Net;
using NativeRelay.Config;
using NativeRelay.Policy;

namespace NativeRelay.Net;

/// <summary>What a listener is for.</summary>
public enum ListenerKind : byte
{
    /// <summary>MTA to MTA (port 25 style): STARTTLS offered when a certificate is configured; relay policy applies.</summary>
    Smtp,

    /// <summary>Message submission (RFC 6409, port 587 style): AUTH required before MAIL; Message-ID and Date added when missing.</summary>
    Submission,

    /// <summary>Submission over TLS from the first byte (RFC 8314, port 465 style).</summary>
    ImplicitTls,
}

/// <summary>One validated listener.</summary>
public sealed record ListenerSettings(IPEndPoint EndPoint, ListenerKind Kind)
{
    public bool IsSubmission => Kind != ListenerKind.Smtp;

    public static string KindName(ListenerKind kind) => kind switch
    {
        ListenerKind.Submission => "submission",
        ListenerKind.ImplicitTls => "implicit-tls",
        _ => "smtp",
    };

    public static ListenerKind ParseKind(string? text, string what) => text?.Trim().ToLowerInvariant() switch
    {
        null or "" or "smtp" => ListenerKind.Smtp,
        "submission" => ListenerKind.Submission,
        "implicit-tls" or "submissions" => ListenerKind.ImplicitTls,
        _ => throw new ConfigException($"{what}: kind '{text}' is not one of smtp, submission, implicit-tls"),
    };
}

/// <summary>The server certificate's files, as configured (paths made absolute).</summary>
public sealed record TlsSettings(string CertificatePath, string KeyPath);

/// <summary>
/// Validation of the receiving side's options (listeners, TLS, AUTH, relay policy), called by
/// <see cref="RelaySettings.Validate"/>. Files are not opened here; they are loaded when the
/// relay starts, where a problem stops it with the same one-line error.
/// </summary>
public sealed class ReceivingSettings
{
    public required IReadOnlyList<ListenerSettings> Listeners { get; init; }
    public TlsSettings? Tls { get; init; }
    public string? UsersFile { get; init; }
    public required IReadOnlyList<string> AcceptedDomains { get; init; }
    public required IReadOnlyList<string> LocalRecipients { get; init; }
    public string? LocalRecipientsFile { get; init; }
    public int ReloadCheckSeconds { get; init; }

    public static ReceivingSettings Validate(RelayOptions o, IReadOnlyList<IPEndPoint> plainListeners)
    {
        var listeners = new List<ListenerSettings>();
        foreach (var endPoint in plainListeners)
            listeners.Add(new ListenerSettings(endPoint, ListenerKind.Smtp));
        foreach (var l in o.Listeners)
        {
            if (l is null)
                throw new ConfigException("listeners: an entry is null");
            var endPoint = RelaySettings.ParseEndPoint(l.Address ?? "", "listeners.address");
            listeners.Add(new ListenerSettings(endPoint, ListenerSettings.ParseKind(l.Kind, $"listeners ({l.Address})")));
        }
        var seen = new HashSet<IPEndPoint>();
        foreach (var l in listeners)
            if (!seen.Add(l.EndPoint))
                throw new ConfigException($"listen: {l.EndPoint} is given twice");

        TlsSettings? tls = null;
        var t = o.Tls ?? new TlsOptions();
        if (!string.IsNullOrWhiteSpace(t.Certificate) || !string.IsNullOrWhiteSpace(t.Key))
        {
            if (string.IsNullOrWhiteSpace(t.Certificate) || string.IsNullOrWhiteSpace(t.Key))
                throw new ConfigException("tls: both a certificate and a key file are needed (tls.certificate, tls.key)");
            tls = new TlsSettings(Path.GetFullPath(t.Certificate), Path.GetFullPath(t.Key));
        }
        if (o.ReloadCheckSeconds is <= 0 or > 86400)
            throw new ConfigException($"reloadCheckSeconds: 1 to 86400 (got {o.ReloadCheckSeconds})");
        foreach (var l in listeners)
        {
            if (l.Kind == ListenerKind.ImplicitTls && tls is null)
                throw new ConfigException($"listener {l.EndPoint} is implicit-tls but no certificate is configured (tls.certificate and tls.key, or --tls-cert and --tls-key)");
            if (l.IsSubmission && string.IsNullOrWhiteSpace(o.UsersFile))
                throw new ConfigException($"listener {l.EndPoint} is a {ListenerSettings.KindName(l.Kind)} listener, which requires AUTH: a users file is needed (usersFile or --users)");
        }

        var domains = new List<string>();
        foreach (var d in o.AcceptedDomains ?? [])
        {
            var normal = RecipientPolicy.NormalizeDomainEntry(d);
            if (normal is null)
                throw new ConfigException($"acceptedDomains: '{d}' is not a domain (e.g. example.com, or .example.com for its subdomains)");
            domains.Add(normal);
        }
        var recipients = new List<string>();
        foreach (var r in o.LocalRecipients ?? [])
        {
            var normal = RecipientPolicy.NormalizeRecipientEntry(r);
            if (normal is null)
                throw new ConfigException($"localRecipients: '{r}' is not user@domain or @domain");
            recipients.Add(normal);
        }

        return new ReceivingSettings
        {
            Listeners = listeners,
            Tls = tls,
            UsersFile = string.IsNullOrWhiteSpace(o.UsersFile) ? null : Path.GetFullPath(o.UsersFile),
            AcceptedDomains = domains,
            LocalRecipients = recipients,
            LocalRecipientsFile = string.IsNullOrWhiteSpace(o.LocalRecipientsFile) ? null : Path.GetFullPath(o.LocalRecipientsFile),
            ReloadCheckSeconds = o.ReloadCheckSeconds,
        };
    }
}
