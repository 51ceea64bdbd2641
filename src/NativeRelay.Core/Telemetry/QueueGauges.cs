using NativeRelay.Delivery;

namespace NativeRelay.Telemetry;

/// <summary>
/// Feeds <see cref="RelayMetrics.QueueSize"/> from the delivery side's own queue counters
/// (<see cref="DeliveryScheduler.Counts"/>), read when the endpoint is scraped: the delivery path
/// does no extra work for it, and a scrape costs the same with a million messages queued as with
/// none. Dispose to detach.
/// </summary>
public sealed class QueueGauges : IDisposable
{
    private readonly Action<long[]> _fill;

    private QueueGauges(Func<(int Active, int Deferred, int Held)> read)
    {
        _fill = counts =>
        {
            var (active, deferred, held) = read();
            counts[RelayMetrics.QueueActive] = active;
            counts[RelayMetrics.QueueDeferred] = deferred;
            counts[RelayMetrics.QueueHeld] = held;
        };
        RelayMetrics.QueueSize.SetSnapshotSource(_fill);
    }

    public static QueueGauges Attach(DeliveryScheduler scheduler) => new(scheduler.Counts);

    public void Dispose() => RelayMetrics.QueueSize.ClearSnapshotSource(_fill);
}
