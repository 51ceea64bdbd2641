using System.Collections.Concurrent;
using System.Diagnostics;
using NativeRelay.Telemetry;
using NativeRelay.Traffic.Shaping;
using StackExchange.Redis;

namespace NativeRelay.Cluster;

/// <summary>
/// Connection limits shared by the fleet: a sorted set per (source, site) path in Redis whose
/// members are the leases of open connections (node and lease id) scored by their expiry in
/// Redis's clock. A lease is taken by a script that first drops the expired ones and grants only
/// under the limit, renewed every third of <c>cluster.leaseSeconds</c> while its connection
/// lives, and given back when it closes (a message on a channel then tells the other nodes, so a
/// node waiting for a slot asks again at once). A node killed outright stops renewing: its
/// leases lapse within the lease time and the others get them. While Redis is away a node keeps
/// to its share, max(1, floor(limit / live nodes)).
/// </summary>
internal sealed class ConnectionLeases : IAsyncDisposable
{
    // KEYS[1] the path's leases. ARGV: member, lease ms, limit, the "wanted" channel and what to
    // say on it. Returns {1 granted or 0, leases held}. A refusal tells the fleet that this node
    // wants a slot: the nodes holding them give up one at their next turn (idle ones at once).
    internal static readonly RedisScript Acquire = new("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        local held = redis.call('ZCARD', KEYS[1])
        if held >= tonumber(ARGV[3]) then
          redis.call('PUBLISH', ARGV[4], ARGV[5])
          return {0, held}
        end
        local lease = tonumber(ARGV[2])
        redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
        redis.call('PEXPIRE', KEYS[1], lease * 2)
        return {1, held + 1}
        """);

    // KEYS[1] the path's leases. ARGV: lease ms, limit, then this node's members. A lease that
    // lapsed (Redis was away too long) is taken again if there is room. Returns the ones lost.
    internal static readonly RedisScript Renew = new("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        local lease = tonumber(ARGV[1])
        local limit = tonumber(ARGV[2])
        local lost = {}
        for i = 3, #ARGV do
          if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
            redis.call('ZADD', KEYS[1], 'XX', now + lease, ARGV[i])
          elseif redis.call('ZCARD', KEYS[1]) < limit then
            redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
          else
            lost[#lost + 1] = ARGV[i]
          end
        end
        redis.call('PEXPIRE', KEYS[1], lease * 2)
        return lost
        """);

    // KEYS[1] the path's leases. ARGV: the channel, then members. Tells the fleet when a slot came free.
    internal static readonly RedisScript Give = new("""
        local n = 0
        for i = 2, #ARGV do n = n + redis.call('ZREM', KEYS[1], ARGV[i]) end
        if n > 0 then redis.call('PUBLISH', ARGV[1], KEYS[1]) end
        return n
        """);

    /// <summary>A lease granted and not used by a connection within this long is given back.</summary>
    private static readonly long UnusedTicks = Stopwatch.Frequency;

    private readonly ConcurrentDictionary<string, LeaseSet> _sets = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, LeaseSet> _byRedisKey = new(StringComparer.Ordinal);
    private readonly CancellationTokenSource _stop = new();
    private readonly string _memberPrefix;
    private long _ids;
    private Task? _loop;
    private long _acquired, _refused, _renewals, _lost;

    public ConnectionLeases(RedisLink link, Func<int> liveNodes, Log log)
    {
        Link = link;
        LiveNodes = liveNodes;
        Log = log;
        // The node's name and its start: a restarted node never takes a dead predecessor's lease for its own.
        _memberPrefix = link.Settings.Node + ":" + DateTimeOffset.UtcNow.ToUnixTimeMilliseconds().ToString(System.Globalization.CultureInfo.InvariantCulture) + ":";
        link.AvailabilityChanged += OnAvailability;
        ClusterMetrics.LeasesHeld.SetSource(() => _sets.Values.Sum(s => s.Held));
    }

    internal RedisLink Link { get; }
    internal Func<int> LiveNodes { get; }
    internal Log Log { get; }
    internal RedisChannel FreedChannel => Link.Channel("leases-freed");
    internal RedisChannel WantedChannel => Link.Channel("leases-wanted");

    /// <summary>"KEY\nMEMBER-PREFIX": a refusal as said on the wanted channel (a node does not answer its own).</summary>
    internal string WantedMessage(RedisKey key) => (string)key! + "\n" + _memberPrefix;
    internal long LeaseMilliseconds => (long)Link.Settings.Lease.TotalMilliseconds;

