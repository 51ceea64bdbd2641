using System.Collections.Concurrent;

namespace NativeRelay.Delivery;

/// <summary>
/// A single-threaded event loop. Every continuation of async code started on it runs on its one
/// thread, so the state a delivery loop owns (destination queues, connection counts, retry heap)
/// is only ever touched by that thread and needs no locks. Socket completions arrive on I/O
/// threads and are posted here.
/// <para>
/// Posting takes no lock: under load every relayed message posts here from the socket threads
/// several times, and a contended lock there spins and yields on a machine whose cores the
/// sessions need. The loop runs whatever is queued and only sleeps on an empty queue; a poster
/// wakes it only when it is asleep (<see cref="_sleeping"/>), so a busy loop costs its posters an
/// enqueue and nothing else.
/// </para>
/// </summary>
internal sealed class LoopSynchronizationContext : SynchronizationContext
{
    private readonly ConcurrentQueue<(SendOrPostCallback Callback, object? State)> _work = new();
    private readonly AutoResetEvent _wake = new(false);
    private int _sleeping; // 1 from just before the loop's last look at the queue until it wakes
    private volatile bool _stopped;
    private int _exited; // 1 once Run has left; set with a full fence (see Run)

    public int ManagedThreadId { get; private set; }

    public override void Post(SendOrPostCallback d, object? state)
    {
        if (_stopped)
        {
            // Late completions after shutdown still run, on the thread pool, so nothing hangs.
            ThreadPool.UnsafeQueueUserWorkItem(s => d(s), state, preferLocal: false);
            return;
        }
        _work.Enqueue((d, state));
        // The enqueue is a full fence, so either the loop sees this item in its last look before
        // sleeping, or this sees it asleep and wakes it.
        if (Volatile.Read(ref _sleeping) == 1 && Interlocked.Exchange(ref _sleeping, 0) == 1)
            _wake.Set();
        // A stop may have come after the check above and the loop ended after its last look at
        // the queue: then nothing else would run this item. (Both sides fence before they look.)
        if (Volatile.Read(ref _exited) == 1)
            HandOverToPool();
    }

    public override void Send(SendOrPostCallback d, object? state) =>
        throw new NotSupportedException("a delivery loop never blocks on another thread");

    public override SynchronizationContext CreateCopy() => this;

    /// <summary>Runs work items on the calling thread until <see cref="Stop"/>; what was queued by then still runs here, later posts go to the thread pool.</summary>
    public void Run()
    {
        ManagedThreadId = Environment.CurrentManagedThreadId;
        SetSynchronizationContext(this);
        while (true)
        {
            while (_work.TryDequeue(out var item))
                item.Callback(item.State);
            if (_stopped)
                break;
            Interlocked.Exchange(ref _sleeping, 1); // a full fence before the last look
            if (!_work.IsEmpty || _stopped)
            {
                Volatile.Write(ref _sleeping, 0);
                continue;
            }
            _wake.WaitOne();
            Volatile.Write(ref _sleeping, 0);
        }
        // A full fence between saying so and the last look, so a racing Post either is seen
        // here or sees this.
        Interlocked.Exchange(ref _exited, 1);
        HandOverToPool();
    }

    public void Stop()
    {
        _stopped = true;
        Interlocked.Exchange(ref _sleeping, 0);
        _wake.Set();
    }

    // After the loop ended: whatever is still queued runs on the thread pool.
    private void HandOverToPool()
    {
        while (_work.TryDequeue(out var item))
            ThreadPool.UnsafeQueueUserWorkItem(static s => s.Callback(s.State), item, preferLocal: false);
    }
}
