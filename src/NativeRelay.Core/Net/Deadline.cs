namespace NativeRelay.Net;

/// <summary>What a connection was waiting for when its deadline passed.</summary>
internal enum DeadlineFor : byte
{
    /// <summary>Bytes from the peer: cancel the pending read.</summary>
    Read,
    /// <summary>The peer taking our bytes: cancel the pending flush.</summary>
    Write,
}

/// <summary>
/// A connection's timeout, watched by a <see cref="DeadlineClock"/>. Arm it before waiting for the
/// peer, disarm it after; <see cref="Disarm"/> says whether it expired in between. On expiry the
/// owner's callback runs once, on the thread pool, with what was being waited for, and should
/// cancel that wait (<c>CancelPendingRead</c>, <c>CancelPendingFlush</c>) so the owner sees it.
/// Once <see cref="Disarm"/> has said so, that cancel may still be on its way: the owner must
/// treat the connection as timed out and not wait on it again.
/// </summary>
/// <remarks>
/// Arming is two field writes and disarming an interlocked exchange, with nothing allocated and no
/// lock: this is on every command of every session. The clock's lock is taken once per connection
/// (register, unregister) and by each tick. The three states of <c>_due</c>: 0 disarmed, -1
/// expired (set by the clock with a compare-and-swap, so an expiry and a disarm cannot both win),
/// and otherwise the <see cref="Environment.TickCount64"/> at which it passes. That value is at
/// least now + 1, and the tick count never goes back, so a deadline re-armed after an expiry can
/// never carry the value the clock compared against (no ABA).
/// </remarks>
internal sealed class Deadline : IDisposable
{
    private const long Disarmed = 0;
    private const long Expired = -1;

    private readonly DeadlineClock _clock;
    private readonly Action<object, DeadlineFor> _onExpired;
    private readonly object _state;
    private long _due;
    private DeadlineFor _armedFor;

    // The clock's list, guarded by the clock's lock.
    internal Deadline? Next;
    internal Deadline? Previous;
    internal bool Registered;

    /// <param name="onExpired">Called once per expiry on the thread pool with <paramref name="state"/>; exceptions are swallowed (the owner may already be gone).</param>
    public Deadline(DeadlineClock clock, Action<object, DeadlineFor> onExpired, object state)
    {
        _clock = clock;
        _onExpired = onExpired;
        _state = state;
        clock.Add(this);
    }

    /// <summary>
    /// Starts the countdown: the deadline passes <paramref name="after"/> from now (at least 1 ms;
    /// <see cref="Timeout.InfiniteTimeSpan"/> leaves it disarmed, a wait without a deadline).
    /// </summary>
    public void Arm(TimeSpan after, DeadlineFor waitingFor)
    {
        System.Diagnostics.Debug.Assert(Registered, "armed after Dispose: it would never expire");
        if (after == Timeout.InfiniteTimeSpan)
            return;
        _armedFor = waitingFor;
        long ms = Math.Max(1, (long)after.TotalMilliseconds);
        Volatile.Write(ref _due, Environment.TickCount64 + ms);
    }

    /// <summary>Stops the countdown. True when the deadline passed while armed (the wait was, or is being, cancelled).</summary>
    public bool Disarm() => Interlocked.Exchange(ref _due, Disarmed) == Expired;

    /// <summary>True while armed and not yet expired.</summary>
    public bool IsArmed => Volatile.Read(ref _due) > 0;

    /// <summary>
    /// The clock's side, under its lock: expires this deadline if it is armed and has passed, and
    /// says what was being waited for (read before the swap, so it belongs to the arming that expired).
    /// </summary>
    internal bool TryExpire(long now, out DeadlineFor waitingFor)
    {
        waitingFor = default;
        long due = Volatile.Read(ref _due);
        if (due <= 0 || now < due)
            return false;
        waitingFor = _armedFor;
        // Fails when the owner disarmed (or disarmed and re-armed) meanwhile: that wait ended in time.
        return Interlocked.CompareExchange(ref _due, Expired, due) == due;
    }

    internal void RunExpired(DeadlineFor waitingFor)
    {
        try
        {
            _onExpired(_state, waitingFor);
        }
        catch (Exception e) when (e is ObjectDisposedException or InvalidOperationException)
        {
            // The owner finished while its expiry was queued: a stream pipe disposes its cancellation
            // source when completed, so a late cancel can throw. Nothing is waiting any more.
        }
    }

    /// <summary>Leaves the clock. An expiry already queued may still run its callback once.</summary>
    public void Dispose() => _clock.Remove(this);
}
