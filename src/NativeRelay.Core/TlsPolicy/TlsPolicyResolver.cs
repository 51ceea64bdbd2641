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
/// plain text). Otherwise the configured policy (a route's tls, then delivery.tlsPolicy) with the
/// CA check of "verify". Lookups go through the router's resolver and are cached for their TTL,
/// so a connection costs no query while its answers live.
/// </summary>
public sealed class TlsPolicyResolver : ITlsPolicyResolver
{
    private readonly CertificateVerifier _verifier;
    private readonly IDnsResolver? _dns;
    private readonly TtlCache<AddressAnswer>? _addresses;
    private readonly TtlCache<TlsaAnswer>? _tlsa;

    /// <param name="dns">The validating resolver whose AD bit is trusted; null: no DANE.</param>
    public TlsPolicyResolver(CertificateVerifier verifier, IDnsResolver? dns, int cacheSize = 10_000, Func<long>? nowMs = null)
    {
        _verifier = verifier;
        _dns = dns;
        if (dns is not null)
        {
            nowMs ??= () => Environment.TickCount64;
            _addresses = new TtlCache<AddressAnswer>(cacheSize, nowMs);
            _tlsa = new TtlCache<TlsaAnswer>(cacheSize, nowMs);
        }
    }

    public bool DaneEnabled => _dns is not null;

    public async ValueTask<PeerCertificateCheck> ForConnectionAsync(Route route, RouteHost host, TlsPolicy policy, CancellationToken cancel)
    {
        bool literal = IPAddress.TryParse(host.Name, out _);
        string? name = literal ? null : host.Name;
        if (_dns is null || literal || policy == TlsPolicy.None)
            return new PeerCertificateCheck(policy, name, _verifier);

        var addresses = await _addresses!.GetAsync(host.Name, async h =>
        {
            var answer = await _dns.QueryAddressesAsync(h, CancellationToken.None).ConfigureAwait(false);
            return (answer, answer.Status == DnsStatus.TempFail ? Router.TransientFailureTtl : answer.Ttl);
        }).WaitAsync(cancel).ConfigureAwait(false);
        if (!addresses.Authentic || addresses.Status != DnsStatus.Ok)
            return new PeerCertificateCheck(policy, name, _verifier); // an insecure host: DANE does not apply

        string tlsaName = $"_{host.Port}._tcp.{host.Name}";
        var tlsa = await _tlsa!.GetAsync(tlsaName, async n =>
        {
            var answer = await _dns.QueryTlsaAsync(n, CancellationToken.None).ConfigureAwait(false);
            return (answer, answer.Status == DnsStatus.TempFail ? Router.TransientFailureTtl : answer.Ttl);
        }).WaitAsync(cancel).ConfigureAwait(false);
        if (tlsa.Status == DnsStatus.TempFail)
            return new PeerCertificateCheck(policy, name, _verifier,
                refusal: $"TLSA lookup of {tlsaName} failed{(tlsa.Error is null ? "" : ": " + tlsa.Error)}; not delivering without DANE");
        if (!tlsa.Authentic || tlsa.Status != DnsStatus.Ok)
            return new PeerCertificateCheck(policy, name, _verifier);
        var usable = DaneMatcher.Usable(tlsa.Records);
        if (usable.Length == 0) // RFC 7672 2.2: TLS stays mandatory, unauthenticated
            return new PeerCertificateCheck(policy < TlsPolicy.Required ? TlsPolicy.Required : policy, name, _verifier);
        return new PeerCertificateCheck(policy, name, _verifier, dane: usable);
    }
}
