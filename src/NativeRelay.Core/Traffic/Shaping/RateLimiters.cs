using System.Diagnostics;

namespace NativeRelay.Traffic.Shaping;

/// <summary>
/// Smooth token buckets (GCRA with a burst of one: a bucket of N per period lets one message
/// through every period/N), one per configured rate, kept as "theoretical arrival times" in
/// <see cref="Stopwatch"/> ticks. Taking a slot reserves it: a connection that must wait knows
/// when its turn is, and the next one queues behind it, so several connections of one path
/// together keep to the rate.
/// <para>
/// This one belongs to one delivery loop (a (source, site) path is owned by exactly one loop,
/// chosen by the path's hash), so it is plain fields: no lock, no interlocked operation.
/// </para>
/// </summary>
internal sealed class LocalRates
{
    private readonly long[] _interval;
    private readonly long[] _tat;

    private LocalRates(long[] intervals)
    {
        _interval = intervals;
        _tat = new long[intervals.Length];
    }

    /// <summary>The buckets of these limits (null when none is set).</summary>
    public static LocalRates? For(ShapingLimits limits) =>
        Intervals(limits.MessagesPerSecond, limits.MessagesPerMinute, limits.MessagesPerHour, limits.MessagesPerDay) is { } i ? new LocalRates(i) : null;

    /// <summary>One bucket of <paramref name="perMinute"/> (new connections).</summary>
    public static LocalRates? PerMinute(double? perMinute) =>
        Intervals(null, perMinute, null, null) is { } i ? new LocalRates(i) : null;

    internal static long[]? Intervals(double? perSecond, double? perMinute, double? perHour, double? perDay)
    {
        var list = new List<long>(4);
        Add(list, perSecond, 1);
        Add(list, perMinute, 60);
        Add(list, perHour, 3600);
        Add(list, perDay, 86400);
        return list.Count == 0 ? null : list.ToArray();

        static void Add(List<long> list, double? count, double seconds)
        {
            if (count is > 0 and var n)
                list.Add(Math.Max(1, (long)(Stopwatch.Frequency * seconds / n)));
        }
    }

    /// <summary>The earliest time (ticks) a message may go, at <paramref name="now"/> or later.</summary>
    public long Next(long now)
    {
        long slot = now;
        for (int i = 0; i < _tat.Length; i++)
            if (_tat[i] > slot)
                slot = _tat[i];
        return slot;
    }

    /// <summary>Reserves the earliest slot from <paramref name="now"/> in every bucket and returns it.</summary>
    public long Take(long now)
    {
        long slot = Next(now);
        for (int i = 0; i < _tat.Length; i++)
            _tat[i] = slot + _interval[i];
        return slot;
    }

    /// <summary>Carries the state over to new limits (a reload): the reservations made stand.</summary>
    public void CarryFrom(LocalRates? old)
    {
        if (old is null)
            return;
        long latest = old.Next(0);
        for (int i = 0; i < _tat.Length; i++)
            _tat[i] = latest;
    }
}

/// <summary>
/// The same buckets shared by every delivery loop (an egress source's own limits, over all its
/// sites), lock-free: each bucket is one 64-bit theoretical arrival time moved forward with
/// compare-and-exchange. Per-loop shares were the alternative; they would under-use a source
/// whose mail is spread unevenly over the loops (every loop idle but one, which would get only
/// 1/N of the rate), and at these rates (at most a few thousand a second) one CAS per message is
/// uncontended.
/// </summary>
internal sealed class SharedRates
{
    private readonly long[] _interval;
    private readonly long[] _tat;

    private SharedRates(long[] intervals)
    {
        _interval = intervals;
        _tat = new long[intervals.Length];
    }

    public static SharedRates? For(double? perSecond, double? perMinute, double? perHour, double? perDay) =>
        LocalRates.Intervals(perSecond, perMinute, perHour, perDay) is { } i ? new SharedRates(i) : null;

    /// <summary>The earliest time a message may go, at <paramref name="now"/> or later (a look, nothing reserved).</summary>
    public long Next(long now)
    {
        long slot = now;
        for (int i = 0; i < _tat.Length; i++)
        {
            long tat = Volatile.Read(ref _tat[i]);
            if (tat > slot)
                slot = tat;
        }
        return slot;
    }

    /// <summary>Reserves a slot at <paramref name="notBefore"/> or later in every bucket; returns the latest of them.</summary>
    public long Take(long notBefore)
    {
        long slot = notBefore;
        for (int i = 0; i < _tat.Length; i++)
        {
            long seen = Volatile.Read(ref _tat[i]);
            while (true)
            {
                long at = Math.Max(seen, notBefore);
                long was = Interlocked.CompareExchange(ref _tat[i], at + _interval[i], seen);
                if (was == seen)
                {
                    if (at > slot)
                        slot = at;
                    break;
                }
                seen = was;
            }
        }
        return slot;
    }
}
