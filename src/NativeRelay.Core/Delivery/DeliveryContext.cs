using NativeRelay.Config;
using NativeRelay.Routing;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Delivery;

/// <summary>What every delivery loop shares (all of it immutable or thread-safe).</summary>
internal sealed class DeliveryContext
{
    public required RelaySettings Settings { get; init; }
    public required RoutingSettings Routing { get; init; }
    public required SpoolLog Spool { get; init; }
    public required Log Log { get; init; }
    public required DeliveryLog DeliveryLog { get; init; }
    public required RetryPolicy Retry { get; init; }
    public required DeliveryScheduler Scheduler { get; init; }
    public required CancellationToken Stopping { get; init; }
}
