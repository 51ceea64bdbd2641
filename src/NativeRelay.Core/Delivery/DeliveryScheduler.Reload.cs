using NativeRelay.Config;
using NativeRelay.Routing;

namespace NativeRelay.Delivery;

public sealed partial class DeliveryScheduler
{
    /// <summary>
    /// Applies a reloaded configuration (SIGHUP): the router (static routes, relay-to, DNS), retry
    /// and lifetime, bounce settings, the delivery options new connections are opened with, and the active limit.
    /// Rounds already routed and connections already open finish as they started; the next round
    /// of every message is routed by the new router. The loop count and the delivery log stay.
    /// </summary>
    public void Reconfigure(RelaySettings settings, IRouter router)
    {
        var retry = new RetryPolicy(settings.Delivery);
        var bouncer = new Bouncer(settings, _spool, _ids, this, _log);
        Volatile.Write(ref _router, router);
        Volatile.Write(ref _routing, settings.Routing);
        Volatile.Write(ref _retry, retry);
        Volatile.Write(ref _bouncer, bouncer);
        _context.Routing = settings.Routing;
        _context.TlsPolicies = TlsPolicyResolverFor(settings.Routing, router, _log);
        _context.Retry = retry;
        _context.Settings = settings;
        _traffic.Reconfigure(settings.Traffic, settings.Routing.RemotePort);
        Volatile.Write(ref _settings, settings);
        Volatile.Write(ref _activeLimit, Math.Max(1, settings.Delivery.ActiveLimit));
        _inFlow.Reconfigure(settings.Delivery.InFlowBacklog, settings.Delivery.InFlowDelaySeconds);
    }

    /// <summary>
    /// The TLS policy stage for a configuration (its CA bundle is loaded by the settings); DANE
    /// asks the router's resolver when the operator trusts its AD bit. A reload starts its caches empty.
    /// </summary>
    private static NativeRelay.TlsPolicies.ITlsPolicyResolver TlsPolicyResolverFor(RoutingSettings routing, IRouter router, Telemetry.Log log)
    {
        var verifier = routing.TrustAnchors is null
            ? NativeRelay.TlsPolicies.CertificateVerifier.SystemOnly
            : new NativeRelay.TlsPolicies.CertificateVerifier(routing.TrustAnchors);
        NativeRelay.TlsPolicies.MtaSts.MtaStsPolicies? sts = null;
        // Without OpenSSL no policy is fetched or used (StartupChecks.FetchesMtaSts; start-up says so once).
        if (NativeRelay.Hosting.StartupChecks.FetchesMtaSts(routing, NativeRelay.Net.OpenSslLibrary.Problem)
            && routing.MtaStsDirectory is { } directory && router is Router withDns)
            sts = new NativeRelay.TlsPolicies.MtaSts.MtaStsPolicies(
                new NativeRelay.TlsPolicies.MtaSts.MtaStsStore(directory),
                new NativeRelay.TlsPolicies.MtaSts.MtaStsFetcher(withDns.Dns, verifier, routing.MtaStsPort, routing.MtaStsFetchTimeout),
                log: line => log.Info(line));
        return new NativeRelay.TlsPolicies.TlsPolicyResolver(verifier,
            routing.Dnssec && routing.Dane && router is Router r ? r.Dns : null,
            routing.DnsCacheSize, sts: sts);
    }
}