    /// <summary>Redis answers: connection limits are the fleet's (false: each at this node's share).</summary>
    internal bool Shared => Link.Available;

    public long Acquired => Interlocked.Read(ref _acquired);
    public long Refused => Interlocked.Read(ref _refused);
    public long Renewals => Interlocked.Read(ref _renewals);
    public long Lost => Interlocked.Read(ref _lost);

    /// <summary>Follows freed slots (a subscription) and renews the leases held until disposed.</summary>
    public void Start()
    {
        _ = SubscribeAsync();
        _loop = Task.Run(() => LoopAsync(_stop.Token));
    }

    public LeaseSet Connections(string key, int limit)
    {
        var set = _sets.GetOrAdd(key, static (k, self) =>
        {
            var made = new LeaseSet(self, self.Link.Key("conn:" + k));
            self._byRedisKey[(string)made.Key!] = made;
            return made;
        }, this);
        set.Limit = limit;
        return set;
    }

    internal string NewMember() => _memberPrefix + Interlocked.Increment(ref _ids).ToString(System.Globalization.CultureInfo.InvariantCulture);


    internal void CountAcquire(bool granted)
    {
        if (granted)
        {
            Interlocked.Increment(ref _acquired);
            ClusterMetrics.LeasesAcquired.Increment();
        }
        else
        {
            Interlocked.Increment(ref _refused);
            ClusterMetrics.LeasesRefused.Increment();
        }
    }

    internal void CountRenewal(int lost)
    {
        Interlocked.Increment(ref _renewals);
        if (lost > 0)
        {
            Interlocked.Add(ref _lost, lost);
            ClusterMetrics.LeasesLost.Add(lost);
        }
    }

    private void OnAvailability(bool available)
    {
        foreach (var set in _sets.Values)
        {
            if (available)
                set.Returned(); // the connections opened without Redis ask for their leases at once
            set.WakeAll(); // at the local share now, or asking the fleet again
        }
    }

    private async Task SubscribeAsync()
    {
        try
        {
            await Link.Subscriber.SubscribeAsync(FreedChannel, (_, message) =>
            {
                if (message.HasValue && _byRedisKey.TryGetValue((string)message!, out var set))
                    set.Freed();
            }).ConfigureAwait(false);
            await Link.Subscriber.SubscribeAsync(WantedChannel, (_, message) =>
            {
                string text = message.HasValue ? (string)message! : "";
                int cut = text.IndexOf('\n');
                if (cut > 0 && text.AsSpan(cut + 1).SequenceEqual(_memberPrefix) is false
                    && _byRedisKey.TryGetValue(text[..cut], out var set))
                    set.Wanted();
            }).ConfigureAwait(false);
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
            // The client subscribes again when it reconnects; until then the tick asks again.
        }
    }

