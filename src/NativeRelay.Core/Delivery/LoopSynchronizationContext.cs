namespace NativeRelay.Delivery;

/// <summary>
/// A single-threaded event loop. Every continuation of async code started on it runs on its one
/// thread, so the state a delivery loop owns (destination queues, connection counts, retry heap)
/// is only ever touched by that thread and needs no locks. Socket completions arrive on I/O
/// threads and are posted here.
/// </summary>
internal sealed class LoopSynchronizationContext : SynchronizationContext
{
    private readonly Queue<(SendOrPostCallback Callback, object? State)> _work = new();
    private readonly object _gate = new();
    private bool _stopped;

    public int ManagedThreadId { get; private set; }

    public override void Post(SendOrPostCallback d, object? state)
    {
        lock (_gate)
        {
            if (_stopped)
            {
                // Late completions after shutdown still run, on the thread pool, so nothing hangs.
                ThreadPool.UnsafeQueueUserWorkItem(s => d(s), state, preferLocal: false);
                return;
            }
            _work.Enqueue((d, state));
            if (_work.Count == 1)
                Monitor.Pulse(_gate);
        }
    }

    public override void Send(SendOrPostCallback d, object? state) =>
        throw new NotSupportedException("a delivery loop never blocks on another thread");

    public override SynchronizationContext CreateCopy() => this;

    /// <summary>Runs work items on the calling thread until <see cref="Stop"/>.</summary>
    public void Run()
    {
        ManagedThreadId = Environment.CurrentManagedThreadId;
        SetSynchronizationContext(this);
        while (true)
        {
            (SendOrPostCallback Callback, object? State) item;
            lock (_gate)
            {
                while (_work.Count == 0 && !_stopped)
                    Monitor.Wait(_gate);
                if (_work.Count == 0)
                    return;
                item = _work.Dequeue();
            }
            item.Callback(item.State);
        }
    }

    public void Stop()
    {
        lock (_gate)
        {
            _stopped = true;
            Monitor.PulseAll(_gate);
        }
    }
}
