using NativeRelay.Delivery;

namespace NativeRelay.Telemetry;

/// <summary>
/// Feeds <see cref="RelayMetrics.QueueSize"/> from the delivery side's own queue counts
/// (<see cref="IQueueAdmin.Stats"/>, as <c>nativerelay queue stats</c> shows them), read when the
/// endpoint is scraped: the delivery path counts nothing for it. A scrape walks the live messages
/// once, so its cost grows with the queue, not with the traffic. Dispose to detach.
/// </summary>
public sealed class QueueGauges : IDisposable
{
    private readonly Action<long[]> _fill;

    private QueueGauges(IQueueAdmin admin)
    {
        _fill = counts =>
        {
            var stats = admin.Stats();
            counts[RelayMetrics.QueueActive] = stats.Active;
            counts[RelayMetrics.QueueDeferred] = stats.Deferred;
            counts[RelayMetrics.QueueHeld] = stats.Held;
        };
        RelayMetrics.QueueSize.SetSnapshotSource(_fill);
    }

    public static QueueGauges Attach(IQueueAdmin admin) => new(admin);

    public void Dispose() => RelayMetrics.QueueSize.ClearSnapshotSource(_fill);
}
