using System.Collections.Concurrent;
using NativeRelay.Config;
using NativeRelay.Routing;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Delivery;

/// <summary>
/// The front of the delivery side. It keeps the index of every live message, resolves where a
/// message goes, and hands it to the one loop that owns that destination (hash of the
/// destination key), so a destination's queue, connections and limits live on one thread.
/// Retries come back through here, so a changed route lands on the right loop.
/// </summary>
public sealed class DeliveryScheduler : IQueueIntake, IAsyncDisposable
{
    private readonly IRouter _router;
    private readonly Log _log;
    private readonly DeliveryLoop[] _loops;
    private readonly ConcurrentDictionary<ulong, QueuedMessage> _live = new();
    // Messages being appended right now, with a floor below which their records cannot be.
    private readonly ConcurrentDictionary<ulong, long> _reservations = new();
    private readonly SpoolLog _spool;
    private readonly CancellationTokenSource _stopping = new();

    public DeliveryScheduler(RelaySettings settings, SpoolLog spool, IRouter router, Log log)
    {
        _router = router;
        _log = log;
        _spool = spool;
        var context = new DeliveryContext
        {
            Settings = settings,
            Spool = spool,
            Log = log,
            Retry = new RetryPolicy(settings.Delivery),
            Scheduler = this,
            Stopping = _stopping.Token,
        };
        int count = settings.Delivery.Loops > 0 ? settings.Delivery.Loops : Environment.ProcessorCount;
        _loops = new DeliveryLoop[count];
        for (int i = 0; i < count; i++)
            _loops[i] = new DeliveryLoop(i, context);
    }

    public int LoopCount => _loops.Length;

    /// <summary>Messages queued and not yet final.</summary>
    public int LiveCount => _live.Count;

    public void Start()
    {
        foreach (var loop in _loops)
            loop.Start();
    }

    public void ReserveSpool(ulong id)
    {
        // Reserve first (blocking all truncation), then lower the guard to the tail: whatever the
        // session appends after this lands at or beyond that tail.
        _reservations[id] = long.MinValue;
        _reservations[id] = _spool.TailAddress;
    }

    public void CancelReservation(ulong id) => _reservations.TryRemove(id, out _);

    public ValueTask EnqueueAsync(QueuedMessage message)
    {
        _live[message.Id] = message;
        _reservations.TryRemove(message.Id, out _);
        return DispatchAsync(message);
    }

    /// <summary>Puts recovered messages back in the queue, each at its scheduled time.</summary>
    public async Task EnqueueRecoveredAsync(IEnumerable<RecoveredMessage> recovered)
    {
        foreach (var r in recovered)
        {
            var message = new QueuedMessage
            {
                Id = r.Id,
                HeadAddress = r.HeadAddress,
                FirstAddress = r.FirstAddress,
                Envelope = r.Envelope,
                Recipients = r.Recipients,
                Attempts = r.Attempts,
                // A restart is a good moment to try again: deliver recovered mail now.
                NextAttemptUnixMs = 0,
            };
            await EnqueueAsync(message);
        }
    }

    /// <summary>Routes a live message to its loop (first time and every retry).</summary>
    internal ValueTask DispatchAsync(QueuedMessage message)
    {
        var route = Resolve(message);
        var loop = _loops[LoopIndex(route.Key)];
        return loop.EnqueueAsync(new DeliveryJob(message, route));
    }

    private Route Resolve(QueuedMessage message)
    {
        var recipients = message.Envelope.Recipients;
        for (int i = 0; i < recipients.Length; i++)
        {
            if (message.Recipients[i] != RecipientState.Pending)
                continue;
            var address = recipients[i].AsSpan();
            int at = address.LastIndexOf((byte)'@');
            return _router.Resolve(at < 0 ? default : address[(at + 1)..]);
        }
        return Route.None("no pending recipients");
    }

    // Ownership only has to be stable within this process, so the (per-process randomised)
    // string hash is enough.
    private int LoopIndex(string key) => (int)((uint)StringComparer.Ordinal.GetHashCode(key) % (uint)_loops.Length);

    internal void Completed(QueuedMessage message) => _live.TryRemove(message.Id, out _);

    /// <summary>The oldest log address a live message still needs (for truncation).</summary>
    public long OldestLiveAddress(long fallback)
    {
        long min = fallback;
        foreach (var floor in _reservations.Values)
            if (floor < min)
                min = floor;
        foreach (var m in _live.Values)
            if (m.FirstAddress < min)
                min = m.FirstAddress;
        return min;
    }

    /// <summary>Stops the loops; deliveries in flight get until the deadline to finish.</summary>
    public async Task StopAsync(TimeSpan deadline)
    {
        _stopping.Cancel();
        var stops = new Task[_loops.Length];
        for (int i = 0; i < _loops.Length; i++)
            stops[i] = _loops[i].StopAsync(deadline);
        await Task.WhenAll(stops);
        // Bodies still held in memory go back to the pool; the messages stay in the spool.
        foreach (var m in _live.Values)
            m.ReleaseBody();
    }

    public async ValueTask DisposeAsync()
    {
        if (!_stopping.IsCancellationRequested)
            await StopAsync(TimeSpan.FromSeconds(5));
        _stopping.Dispose();
    }
}
