using System.Diagnostics;
using NativeRelay.Telemetry;

namespace NativeRelay.Delivery;

/// <summary>
/// Inflow control, after Postfix's <c>in_flow_delay</c>: while more new messages wait for the end
/// of their first delivery attempt than <c>delivery.inFlowBacklog</c>, a receiver pauses before it
/// takes the next one, until the backlog is back within the limit or
/// <c>delivery.inFlowDelaySeconds</c> has passed; then it goes ahead anyway. The pause slows a
/// sender that outruns delivery; it never refuses one.
/// </summary>
/// <remarks>
/// Mail taken in faster than it goes out only lengthens the queue, and here it also slows the way
/// out: the receiving threads take the cores that delivery needs, and a destination keeps only its
/// first 256 queued bodies in memory, so the rest are read back from the spool (at 100 KiB that
/// read-back was 9.5 % of the relay's samples). Measured with 100 KiB messages, 10 reused
/// sessions: 78-82 % of the ceiling without the gate, 81.8-87.9 % with it at a backlog of 256
/// (median 85.4 % over ten runs; perf/RESULTS.md). Only new mail counts: a deferred message has left the backlog, so a next
/// hop that is down does not hold the senders back. DSNs and the queue's own re-injections do not
/// pass the gate. With room, the check is a read and a compare.
/// </remarks>
public sealed class InFlowGate
{
    private readonly Func<int> _backlog;
    private readonly Lock _lock = new();
    private int _limit;
    private long _maxPauseTicks;
    private TaskCompletionSource? _room;

    /// <param name="backlog">New messages waiting for the end of their first attempt.</param>
    public InFlowGate(Func<int> backlog, int limit, double maxPauseSeconds)
    {
        _backlog = backlog;
        Reconfigure(limit, maxPauseSeconds);
    }

    /// <summary>New limits, from a reload; pauses already under way keep their deadline.</summary>
    public void Reconfigure(int limit, double maxPauseSeconds)
    {
        Volatile.Write(ref _limit, Math.Max(1, limit));
        Volatile.Write(ref _maxPauseTicks, TimeSpan.FromSeconds(Math.Max(0, maxPauseSeconds)).Ticks);
        // Whoever waits goes on, as after a pause: simpler than telling a wider limit from a
        // narrower one, and a reload is rare; the next receivers meet the new limit.
        Release();
    }

    /// <summary>Completes at once while the backlog is within the limit; otherwise when it is, or when the pause is up.</summary>
    public ValueTask WaitForRoomAsync()
    {
        if (Volatile.Read(ref _maxPauseTicks) == 0 || _backlog() <= Volatile.Read(ref _limit))
            return default;
        return PauseAsync();
    }

    private async ValueTask PauseAsync()
    {
        Task room;
        lock (_lock)
        {
            _room ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            room = _room.Task;
        }

        // The backlog may have shrunk between the first look and the registration, with nobody
        // left to complete the registration: look again now that a shrink would find it.
        if (_backlog() <= Volatile.Read(ref _limit))
            return;
        long started = Stopwatch.GetTimestamp();
        await room.WaitAsync(TimeSpan.FromTicks(Volatile.Read(ref _maxPauseTicks)))
            .ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        RelayMetrics.InFlowPauses.Increment();
        RelayMetrics.InFlowPauseSeconds.ObserveSince(started);
    }

    /// <summary>A new message left the backlog (its first attempt ended): wakes the paused receivers once it is within the limit.</summary>
    public void BacklogShrank()
    {
        if (Volatile.Read(ref _room) is null || _backlog() > Volatile.Read(ref _limit))
            return;
        Release();
    }

    private void Release()
    {
        TaskCompletionSource? room;
        lock (_lock)
        {
            room = _room;
            _room = null;
        }

        room?.TrySetResult();
    }
}
