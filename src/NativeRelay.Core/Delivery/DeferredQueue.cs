namespace NativeRelay.Delivery;

/// <summary>
/// Messages waiting for their next attempt, ordered by due time. Any thread may schedule (a round
/// ends on the loop of its last job, or on the scheduler for routing failures), so the heap has a
/// lock; it is touched once per deferral, never on the delivery hot path. An entry carries the
/// message's schedule version: a flush, a hold or a new round makes older entries stale, and they
/// are skipped when they come due.
/// </summary>
internal sealed class DeferredQueue
{
    private readonly PriorityQueue<(QueuedMessage Message, int Version), long> _heap = new();
    private readonly object _gate = new();

    public int Count
    {
        get { lock (_gate) return _heap.Count; }
    }

    public void Schedule(QueuedMessage message, long dueUnixMs)
    {
        int version;
        lock (message)
        {
            version = ++message.ScheduleVersion;
            message.NextAttemptUnixMs = dueUnixMs;
        }
        lock (_gate)
            _heap.Enqueue((message, version), dueUnixMs);
    }

    /// <summary>Takes the next entry due by <paramref name="nowUnixMs"/> that is still current.</summary>
    public bool TryTakeDue(long nowUnixMs, out QueuedMessage message)
    {
        while (true)
        {
            (QueuedMessage Message, int Version) entry;
            lock (_gate)
            {
                if (!_heap.TryPeek(out entry, out long due) || due > nowUnixMs)
                {
                    message = null!;
                    return false;
                }
                _heap.Dequeue();
            }
            if (entry.Message.ScheduleVersion == entry.Version)
            {
                message = entry.Message;
                return true;
            }
        }
    }

    /// <summary>Forgets entries of messages that left the queue (keeps the heap from holding them for days).</summary>
    public void Compact()
    {
        lock (_gate)
        {
            if (_heap.Count < 1024)
                return;
            var keep = new List<((QueuedMessage, int), long)>(_heap.Count);
            foreach (var (entry, due) in _heap.UnorderedItems)
                if (!entry.Message.Finalized && entry.Message.ScheduleVersion == entry.Version)
                    keep.Add((entry, due));
            if (keep.Count == _heap.Count)
                return;
            _heap.Clear();
            foreach (var (entry, due) in keep)
                _heap.Enqueue(entry, due);
        }
    }
}
