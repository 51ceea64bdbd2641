using System.Threading.Tasks.Sources;

namespace NativeRelay.Delivery;

/// <summary>
/// An open connection parked until its destination has a job for it (true), or the idle time
/// passes or the relay stops (false). One per connection, reused for every wait, so a wait
/// allocates nothing and leaves nothing behind when a job comes first. (A Task.Delay per wait
/// used to stay in the timer queue for the whole idle time: under load, one per message.)
/// <see cref="WaitAsync"/> and <see cref="Wake"/> run on the delivery loop's thread, where the
/// destination's state lives; the timer and the stop only post a look at it there.
/// </summary>
internal sealed class IdleWait : IValueTaskSource<bool>, IDisposable
{
    private ManualResetValueTaskSourceCore<bool> _core = new() { RunContinuationsAsynchronously = true };
    private readonly SynchronizationContext _loop;
    private readonly CancellationToken _stopping;
    private readonly Action<IdleWait> _expired;
    private readonly Timer _timer;
    private readonly CancellationTokenRegistration _onStop;
    private long _dueMs;

    /// <param name="loop">The delivery loop's context.</param>
    /// <param name="expired">Called on the loop when the wait ends without a job: the owner forgets the wait, then calls <see cref="Wake"/>(false).</param>
    public IdleWait(SynchronizationContext loop, CancellationToken stopping, Action<IdleWait> expired)
    {
        _loop = loop;
        _stopping = stopping;
        _expired = expired;
        _timer = new Timer(static self => ((IdleWait)self!).PostLook(), this, Timeout.Infinite, Timeout.Infinite);
        _onStop = stopping.UnsafeRegister(static self => ((IdleWait)self!).PostLook(), this);
    }

    public bool Waiting { get; private set; }

    /// <summary>Starts a wait (the previous one must have been awaited).</summary>
    public ValueTask<bool> WaitAsync(TimeSpan idle)
    {
        if (_stopping.IsCancellationRequested)
            return new ValueTask<bool>(false);
        _core.Reset();
        Waiting = true;
        _dueMs = Environment.TickCount64 + (long)idle.TotalMilliseconds;
        // Re-arming also cancels a tick left from an earlier wait that a job ended.
        _timer.Change(idle, Timeout.InfiniteTimeSpan);
        return new ValueTask<bool>(this, _core.Version);
    }

    /// <summary>Ends the wait (on the loop's thread); nothing when it is not waiting.</summary>
    public void Wake(bool job)
    {
        if (!Waiting)
            return;
        Waiting = false;
        _core.SetResult(job);
    }

    private void PostLook() => _loop.Post(static self => ((IdleWait)self!).Look(), this);

    private void Look()
    {
        if (!Waiting)
            return; // a job came first
        long left = _dueMs - Environment.TickCount64;
        if (left > 0 && !_stopping.IsCancellationRequested)
        {
            // A tick from an earlier wait, or an early one: wait out the rest.
            _timer.Change(left, Timeout.Infinite);
            return;
        }
        _expired(this);
    }

    public void Dispose()
    {
        _onStop.Dispose();
        _timer.Dispose();
    }

    bool IValueTaskSource<bool>.GetResult(short token) => _core.GetResult(token);
    ValueTaskSourceStatus IValueTaskSource<bool>.GetStatus(short token) => _core.GetStatus(token);
    void IValueTaskSource<bool>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _core.OnCompleted(continuation, state, token, flags);
}
