using System.Net;
using NativeRelay.Routing;

namespace NativeRelay.TlsPolicies;

/// <summary>
/// The precedence of the policies for one next hop (docs/CONFIG.md, "Outbound TLS"):
/// DANE first, when it is on (outboundTls.dane and a trusted validating resolver,
/// routing.dnssec) and the host's address records and its "_PORT._tcp.HOST" TLSA records are
/// DNSSEC-validated: TLS is then mandatory and the certificate must match a usable record; with
/// only unusable records, TLS is mandatory and not authenticated (RFC 7672 2.2); a TLSA lookup
/// that fails for a host whose addresses validated refuses the host (next MX, then defer: never
/// plain text). Then MTA-STS (RFC 8461), for a route that carries a policy domain with a policy:
/// enforce refuses hosts its mx patterns do not name and makes TLS mandatory and CA-verified,
/// testing checks the same and only reports. Otherwise the configured policy (a route's tls, then
/// delivery.tlsPolicy) with the CA check of "verify". A "TLS-Required: No" route (RFC 8689 5)
/// skips all of it. Lookups go through the router's resolver and are cached for their TTL, and
/// policies for their max_age, so a connection costs no query while its answers live.
/// </summary>
public sealed class TlsPolicyResolver : ITlsPolicyResolver
{
    private readonly CertificateVerifier _verifier;
    private readonly IDnsResolver? _dns;
    private readonly TtlCache<AddressAnswer>? _addresses;
    private readonly TtlCache<TlsaAnswer>? _tlsa;
    private readonly MtaSts.MtaStsPolicies? _sts;

    /// <param name="dns">The validating resolver whose AD bit is trusted; null: no DANE.</param>
    /// <param name="sts">The MTA-STS policies; null: MTA-STS off.</param>
    public TlsPolicyResolver(CertificateVerifier verifier, IDnsResolver? dns, int cacheSize = 10_000, Func<long>? nowMs = null,
        MtaSts.MtaStsPolicies? sts = null)
    {
        _verifier = verifier;
        _dns = dns;
        _sts = sts;
        if (dns is not null)
        {
            nowMs ??= () => Environment.TickCount64;
            _addresses = new TtlCache<AddressAnswer>(cacheSize, nowMs);
            _tlsa = new TtlCache<TlsaAnswer>(cacheSize, nowMs);
        }
    }

    public bool DaneEnabled => _dns is not null;

    public MtaSts.MtaStsPolicies? StsPolicies => _sts;

    public async ValueTask<PeerCertificateCheck> ForConnectionAsync(Route route, RouteHost host, TlsPolicy policy, CancellationToken cancel)
    {
        bool literal = IPAddress.TryParse(host.Name, out _);
        string? name = literal ? null : host.Name;
        // RFC 8689 5: "TLS-Required: No" asks for delivery whatever the policies say; TLS when offered.
        if (route.TlsOptional)
            return new PeerCertificateCheck(policy == TlsPolicy.None ? TlsPolicy.None : TlsPolicy.Opportunistic, name, _verifier,
                policyDomain: route.PolicyDomain);
        if (literal || policy == TlsPolicy.None)
            return new PeerCertificateCheck(policy, name, _verifier);
        if (_dns is not null && await DaneAsync(route, host, policy, name, cancel).ConfigureAwait(false) is { } dane)
            return dane; // DANE wins over MTA-STS (RFC 8461 2)
        if (_sts is not null && route.PolicyDomain is { } domain)
            return await StsAsync(route, host, policy, name, domain, cancel).ConfigureAwait(false);
        return new PeerCertificateCheck(policy, name, _verifier, policyDomain: route.PolicyDomain);
    }

    /// <summary>The DANE decision, or null when DANE does not apply to this host (its addresses or TLSA records are not validated).</summary>
    private async ValueTask<PeerCertificateCheck?> DaneAsync(Route route, RouteHost host, TlsPolicy policy, string? name, CancellationToken cancel)
    {
        var addresses = await _addresses!.GetAsync(host.Name, async h =>
        {
            var answer = await _dns!.QueryAddressesAsync(h, CancellationToken.None).ConfigureAwait(false);
            return (answer, answer.Status == DnsStatus.TempFail ? Router.TransientFailureTtl : answer.Ttl);
        }).WaitAsync(cancel).ConfigureAwait(false);
        if (!addresses.Authentic || addresses.Status != DnsStatus.Ok)
            return null; // an insecure host: DANE does not apply

        string tlsaName = $"_{host.Port}._tcp.{host.Name}";
        var tlsa = await _tlsa!.GetAsync(tlsaName, async n =>
        {
            var answer = await _dns!.QueryTlsaAsync(n, CancellationToken.None).ConfigureAwait(false);
            return (answer, answer.Status == DnsStatus.TempFail ? Router.TransientFailureTtl : answer.Ttl);
        }).WaitAsync(cancel).ConfigureAwait(false);
        if (tlsa.Status == DnsStatus.TempFail)
            return new PeerCertificateCheck(policy, name, _verifier,
                refusal: $"TLSA lookup of {tlsaName} failed{(tlsa.Error is null ? "" : ": " + tlsa.Error)}; not delivering without DANE",
                refusalType: TlsFailureType.DnssecInvalid, policyDomain: route.PolicyDomain);
        if (!tlsa.Authentic || tlsa.Status != DnsStatus.Ok)
            return null;
        var usable = DaneMatcher.Usable(tlsa.Records);
        if (usable.Length == 0) // RFC 7672 2.2: TLS stays mandatory, unauthenticated
            return new PeerCertificateCheck(policy < TlsPolicy.Required ? TlsPolicy.Required : policy, name, _verifier, policyDomain: route.PolicyDomain);
        return new PeerCertificateCheck(policy, name, _verifier, dane: usable, policyDomain: route.PolicyDomain);
    }

    /// <summary>
    /// MTA-STS (RFC 8461 4, 5): with a policy in enforce mode, a host that does not match its mx
    /// patterns is refused (next MX, then defer) and a matching one must offer STARTTLS and a
    /// certificate that verifies for its name (the CA check); in testing mode the same is checked
    /// and reported, and the mail goes anyway; mode none, or no policy: the configured policy.
    /// </summary>
    private async ValueTask<PeerCertificateCheck> StsAsync(Route route, RouteHost host, TlsPolicy policy, string? name, string domain,
        CancellationToken cancel)
    {
        var lookup = await _sts!.GetAsync(domain, route.StsRecordId, cancel).ConfigureAwait(false);
        if (lookup.Policy is not { } cached || cached.Policy.Mode == MtaSts.MtaStsMode.None)
            return new PeerCertificateCheck(policy, name, _verifier, policyDomain: domain) { StsFetchFailureType = lookup.FetchFailureType };
        bool matches = cached.Policy.MatchesMx(host.Name);
        if (cached.Policy.Mode == MtaSts.MtaStsMode.Enforce)
        {
            if (!matches)
                return new PeerCertificateCheck(policy, name, _verifier,
                    refusal: $"MTA-STS: {host.Name} is not an MX host the policy of {domain} names (mode enforce, id {cached.Id})",
                    refusalType: TlsFailureType.ValidationFailure, sts: cached, stsEnforced: true, policyDomain: domain);
            return new PeerCertificateCheck(policy, name, _verifier, sts: cached, stsEnforced: true, policyDomain: domain);
        }
        return new PeerCertificateCheck(policy, name, _verifier, sts: cached, stsMxMismatch: !matches, policyDomain: domain);
    }
}
