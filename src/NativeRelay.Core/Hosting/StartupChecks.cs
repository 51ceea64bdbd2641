using System.Net;
using NativeRelay.Config;
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
        if (TlsRequiredBy(settings) is { } what)
        {
            if (openSslProblem() is { } ssl)
                throw new ConfigException(OpenSslLibrary.Refusal(what, ssl));
            // .NET's certificate code looks for the user's certificate stores under the home
            // directory ($HOME, else the user's /etc/passwd entry) and fails with a bare "No such
            // file or directory" when there is none (a scratch image without /etc/passwd).
            if (settings.Tls is not null && home().Length == 0)
                throw new ConfigException($"tls.certificate: the relay's user has no home directory (HOME is unset and /etc/passwd has no entry for uid {PrivilegeDrop.GetEUid()}), which .NET needs to load a certificate; add the user to /etc/passwd or set HOME");
        }
        if (settings.Routing.DnsServers.Count == 0 && NeedsDns(settings.Routing) && dnsProblem() is { } dns)
            throw new ConfigException(dns);
        // Every egress source's address must be on this host (a bind test, with the source's name).
        settings.Traffic.CheckBind();
    }

    /// <summary>$HOME, else the user's entry in the password database, as .NET looks for it; "" when neither.</summary>
    private static string HomeDirectory() =>
        Environment.GetEnvironmentVariable("HOME") is { Length: > 0 } home ? home
        : PrivilegeDrop.CurrentUserHasEntry() ? "(from /etc/passwd)" : "";

    /// <summary>
    /// The option that makes the relay use TLS, or null when nothing does: a certificate (STARTTLS
    /// and implicit TLS when receiving), or the required policy when delivering (by default, or
    /// on a route), or verify. Opportunistic STARTTLS, the default, is skipped when OpenSSL is missing.
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
    /// True when some mail may need a DNS lookup: no smarthost ("*" route or relayTo) or local
    /// "*" route takes every domain the other routes do not (MX lookup), a route names no hosts
    /// (MX with overrides), or a route's host is a name rather than an IP address. Bounces go
    /// through the same routes, so a relay whose routes are all IP addresses needs no resolver.
    /// </summary>
    public static bool NeedsDns(RoutingSettings routing)
    {
        bool everythingElseRouted = false;
        foreach (var route in routing.Routes.All)
        {
            if (!route.Local)
            {
                if (!route.HasHosts)
                    return true;
                foreach (var host in route.Hosts)
                    if (!IPAddress.TryParse(host.Host, out _))
                        return true;
            }
            if (route.Pattern == "*")
                everythingElseRouted = true;
        }
        return !everythingElseRouted;
    }
}
