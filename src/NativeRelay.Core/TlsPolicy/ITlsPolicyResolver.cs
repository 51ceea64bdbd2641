using NativeRelay.Routing;

namespace NativeRelay.TlsPolicies;

/// <summary>
/// The one way the delivery path reaches the TLS policy stage: for the next hop a connection is
/// about to open, the policy to apply and the certificate check its handshake runs. Called once
/// per connection (the answers behind it are cached for their lifetime), never per message.
/// </summary>
public interface ITlsPolicyResolver
{
    /// <param name="route">The destination (its policy is the configured one: route, then delivery.tlsPolicy).</param>
    /// <param name="host">The next hop being connected to.</param>
    /// <param name="policy">The policy the caller asks for (the route's, or None for a plain-text retry).</param>
    ValueTask<PeerCertificateCheck> ForConnectionAsync(Route route, RouteHost host, TlsPolicy policy, CancellationToken cancel);
}
