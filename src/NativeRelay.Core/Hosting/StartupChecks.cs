using System.Net;
using NativeRelay.Config;
using NativeRelay.MailAuth;
using NativeRelay.Net;
using NativeRelay.Routing;

namespace NativeRelay.Hosting;

/// <summary>
/// What a configuration needs from the machine beyond the binary and libc, checked before the
/// relay starts (serve, check-config, and a reload), so that a missing library or a missing
/// /etc/resolv.conf is one line at start rather than an abort at the first handshake or a stack
/// trace. Each problem is a <see cref="ConfigException"/> (printed as "nativerelay: LINE", exit 2).
/// docs/deploy/FOOTPRINT.md lists the files.
/// </summary>
public static class StartupChecks
{
    public static void Check(RelaySettings settings) =>
        Check(settings, () => OpenSslLibrary.Problem, () => DnsClientResolver.SystemServersProblem(), HomeDirectory);

    internal static void Check(RelaySettings settings, Func<string?> openSslProblem, Func<string?> dnsProblem, Func<string> home)
    {
        CheckOpenSsl(settings, openSslProblem);
        // .NET's certificate code looks for the user's certificate stores under the home
        // directory ($HOME, else the user's /etc/passwd entry) and fails with a bare "No such
        // file or directory" when there is none (a scratch image without /etc/passwd).
        if (settings.Tls is not null && home().Length == 0)
            throw new ConfigException($"tls.certificate: the relay's user has no home directory (HOME is unset and /etc/passwd has no entry for uid {PrivilegeDrop.GetEUid()}), which .NET needs to load a certificate; add the user to /etc/passwd or set HOME");
        if (settings.Routing.DnsServers.Count == 0 && NeedsDns(settings.Routing) && dnsProblem() is { } dns)
            throw new ConfigException(dns);
        // Every egress source's address must be on this host (a bind test, with the source's name).
        settings.Traffic.CheckBind();
    }

    /// <summary>
    /// Refuses, in one line, a configuration with a feature that cannot work without OpenSSL when
    /// OpenSSL cannot be loaded. Runs before anything reads the files such a feature names (keys,
    /// users, tokens: check-config and a reload read them), since reading them already needs it.
    /// </summary>
    public static void CheckOpenSsl(RelaySettings settings) => CheckOpenSsl(settings, () => OpenSslLibrary.Problem);

    internal static void CheckOpenSsl(RelaySettings settings, Func<string?> openSslProblem)
    {
        if (OpenSslNeededBy(settings) is { } what && openSslProblem() is { } ssl)
            throw new ConfigException(OpenSslLibrary.Refusal(what, ssl));
    }

    /// <summary>$HOME, else the user's entry in the password database, as .NET looks for it; "" when neither.</summary>
    private static string HomeDirectory() =>
        Environment.GetEnvironmentVariable("HOME") is { Length: > 0 } home ? home
        : PrivilegeDrop.CurrentUserHasEntry() ? "(from /etc/passwd)" : "";

    /// <summary>
    /// The option that makes the relay use TLS, or null when nothing does: a certificate (STARTTLS
    /// and implicit TLS when receiving), or the required policy when delivering (by default, or
    /// on a route), or verify. Opportunistic STARTTLS, the default, is skipped when OpenSSL is missing.
    /// <see cref="OpenSslNeededBy"/> adds what needs OpenSSL for its cryptography.
    /// </summary>
    public static string? TlsRequiredBy(RelaySettings settings)
    {
        if (settings.Tls is not null)
            return "tls.certificate";
        if (settings.Routing.DefaultTls >= TlsPolicy.Required)
            return $"delivery.tlsPolicy \"{RoutingSettings.TlsName(settings.Routing.DefaultTls)}\"";
        foreach (var route in settings.Routing.Routes.All)
            if (route.Tls >= TlsPolicy.Required)
                return $"routing.routes[\"{route.Pattern}\"].tls \"{RoutingSettings.TlsName(route.Tls.Value)}\"";
        return null;
    }

