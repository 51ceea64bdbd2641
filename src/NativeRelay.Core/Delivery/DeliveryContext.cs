using NativeRelay.Config;
using NativeRelay.Routing;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Delivery;

/// <summary>
/// What every delivery loop shares (all of it immutable or thread-safe). Settings, Routing and
/// Retry are replaced by a reload (each an immutable snapshot); a connection reads them when it
/// starts, so deliveries in progress finish under the settings they started with.
/// </summary>
internal sealed class DeliveryContext
{
    public required RelaySettings Settings { get; set; }
    public required RoutingSettings Routing { get; set; }
    /// <summary>The TLS policy stage: per connection, the policy and certificate check (replaced with Routing).</summary>
    public required NativeRelay.TlsPolicies.ITlsPolicyResolver TlsPolicies { get; set; }
    /// <summary>TLS-RPT counts (null: tlsRpt.enabled is false); fed only by routes that carry a policy domain.</summary>
    public NativeRelay.TlsPolicies.Reporting.TlsRptRecorder? TlsReports { get; init; }
    public required SpoolLog Spool { get; init; }
    public required Log Log { get; init; }
    public required DeliveryLog DeliveryLog { get; init; }
    public required RetryPolicy Retry { get; set; }
    public required DeliveryScheduler Scheduler { get; init; }
    /// <summary>Traffic control: egress paths, their shaping state, automation (its configuration is replaced inside by a reload).</summary>
    public required NativeRelay.Traffic.ITrafficControl Traffic { get; init; }
    public required CancellationToken Stopping { get; init; }
}
