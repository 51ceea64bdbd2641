using System.Collections.Concurrent;
using System.Diagnostics;
using NativeRelay.Telemetry;
using NativeRelay.Traffic.Shaping;
using StackExchange.Redis;

namespace NativeRelay.Cluster;

/// <summary>
/// Message rates shared by the fleet: a generic cell rate algorithm in Redis, one hash per limit
/// (a field per period: its theoretical arrival time in Redis's clock), moved by one atomic
/// script that hands out a batch of tokens at a time. Each node spends its batch locally and
/// asks again before it runs out, so at full speed a node makes one round trip per batch. A
/// batch's tokens fall due together at the limit's next free slot and the script hands a batch
/// out only when every earlier one is paid for by elapsed time but a moment (at most a batch's
/// time, a quarter of a second): the node holds it until it is due. So the fleet together never
/// spends ahead of the rate by more than one batch, and the time a node takes to ask (its timer,
/// the round trip) is not lost from the rate.
/// While Redis is away each rate falls back to this node's share (the rate divided by the live
/// nodes last seen), kept locally.
/// </summary>
internal sealed class FleetRates
{
    // KEYS[1]: the limit's hash. ARGV[1]: tokens wanted; ARGV[2]: how far ahead of its slot a batch
    // may be handed out (µs); ARGV[3]: the burst tolerance (µs: how far the theoretical arrival
    // time may run ahead of now with the tokens still due at once; 0 for message rates, which are
    // smooth; a second's worth for HTTP request rates, a bucket that holds a second of requests);
    // then pairs of (period field, interval in µs).
    // A batch's tokens all fall due at one slot (the latest theoretical arrival time of any
    // period, or now): it is granted only when that slot is at most "ahead" away, and the node
    // spends none of it before the slot. So the fleet never spends ahead of the rate by more than
    // one batch, and a node that asks a little early (before the previous batch is paid for)
    // loses no time to its timers or the round trip.
    // Returns {tokens granted, µs until it is worth asking again, µs until the batch falls due}.
    // Redis's TIME, so the nodes' clocks do not matter; times are µs kept as integers in strings.
    internal static readonly RedisScript Take = new("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
        local want = tonumber(ARGV[1])
        local ahead = tonumber(ARGV[2])
        local tolerance = tonumber(ARGV[3])
        local n = (#ARGV - 3) / 2
        local slot = now
        for i = 1, n do
          local tat = tonumber(redis.call('HGET', KEYS[1], ARGV[2 * i + 2]) or '0') or 0
          if tat > slot then slot = tat end
        end
        if slot - now > ahead + tolerance then return {0, math.ceil(slot - now - ahead - tolerance), 0} end
        local clear = 0
        local fields = {}
        for i = 1, n do
          local tat = slot + want * tonumber(ARGV[2 * i + 3])
          fields[#fields + 1] = ARGV[2 * i + 2]
          fields[#fields + 1] = string.format('%.0f', tat)
          if tat - now > clear then clear = tat - now end
        end
        redis.call('HSET', KEYS[1], unpack(fields))
        redis.call('PEXPIRE', KEYS[1], math.ceil(clear / 1000) + 1000)
        local again = clear - ahead - tolerance
        if again < 0 then again = 0 end
        local due = slot - tolerance - now
        if due < 0 then due = 0 end
        return {want, math.ceil(again), math.ceil(due)}
        """);

    /// <summary>A batch may be handed out this long before it falls due at most (less: one batch's worth of time).</summary>
    internal const double AheadSeconds = 0.25;

    /// <summary>A batch is at most this much of the rate: at low rates a node takes few tokens at a time.</summary>
    internal const double BatchSeconds = 0.2;

    private readonly ConcurrentDictionary<string, FleetRate> _rates = new(StringComparer.Ordinal);
    private long _roundTrips, _granted, _spent, _fallbackSpent;

    public FleetRates(RedisLink link, Func<int> liveNodes, Log log)
    {
        Link = link;
        LiveNodes = liveNodes;
        Log = log;
        link.AvailabilityChanged += OnAvailability;
    }

    internal RedisLink Link { get; }
    internal Func<int> LiveNodes { get; }
    internal Log Log { get; }
    internal int MaxBatch => Link.Settings.RateBatch;

    /// <summary>Redis answers: rates are the fleet's (false: each at this node's share).</summary>
    internal bool Shared => Link.Available;

    /// <summary>Round trips for rate tokens (this node).</summary>
    public long RoundTrips => Interlocked.Read(ref _roundTrips);
    /// <summary>Tokens Redis granted this node.</summary>
    public long TokensGranted => Interlocked.Read(ref _granted);
    /// <summary>Tokens of Redis's grants spent on messages (or requests); the metric counts every take, this one less those given back.</summary>
    public long TokensSpent => Interlocked.Read(ref _spent);
    /// <summary>Messages let through by the local share while Redis was away.</summary>
    public long FallbackSpent => Interlocked.Read(ref _fallbackSpent);

    public FleetRate? Rate(string key, double? perSecond, double? perMinute, double? perHour, double? perDay) =>
        Rate(key, perSecond, perMinute, perHour, perDay, burstSeconds: 0);

    /// <summary>
    /// A rate with a burst: up to <paramref name="burstSeconds"/> of it may go at once (a bucket
    /// that holds that much), taken one token per round trip so that no node holds tokens another
    /// could use at once (HTTP request rates: a request is refused only when the fleet is over).
    /// </summary>
    public FleetRate? Rate(string key, double? perSecond, double? perMinute, double? perHour, double? perDay, double burstSeconds)
    {
        var periods = Periods(perSecond, perMinute, perHour, perDay);
        if (periods is null)
            return null;
        var rate = _rates.GetOrAdd(key, static (k, self) => new FleetRate(self, self.Link.Key("rate:" + k)), this);
        rate.Configure(periods, burstSeconds);
        return rate;
    }

    /// <summary>(field, count, seconds) per rate set.</summary>
    private static (string Field, double Count, double Seconds)[]? Periods(double? perSecond, double? perMinute, double? perHour, double? perDay)
    {
        var list = new List<(string, double, double)>(4);
        if (perSecond is > 0 and var s) list.Add(("s", s, 1));
        if (perMinute is > 0 and var m) list.Add(("m", m, 60));
        if (perHour is > 0 and var h) list.Add(("h", h, 3600));
        if (perDay is > 0 and var d) list.Add(("d", d, 86400));
        return list.Count == 0 ? null : list.ToArray();
    }

    private void OnAvailability(bool available)
    {
        // Whoever waits for a batch looks again: at the local share now, or at the fleet's.
        foreach (var rate in _rates.Values)
            rate.Wake();
    }


    internal void CountRoundTrip(long granted)
    {
        Interlocked.Increment(ref _roundTrips);
        Interlocked.Add(ref _granted, granted);
        ClusterMetrics.RateRoundTrips.Increment();
        if (granted > 0)
            ClusterMetrics.RateTokensGranted.Add(granted);
        else
            ClusterMetrics.RateWaits.Increment();
    }

    internal void CountSpent()
    {
        Interlocked.Increment(ref _spent);
        ClusterMetrics.RateTokensSpent.Increment();
    }

    internal void CountReturned() => Interlocked.Decrement(ref _spent);

    internal void CountFallback()
    {
        Interlocked.Increment(ref _fallbackSpent);
        ClusterMetrics.RateFallbackTokens.Increment();
    }
}

/// <summary>
/// One shared rate as this node sees it: the tokens in hand, whether a batch is being fetched,
/// when Redis said the limit is clear again (no use asking before), and the local share bucket
/// used while Redis is away. Taken from delivery loops (and HTTP requests) on several threads:
/// a short lock, no allocation per message, and never a wait on Redis under it (a fetch is
/// started after the lock is left and completes on a thread of the client library).
/// </summary>
internal sealed class FleetRate : ISharedRate
{
    private static readonly double TicksPerMicrosecond = Stopwatch.Frequency / 1_000_000.0;

    private readonly FleetRates _owner;
    private readonly RedisKey _key;
    private readonly object _lock = new();
    private string[] _fields = [];
    private long[] _intervalMicroseconds = [];
    private long[] _intervalTicks = [];
    private long[] _fallbackTat = [];
    private int _batch = 1;
    private double _burstSeconds = -1;
    private long _aheadMicroseconds;
    private long _toleranceMicroseconds;
    private int _tokens;              // in hand, due
    private int _pending;             // in hand, due at _pendingAt (a batch handed out ahead of its slot)
    private long _pendingAt;
    private bool _fetching;
    private long _clearAt;            // Stopwatch ticks: no use asking Redis before then
    private bool _failed;             // the last fetch failed for another reason than Redis away (a script error)
    private TaskCompletionSource? _answer;
    private Timer? _timer;

    internal FleetRate(FleetRates owner, RedisKey key)
    {
        _owner = owner;
        _key = key;
    }

    /// <summary>Tokens per round trip: at most cluster.rateBatch and a fifth of a second's worth, at least 1.</summary>
    public int Batch => Volatile.Read(ref _batch);

    /// <summary>Tokens in hand (for tests and status).</summary>
    public int InHand
    {
        get
        {
            lock (_lock)
                return _tokens + _pending;
        }
    }

    // A batch handed out ahead falls due.
    private void DueLocked(long now)
    {
        if (_pending > 0 && now >= _pendingAt)
        {
            _tokens += _pending;
            _pending = 0;
        }
    }

    internal void Configure((string Field, double Count, double Seconds)[] periods, double burstSeconds)
    {
        lock (_lock)
        {
            if (_fields.Length == periods.Length && _burstSeconds == burstSeconds)
            {
                bool same = true;
                for (int i = 0; i < periods.Length && same; i++)
                    same = _fields[i] == periods[i].Field && _intervalMicroseconds[i] == Micro(periods[i]);
                if (same)
                    return;
            }
            _fields = periods.Select(p => p.Field).ToArray();
            _intervalMicroseconds = periods.Select(Micro).ToArray();
            _intervalTicks = _intervalMicroseconds.Select(us => Math.Max(1, (long)(us * TicksPerMicrosecond))).ToArray();
            var tat = new long[periods.Length];
            long latest = _fallbackTat.Length == 0 ? 0 : _fallbackTat.Max();
            Array.Fill(tat, latest);
            _fallbackTat = tat;
            double slowest = periods.Min(p => p.Count / p.Seconds);
            _burstSeconds = burstSeconds;
            if (burstSeconds > 0)
            {
                // A bucket of burstSeconds: the theoretical arrival time may run that far ahead
                // (less one token) with every token still due at once; one token per round trip.
                _batch = 1;
                _aheadMicroseconds = 0;
                _toleranceMicroseconds = Math.Max(0, (long)(burstSeconds * 1_000_000) - _intervalMicroseconds.Max());
                return;
            }
            _toleranceMicroseconds = 0;
            _batch = (int)Math.Clamp(Math.Floor(slowest * FleetRates.BatchSeconds), 1, _owner.MaxBatch);
            // Ahead by one batch's time at most, and never long: a batch held for later is one no other node can have.
            _aheadMicroseconds = (long)Math.Min(_batch / slowest * 1_000_000, FleetRates.AheadSeconds * 1_000_000);
        }

        static long Micro((string Field, double Count, double Seconds) p) => Math.Max(1, (long)Math.Round(p.Seconds * 1_000_000 / p.Count));
    }

    public bool TryTake(long now, out long readyAt)
    {
        bool fetch = false, taken;
        lock (_lock)
        {
            DueLocked(now);
            if (_tokens > 0)
            {
                _tokens--;
                readyAt = now;
                taken = true;
                fetch = PrefetchLocked(now);
                _owner.CountSpent();
            }
            else if (_pending > 0)
            {
                readyAt = _pendingAt; // granted, due soon (Redis there or not)
                taken = false;
            }
            else if (LocalLocked(now, out fetch))
            {
                readyAt = FallbackNextLocked(now);
                taken = readyAt <= now;
                if (taken)
                {
                    FallbackTakeLocked(now);
                    _owner.CountFallback();
                }
            }
            else
            {
                readyAt = AskLocked(now, out fetch);
                taken = false;
            }
        }
        if (fetch)
            StartFetchOutsideLock();
        return taken;
    }

    // Whether the local share applies: Redis is away, or the script failed (a bug must not stop
    // mail either). After a failure it is tried again once a second (fetch = true).
    private bool LocalLocked(long now, out bool fetch)
    {
        fetch = false;
        if (!_owner.Shared)
            return true;
        if (!_failed)
            return false;
        if (!_fetching && now >= _clearAt)
            fetch = _fetching = true;
        return true;
    }

    public void Return()
    {
        // A slot of the local share is not given back (spent unused: on the safe side).
        if (!_owner.Shared)
            return;
        lock (_lock)
            _tokens++;
        _owner.CountReturned();
    }

    public long Ready(long now, bool fetch)
    {
        long ready;
        bool start = false;
        lock (_lock)
        {
            DueLocked(now);
            if (_tokens > 0)
                return now;
            if (_pending > 0)
                return _pendingAt;
            if (LocalLocked(now, out start))
                ready = FallbackNextLocked(now);
            else if (fetch)
                ready = AskLocked(now, out start);
            else
                ready = _fetching || now >= _clearAt ? now : _clearAt; // a look only: nothing asked of Redis
        }
        if (start)
            StartFetchOutsideLock();
        return ready;
    }

    public Task WhenReady(CancellationToken cancel)
    {
        long now = Stopwatch.GetTimestamp();
        Task wait;
        bool fetch = false;
        lock (_lock)
        {
            DueLocked(now);
            if (_tokens > 0)
                return Task.CompletedTask;
            if (_pending > 0)
                return Delay(_pendingAt - now, cancel);
            if (LocalLocked(now, out fetch))
            {
                wait = Delay(FallbackNextLocked(now) - now, cancel);
            }
            else
            {
                long ready = AskLocked(now, out fetch);
                wait = ready > now && !_fetching ? Delay(ready - now, cancel)
                    : (_answer ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task.WaitAsync(cancel);
            }
        }
        if (fetch)
            StartFetchOutsideLock();
        return wait;
    }

    private static Task Delay(long ticks, CancellationToken cancel) =>
        ticks <= 0 ? Task.CompletedTask : Task.Delay(TimeSpan.FromTicks(Math.Max(TimeSpan.TicksPerMillisecond, (long)(ticks * (double)TimeSpan.TicksPerSecond / Stopwatch.Frequency))), cancel);

    /// <summary>Redis came or went: whoever waits for an answer looks again.</summary>
    internal void Wake()
    {
        TaskCompletionSource? answer;
        lock (_lock)
        {
            _clearAt = 0; // a "not before" from before the change says nothing now
            answer = _fetching ? null : _answer;
            if (answer is not null)
                _answer = null;
        }
        answer?.TrySetResult();
    }

    // No tokens, Redis shared: when one may be had. Starts a fetch (fetch = true) when it is worth asking now.
    private long AskLocked(long now, out bool fetch)
    {
        fetch = false;
        if (_fetching)
            return now; // the answer is on its way: WhenReady waits for it
        if (now < _clearAt)
            return _clearAt;
        _fetching = true;
        fetch = true;
        return now;
    }

    // Tokens in hand: fetch the next batch before they run out (when half is spent), once the limit is clear.
    private bool PrefetchLocked(long now)
    {
        if (_fetching || _pending > 0 || _tokens > _batch / 2 || !_owner.Shared)
            return false;
        if (now >= _clearAt)
        {
            _fetching = true;
            return true;
        }
        // Not clear yet: ask at the moment it is (a timer, not a poll). Only worth it at speed: at a
        // few messages a second a batch fetched early would sit unused while another node waits.
        if (_batch >= 4)
        {
            _timer ??= new Timer(static s => ((FleetRate)s!).OnTimer(), this, Timeout.Infinite, Timeout.Infinite);
            _timer.Change(TimeSpan.FromTicks(Math.Max(TimeSpan.TicksPerMillisecond, (long)((_clearAt - now) * (double)TimeSpan.TicksPerSecond / Stopwatch.Frequency))), Timeout.InfiniteTimeSpan);
        }
        return false;
    }

    private void OnTimer()
    {
        bool fetch;
        lock (_lock)
            fetch = PrefetchLocked(Stopwatch.GetTimestamp());
        if (fetch)
            StartFetchOutsideLock();
    }

    private long FallbackNextLocked(long now)
    {
        long slot = now;
        foreach (long tat in _fallbackTat)
            if (tat > slot)
                slot = tat;
        return slot;
    }

    // The local share: the same buckets with every interval times the live nodes last seen.
    private void FallbackTakeLocked(long now)
    {
        long live = Math.Max(1, _owner.LiveNodes());
        long slot = FallbackNextLocked(now);
        for (int i = 0; i < _fallbackTat.Length; i++)
            _fallbackTat[i] = slot + _intervalTicks[i] * live;
    }

    private void StartFetchOutsideLock()
    {
        Debug.Assert(!Monitor.IsEntered(_lock));
        _ = FetchAsync();
    }

    private async Task FetchAsync()
    {
        RedisValue[] args;
        lock (_lock)
        {
            // Half a batch may still be in hand: ask for what tops it up to one and a half.
            int want = Math.Max(1, _batch + _batch / 2 - _tokens);
            args = new RedisValue[3 + 2 * _fields.Length];
            args[0] = Math.Min(want, _batch);
            args[1] = _aheadMicroseconds;
            args[2] = _toleranceMicroseconds;
            for (int i = 0; i < _fields.Length; i++)
            {
                args[3 + 2 * i] = _fields[i];
                args[4 + 2 * i] = _intervalMicroseconds[i];
            }
        }
        long granted = 0, clearMicroseconds = 0, dueMicroseconds = 0;
        bool reached = false;
        try
        {
            var result = (RedisResult[])(await _owner.Link.RunAsync(FleetRates.Take, [_key], args).ConfigureAwait(false))!;
            granted = (long)result[0];
            clearMicroseconds = (long)result[1];
            dueMicroseconds = (long)result[2];
            reached = true;
            _owner.CountRoundTrip(granted);
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
            // The link marked itself away: the local share from now on, until Redis answers again.
        }
        catch (Exception e)
        {
            lock (_lock)
            {
                if (!_failed)
                    _owner.Log.Error($"cluster: taking rate tokens for {_key} failed: {e.Message}; using the local share");
                _failed = true;
            }
        }
        TaskCompletionSource? answer;
        bool again = false;
        lock (_lock)
        {
            long now = Stopwatch.GetTimestamp();
            _fetching = false;
            if (reached)
            {
                _failed = false;
                // Due now, or at its slot: never spent before it (its time is counted from the
                // answer, which comes after Redis's "now": later, so on the safe side).
                if (dueMicroseconds <= 0)
                    _tokens += (int)granted;
                else if (granted > 0)
                {
                    _pending = (int)granted;
                    _pendingAt = now + (long)(dueMicroseconds * TicksPerMicrosecond);
                }
                _clearAt = now + (long)(clearMicroseconds * TicksPerMicrosecond);
                if (granted > 0)
                    again = PrefetchLocked(now);
            }
            else
            {
                // Not reached (or a script error): do not ask again for a second; meanwhile the
                // local share applies if Redis is away, or nothing is granted on a script error.
                _clearAt = now + Stopwatch.Frequency;
            }
            answer = _answer;
            _answer = null;
        }
        answer?.TrySetResult();
        if (again)
            StartFetchOutsideLock();
    }
}