    private async Task LoopAsync(CancellationToken stop)
    {
        var tick = TimeSpan.FromMilliseconds(Math.Min(1000, LeaseMilliseconds / 3));
        using var timer = new PeriodicTimer(tick);
        try
        {
            while (await timer.WaitForNextTickAsync(stop).ConfigureAwait(false))
            {
                long now = Stopwatch.GetTimestamp();
                foreach (var set in _sets.Values)
                {
                    try
                    {
                        await set.TickAsync(now).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is not OperationCanceledException)
                    {
                        Log.Error($"cluster: keeping the connection leases of {set.Key} failed: {e.Message}");
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Stops renewing without giving anything back (what a node killed outright does; for tests).</summary>
    internal async Task HaltAsync()
    {
        _stop.Cancel();
        if (_loop is not null)
            await _loop.ConfigureAwait(false);
        _loop = null;
    }

    /// <summary>Stops renewing and gives back what is still held (a clean stop: the others need not wait for the leases to lapse).</summary>
    public async ValueTask DisposeAsync()
    {
        await HaltAsync().ConfigureAwait(false);
        ClusterMetrics.LeasesHeld.SetSource(null);
        if (Shared)
            foreach (var set in _sets.Values)
                await set.GiveBackAllAsync().ConfigureAwait(false);
        _stop.Dispose();
    }

    internal static long UnusedLimitTicks => UnusedTicks;
}

/// <summary>
/// This node's leases on one path: granted and not yet used, in use by open connections, and
/// connections open without one (while Redis was away, or a lease lost). Used from the one
/// delivery loop that owns the path and from the lease keeper's tick and Redis's answers: a
/// short lock, and the loop is woken by a post to its synchronization context.
/// </summary>
internal sealed class LeaseSet : ISharedConnections
{
    private readonly ConnectionLeases _owner;
    private readonly object _lock = new();
    private readonly List<(string Member, long Granted)> _free = new();
    private readonly List<string> _used = new();
    private readonly List<(SynchronizationContext Loop, Action Wake)> _waiters = new();
    private int _unleased;
    private bool _asking;
    private bool _lastWasLease;
    private long _lastRenewal = Stopwatch.GetTimestamp();
    private int _limit = 1;
    private long _wantedUntil;        // Stopwatch ticks: another node was refused a slot lately
    private long _settleUntil;        // Stopwatch ticks: Redis came back lately
    private bool _confirming;         // the leases held are being renewed after Redis came back
    private int _settleShare;

    /// <summary>After Redis comes back, a node stays within its share this long (the other nodes see Redis again meanwhile).</summary>
    private static readonly long SettleTicks = Stopwatch.Frequency * 2;
    private (SynchronizationContext Loop, Action Call)? _follower;

    /// <summary>How long a refusal elsewhere counts (refused nodes ask again at least once a second, and at every freed slot).</summary>
    private static readonly long WantedTicks = Stopwatch.Frequency * 2;

    internal LeaseSet(ConnectionLeases owner, RedisKey key)
    {
        _owner = owner;
        Key = key;
    }

    internal RedisKey Key { get; }

    internal int Limit
    {
        get => Volatile.Read(ref _limit);
        set => Volatile.Write(ref _limit, Math.Max(1, value));
    }

    /// <summary>Leases this node holds on the path (in use or not).</summary>
    internal int Held
    {
        get
        {
            lock (_lock)
                return _free.Count + _used.Count;
        }
    }

    /// <summary>Connections counted here (leased or not).</summary>
    internal int InUse
    {
        get
        {
            lock (_lock)
                return _used.Count + _unleased;
        }
    }

    /// <summary>This node's share of the limit while Redis is away.</summary>
    internal int FallbackShare => Math.Max(1, Limit / Math.Max(1, _owner.LiveNodes()));

    public int Unleased
    {
        get
        {
            if (!_owner.Shared)
                return 0; // while Redis is away the local share is the rule, not the leases
            lock (_lock)
                return _unleased;
        }
    }

    public bool OthersWant => Stopwatch.GetTimestamp() < Volatile.Read(ref _wantedUntil);

    public void Follow(SynchronizationContext loop, Action othersWant)
    {
        lock (_lock)
            _follower = (loop, othersWant);
    }

    /// <summary>Another node was refused a slot: the connections here take turns (idle ones close now).</summary>
    internal void Wanted()
    {
        Volatile.Write(ref _wantedUntil, Stopwatch.GetTimestamp() + WantedTicks);
        (SynchronizationContext Loop, Action Call)? follower;
        lock (_lock)
            follower = _used.Count > 0 ? _follower : null;
        if (follower is { } f)
            f.Loop.Post(static s => ((Action)s!)(), f.Call);
    }

    // Just back from Redis's absence, at the share already: wait (see TryUse).
    // (The share as it was when Redis came back: a Redis that restarted empty counts one live
    // node until the others' next heartbeats.)
    private bool SettlingLocked() =>
        (_confirming || Stopwatch.GetTimestamp() < _settleUntil) && _used.Count + _unleased >= _settleShare;

    // Whether to ask Redis for another lease: not while another node waits for a slot and this
    // one has a connection already (so the fleet's connections go round the nodes that want them).
    private bool MayAskLocked() => _owner.Shared && !(_used.Count > 0 && OthersWant);

    public bool TryUse(SynchronizationContext loop, Action wake)
    {
        bool ask = false;
        lock (_lock)
        {
            bool shared = _owner.Shared;
            // Connections opened while Redis was away are not in Redis's count: with Redis back,
            // they take the leases first, and no new connection opens before they have (or close).
            while (shared && _unleased > 0 && _free.Count > 0)
            {
                _used.Add(_free[^1].Member);
                _free.RemoveAt(_free.Count - 1);
                _unleased--;
            }
            // Just back from Redis's absence: no more connections than the share until the fleet
            // has settled (this node's leases renewed, the others back), only replacements.
            bool settling = shared && SettlingLocked();
            if (shared && _free.Count > 0 && _unleased == 0 && !settling)
            {
                _used.Add(_free[^1].Member);
                _free.RemoveAt(_free.Count - 1);
                _lastWasLease = true;
                return true;
            }
            if (!shared)
            {
                // Redis away: the share is the rule (a lease in hand from before counts as one of it).
                if (_used.Count + _unleased < FallbackShare)
                {
                    if (_free.Count > 0)
                    {
                        _used.Add(_free[^1].Member);
                        _free.RemoveAt(_free.Count - 1);
                        _lastWasLease = true;
                    }
                    else
                    {
                        _unleased++;
                        _lastWasLease = false;
                    }
                    return true;
                }
            }
            else if (!_asking && !settling && MayAskLocked())
            {
                _asking = ask = true;
            }
            bool listed = false;
            foreach (var w in _waiters)
                listed |= ReferenceEquals(w.Wake, wake);
            if (!listed)
                _waiters.Add((loop, wake));
        }
        if (ask)
            _ = AcquireAsync();
        return false;
    }

    public void Unuse()
    {
        lock (_lock)
        {
            if (_lastWasLease && _used.Count > 0)
            {
                _free.Add((_used[^1], Stopwatch.GetTimestamp()));
                _used.RemoveAt(_used.Count - 1);
            }
            else if (_unleased > 0)
            {
                _unleased--;
            }
        }
    }

    public void Release()
    {
        string member;
        lock (_lock)
        {
            // A connection without a lease goes first: it is the one over the fleet's count.
            if (_unleased > 0)
            {
                _unleased--;
                return;
            }
            if (_used.Count == 0)
                return;
            member = _used[^1];
            _used.RemoveAt(_used.Count - 1);
        }
        _ = GiveAsync([member]);
    }

    /// <summary>
    /// Redis is back: the leases held are renewed at once (a Redis that restarted empty learns
    /// of them, or says they are lost: their connections close after their message), and the
    /// connections opened without it ask for leases; meanwhile no new connection opens.
    /// </summary>
    internal void Returned()
    {
        string[] held;
        lock (_lock)
        {
            _settleUntil = Stopwatch.GetTimestamp() + SettleTicks;
            _settleShare = FallbackShare;
            held = _used.Concat(_free.Select(f => f.Member)).ToArray();
            _confirming = held.Length > 0;
        }
        _ = ConfirmAsync(held);
    }

    private async Task ConfirmAsync(string[] held)
    {
        if (held.Length > 0)
        {
            try
            {
                await RenewAsync(held).ConfigureAwait(false);
            }
            catch (Exception e)
            {
                _owner.Log.Error($"cluster: renewing the connection leases of {Key} after Redis came back failed: {e.Message}");
            }
            finally
            {
                lock (_lock)
                    _confirming = false;
            }
        }
        bool ask;
        lock (_lock)
        {
            ask = _unleased > 0 && !_asking;
            _asking |= ask;
        }
        if (ask)
            await AcquireAsync().ConfigureAwait(false);
        else
            WakeAll();
    }

    /// <summary>A slot of the path came free somewhere in the fleet: ask again if a lane waits here.</summary>
    internal void Freed()
    {
        bool ask;
        lock (_lock)
        {
            ask = _waiters.Count > 0 && !_asking && MayAskLocked();
            _asking |= ask;
        }
        if (ask)
            _ = AcquireAsync();
    }

    internal void WakeAll()
    {
        (SynchronizationContext, Action)[] waiters;
        lock (_lock)
        {
            if (_waiters.Count == 0)
                return;
            waiters = _waiters.ToArray();
            _waiters.Clear();
        }
        foreach (var (loop, wake) in waiters)
            loop.Post(static s => ((Action)s!)(), wake);
    }

    private async Task AcquireAsync()
    {
        string member = _owner.NewMember();
        bool granted = false, reached = false;
        try
        {
            var result = (RedisResult[])(await _owner.Link.RunAsync(ConnectionLeases.Acquire, [Key],
                [member, _owner.LeaseMilliseconds, Limit, (string)_owner.WantedChannel!, _owner.WantedMessage(Key)]).ConfigureAwait(false))!;
            granted = (long)result[0] == 1;
            reached = true;
            _owner.CountAcquire(granted);
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
            // The link marked itself away: the local share until Redis answers again.
        }
        catch (Exception e)
        {
            _owner.Log.Error($"cluster: taking a connection lease on {Key} failed: {e.Message}");
        }
        bool wake, again;
        lock (_lock)
        {
            _asking = false;
            if (granted)
            {
                if (_unleased > 0)
                {
                    // A connection opened while Redis was away gets the fleet's lease first.
                    _unleased--;
                    _used.Add(member);
                }
                else
                {
                    _free.Add((member, Stopwatch.GetTimestamp()));
                }
            }
            // Refused: the lanes wait for a slot freed in the fleet (the channel) or the next tick.
            wake = granted || !reached;
            again = granted && _unleased > 0; // more connections from Redis's absence to lease
            _asking = again;
        }
        if (again)
            _ = AcquireAsync();
        if (wake)
            WakeAll();
    }

    private async Task GiveAsync(string[] members)
    {
        var values = new RedisValue[members.Length + 1];
        values[0] = (string)_owner.FreedChannel!;
        for (int i = 0; i < members.Length; i++)
            values[i + 1] = members[i];
        try
        {
            await _owner.Link.RunAsync(ConnectionLeases.Give, [Key], values).ConfigureAwait(false);
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
            // It lapses by itself within the lease time.
        }
        catch (Exception e)
        {
            _owner.Log.Error($"cluster: giving back a connection lease on {Key} failed: {e.Message}");
        }
    }

    /// <summary>The lease keeper's tick: renew what is held, give back what is not used, ask again for waiting lanes.</summary>
    internal async Task TickAsync(long now)
    {
        if (!_owner.Shared)
            return;
        string[]? renew = null;
        string[]? unused = null;
        bool ask = false;
        long renewEvery = Stopwatch.Frequency * _owner.LeaseMilliseconds / 3000;
        lock (_lock)
        {
            if (_free.Count > 0)
            {
                var stale = _free.Where(f => now - f.Granted > ConnectionLeases.UnusedLimitTicks).ToList();
                if (stale.Count > 0)
                {
                    _free.RemoveAll(stale.Contains);
                    unused = stale.Select(f => f.Member).ToArray();
                }
            }
            if (_used.Count + _free.Count > 0 && now - _lastRenewal >= renewEvery * 9 / 10)
            {
                renew = _used.Concat(_free.Select(f => f.Member)).ToArray();
                _lastRenewal = now;
            }
            if (((_waiters.Count > 0 && _free.Count == 0 && !SettlingLocked() && MayAskLocked()) || _unleased > 0) && !_asking)
                _asking = ask = true;
        }
        if (unused is not null)
            await GiveAsync(unused).ConfigureAwait(false);
        if (renew is not null)
            await RenewAsync(renew).ConfigureAwait(false);
        if (ask)
            await AcquireAsync().ConfigureAwait(false);
    }

    private async Task RenewAsync(string[] members)
    {
        var values = new RedisValue[members.Length + 2];
        values[0] = _owner.LeaseMilliseconds;
        values[1] = Limit;
        for (int i = 0; i < members.Length; i++)
            values[i + 2] = members[i];
        RedisResult[] lost;
        try
        {
            lost = (RedisResult[])(await _owner.Link.RunAsync(ConnectionLeases.Renew, [Key], values).ConfigureAwait(false))!;
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
            // The link marked itself away: the local share until Redis answers again.
            return;
        }
        _owner.CountRenewal(lost.Length);
        if (lost.Length == 0)
            return;
        lock (_lock)
        {
            foreach (var l in lost)
            {
                string member = (string)l!;
                if (_used.Remove(member))
                    _unleased++; // its connection is now over the fleet's count: it closes after its message
                else
                    _free.RemoveAll(f => f.Member == member);
            }
        }
        _owner.Log.Warn($"cluster: {lost.Length} connection lease(s) on {Key} lapsed while Redis was away and others took the slots; "
                        + "the connections close after their current message");
    }

    /// <summary>A clean stop: every lease held goes back at once.</summary>
    internal async Task GiveBackAllAsync()
    {
        string[] all;
        lock (_lock)
        {
            all = _used.Concat(_free.Select(f => f.Member)).ToArray();
            _used.Clear();
            _free.Clear();
        }
        if (all.Length > 0)
            await GiveAsync(all).ConfigureAwait(false);
    }
}
