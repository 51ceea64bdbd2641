namespace NativeRelay.Net;

/// <summary>
/// One timer for the read and write deadlines of every connection, ticking once a second
/// (Kestrel's heartbeat). A connection arms its <see cref="Deadline"/> before each wait for its
/// peer (two field writes) and disarms it after (an interlocked exchange); the clock walks the
/// registered deadlines on each tick and expires the armed ones that have passed.
/// </summary>
/// <remarks>
/// What it replaces: a <see cref="CancellationTokenSource"/> per connection re-armed with
/// <c>CancelAfter</c> and reset with <c>TryReset</c> around every read and every flush, that is
/// sixteen timer-queue updates (each under the timer queue's lock) and eight token registrations
/// per relayed message on the receiving side alone (four reads, four flushes), for timeouts of minutes that almost never
/// fire. The price is precision: a deadline expires within one tick after it passes, which for
/// SMTP's timeouts (whole seconds, RFC 5321 4.5.3.2 suggests minutes) is nothing.
/// <para>The clock runs only while some deadline is registered, so an idle process is not woken
/// once a second for nothing. Expiry runs on the thread pool, outside the clock's lock, so a
/// connection's reaction (cancelling a read, which may resume its session inline) can neither
/// stall the tick nor re-enter the clock. The walk holds the lock that registering and
/// unregistering take, once per connection; at tens of thousands of connections a tick is still
/// well under a millisecond.</para>
/// </remarks>
internal sealed class DeadlineClock
{
    /// <summary>The clock every connection in the process shares.</summary>
    public static DeadlineClock Shared { get; } = new(TimeSpan.FromSeconds(1));

    private readonly Lock _lock = new();
    private readonly Timer _timer;
    private readonly int _periodMs;
    private Deadline? _first;   // registered deadlines, a doubly linked list through the deadlines themselves
    private bool _running;

    public DeadlineClock(TimeSpan period)
    {
        _periodMs = (int)Math.Max(1, period.TotalMilliseconds);
        // No ExecutionContext captured: a tick belongs to no caller.
        using (ExecutionContext.SuppressFlow())
            _timer = new Timer(static s => ((DeadlineClock)s!).Tick(), this, Timeout.Infinite, Timeout.Infinite);
    }

    /// <summary>How many deadlines are registered (tests).</summary>
    public int Count
    {
        get
        {
            lock (_lock)
            {
                int count = 0;
                for (var d = _first; d is not null; d = d.Next)
                    count++;
                return count;
            }
        }
    }

    /// <summary>Whether the timer is running (it stops while nothing is registered).</summary>
    internal bool IsRunning
    {
        get { lock (_lock) return _running; }
    }

    internal void Add(Deadline deadline)
    {
        lock (_lock)
        {
            if (deadline.Registered)
                return;
            deadline.Registered = true;
            deadline.Next = _first;
            deadline.Previous = null;
            if (_first is not null)
                _first.Previous = deadline;
            _first = deadline;
            if (!_running)
            {
                _running = true;
                _timer.Change(_periodMs, _periodMs);
            }
        }
    }

    internal void Remove(Deadline deadline)
    {
        lock (_lock)
        {
            if (!deadline.Registered)
                return;
            deadline.Registered = false;
            if (deadline.Previous is not null)
                deadline.Previous.Next = deadline.Next;
            else
                _first = deadline.Next;
            if (deadline.Next is not null)
                deadline.Next.Previous = deadline.Previous;
            deadline.Next = deadline.Previous = null;
        }
    }

    /// <summary>One tick: expires every armed deadline that has passed.</summary>
    public void Tick() => Tick(now: null);

    /// <summary>A tick as if the time were <paramref name="now"/> (tests: expire without waiting).</summary>
    internal void Tick(long? now)
    {
        lock (_lock)
        {
            long time = now ?? Environment.TickCount64;
            for (var d = _first; d is not null; d = d.Next)
            {
                // Queued, not run: the owner's reaction must not run under this lock.
                if (d.TryExpire(time, out var waitingFor))
                    ThreadPool.UnsafeQueueUserWorkItem(static e => e.Deadline.RunExpired(e.WaitingFor), (Deadline: d, WaitingFor: waitingFor), preferLocal: false);
            }
            if (_first is null && _running)
            {
                // Nothing to watch: stop until the next Add.
                _running = false;
                _timer.Change(Timeout.Infinite, Timeout.Infinite);
            }
        }
    }
}