    /// <summary>
    /// The option (with its value where that says why) of the first feature the operator turned on
    /// that cannot work without OpenSSL, or null. Besides TLS (<see cref="TlsRequiredBy"/>), .NET
    /// on Linux computes every hash, HMAC, PBKDF2 and RSA operation, and RandomNumberGenerator's
    /// bytes, with OpenSSL (tried in a root without it: each aborts), so these need it too: DANE (TLS
    /// mandatory for hosts with TLSA records), DKIM signing (RSA, SHA-256 body hashes), inbound
    /// authentication (DKIM verification of whatever a client sends), SMTP AUTH (PBKDF2 password
    /// hashes), the HTTP API (SHA-256 token hashes), webhooks (HMAC-SHA256 signatures) and the
    /// cluster (Redis scripts named by SHA-1). Features on by default are not refused but skipped
    /// (<see cref="Warnings"/>): opportunistic STARTTLS, MTA-STS, TLS-RPT's https: reports.
    /// docs/deploy/FOOTPRINT.md lists them.
    /// </summary>
    public static string? OpenSslNeededBy(RelaySettings settings)
    {
        if (TlsRequiredBy(settings) is { } tls)
            return tls;
        var routing = settings.Routing;
        if (routing.Dnssec && routing.Dane)
            return "outboundTls.dane (on, with routing.dnssec)";
        if (settings.Dkim.Signs)
            return "dkim.keys";
        if (settings.InboundAuth is { } auth)
        {
            if (auth.Mode != InboundAuthMode.Off)
                return $"inboundAuth.mode \"{auth.Mode.ToString().ToLowerInvariant()}\"";
            foreach (var (listener, mode) in auth.ListenerModes)
                if (mode != InboundAuthMode.Off)
                    return $"listeners[{listener}].inboundAuth \"{mode.ToString().ToLowerInvariant()}\"";
        }
        if (settings.UsersFile is not null)
            return "usersFile";
        if (settings.Http is not null)
            return "http.listen";
        if (settings.Events.Enabled)
            return "events.webhooks";
        if (settings.Cluster is not null)
            return "cluster.redis";
        return null;
    }

    /// <summary>
    /// Whether MTA-STS policies are fetched and used: outboundTls.mtaSts (on by default) and
    /// OpenSSL there. A policy comes over HTTPS, and a domain's "_mta-sts" record is remote input,
    /// so without OpenSSL MTA-STS is skipped rather than refused: every domain is then treated as
    /// one whose policy could not be fetched with none cached (RFC 8461 5.1: mail goes as without
    /// MTA-STS). A policy cached earlier is not used either: it could only ask for TLS.
    /// </summary>
    public static bool FetchesMtaSts(RoutingSettings routing, string? openSslProblem) => routing.MtaSts && openSslProblem is null;

    /// <summary>The warn lines start-up logs for what is on by default and skipped because OpenSSL cannot be loaded.</summary>
    public static IReadOnlyList<string> Warnings(RelaySettings settings) => Warnings(settings, OpenSslLibrary.Problem);

    internal static IReadOnlyList<string> Warnings(RelaySettings settings, string? openSslProblem)
    {
        var lines = new List<string>();
        if (openSslProblem is null)
            return lines;
        var routing = settings.Routing;
        if (routing.DefaultTls == TlsPolicy.Opportunistic || routing.Routes.All.Any(r => r.Tls == TlsPolicy.Opportunistic))
            lines.Add($"OpenSSL 3 cannot be loaded ({openSslProblem}): STARTTLS to next hops is not attempted, mail goes in plain text (see docs/deploy/FOOTPRINT.md)");
        // MTA-STS applies to MX delivery only: a relay whose routes send every domain to fixed
        // hosts (a smarthost, relayTo) or local delivery skips nothing worth a line.
        if (routing.MtaSts && !FetchesMtaSts(routing, openSslProblem) && DeliversByMx(routing))
            lines.Add($"MTA-STS: off, OpenSSL 3 cannot be loaded ({openSslProblem}): recipient domains' policies are not fetched (HTTPS), mail goes as to domains without one (outboundTls.mtaSts false, --no-mta-sts, turns it off knowingly)");
        if (routing.TlsRpt && routing.TlsRptSendDaily)
            lines.Add($"TLS-RPT: OpenSSL 3 cannot be loaded ({openSslProblem}): reports are not sent to https: addresses, only to mailto: ones");
        return lines;
    }

    /// <summary>
    /// True when some mail may need a DNS lookup: no smarthost ("*" route or relayTo) or local
    /// "*" route takes every domain the other routes do not (MX lookup), a route names no hosts
    /// (MX with overrides), or a route's host is a name rather than an IP address. Bounces go
    /// through the same routes, so a relay whose routes are all IP addresses needs no resolver.
    /// </summary>
    public static bool NeedsDns(RoutingSettings routing)
    {
        if (DeliversByMx(routing))
            return true;
        foreach (var route in routing.Routes.All)
            if (!route.Local)
                foreach (var host in route.Hosts)
                    if (!IPAddress.TryParse(host.Host, out _))
                        return true;
        return false;
    }

    /// <summary>
    /// True when some mail may go by MX lookup (where MTA-STS applies, RFC 8461): no smarthost
    /// ("*" route or relayTo) or local "*" route takes every domain the other routes do not, or
    /// a route names no hosts (MX with overrides). Routes to fixed hosts never use MX.
    /// </summary>
    public static bool DeliversByMx(RoutingSettings routing)
    {
        bool everythingElseRouted = false;
        foreach (var route in routing.Routes.All)
        {
            if (!route.Local && !route.HasHosts)
                return true;
            if (route.Pattern == "*")
                everythingElseRouted = true;
        }
        return !everythingElseRouted;
    }
}
