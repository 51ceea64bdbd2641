using System.Diagnostics;
using NativeRelay.Smtp;
using NativeRelay.Telemetry;
using NativeRelay.Traffic.Automation;
using NativeRelay.Traffic.Sites;
using NativeRelay.Traffic.Sources;

namespace NativeRelay.Traffic.Shaping;

/// <summary>A queue of the delivery side that a <see cref="SiteShaper"/> may make wait for a connection slot and wake again.</summary>
internal interface IShapedLane
{
    /// <summary>Called on the loop's thread when a slot may have come free: try to open a connection again.</summary>
    void RetryOpen();

    /// <summary>Jobs waiting (read from other threads for status: approximate).</summary>
    int Queued { get; }

    /// <summary>Another lane waits for a connection slot: close the connections parked idle (on the loop's thread).</summary>
    void ReleaseIdle();
}

/// <summary>Whether a path takes mail now.</summary>
internal enum PathGate : byte
{
    Open,
    /// <summary>An automation suspended the path: its mail moves to another source of its pool, or is deferred.</summary>
    Suspended,
    /// <summary>An automation bounces the path's mail.</summary>
    Bounce,
}

/// <summary>What <see cref="SiteShaper.TryOpen"/> decided.</summary>
internal enum OpenDecision : byte
{
    Opened,
    /// <summary>Not now; the lane is called back (<see cref="IShapedLane.RetryOpen"/>) when it may be.</summary>
    Wait,
    /// <summary>The next message slot is so far off that the queued mail should be deferred instead of held.</summary>
    Defer,
}

/// <summary>
/// The shaping state of one (source, site) path inside the one delivery loop that owns it: the
/// path's limits in force (the shaping rules', lowered by throttles), its connection count over
/// all its lanes (a site may span several next-hop sets), its smooth token buckets for messages
/// and new connections, and the automation actions on it. Everything here runs on the loop's
/// thread, so nothing is locked; the only shared state it touches is the source's own limits
/// (lock-free) and the action slot (one volatile read per job).
/// </summary>
internal sealed class SiteShaper
{
    /// <summary>A connection is not kept open waiting longer than this for its next message slot.</summary>
    internal static readonly long HoldTicks = Stopwatch.Frequency * 5;
    /// <summary>Queued mail is deferred (not held in memory) when the next message slot is further off than this.</summary>
    internal static readonly long DeferTicks = Stopwatch.Frequency * 300;
    private static readonly long SourceRetryTicks = Stopwatch.Frequency / 4;

    private readonly TrafficController _traffic;
    private readonly SynchronizationContext _loop;
    private readonly List<IShapedLane> _lanes = new();
    private readonly List<IShapedLane> _waiting = new();
    private EgressPath _path;
    private ShapingLimits _base;
    private ShapingLimits _limits;
    private LocalRates? _rates;
    private LocalRates? _connectionRate;
    // On a node of a fleet (null otherwise): the path's and its source's rates and the path's
    // connection limit as the fleet shares them, on top of the local ones (which keep spacing
    // this node's own messages).
    private ISharedRate? _fleetRate;
    private ISharedRate? _fleetSourceRate;
    private ISharedRate? _refusedBy;
    private ISharedConnections? _leases;
    private bool _leasesEnforced;
    private Action? _leaseWake;
    private Action? _othersWant;
    private ActionSlot _slot;
    private TrafficAction[] _seen = [];
    private long _recheckAtMs = long.MaxValue;
    private PathGate _gate;
    private TrafficAction? _gateAction;
    private int _connections;
    private Timer? _timer;
    private long _timerDue = long.MaxValue;

    internal SiteShaper(TrafficController traffic, EgressPath path, SynchronizationContext loop)
    {
        _traffic = traffic;
        _loop = loop;
        _path = path;
        _slot = traffic.Actions.Slot(path.Source.Name, path.Site.Name);
        _base = _limits = path.Config.Settings.Shaping.Resolve(path.Site, path.Source);
        _rates = LocalRates.For(_limits);
        _connectionRate = LocalRates.PerMinute(_limits.ConnectionsPerMinute);
        Share(_limits);
        LastActiveMs = Environment.TickCount64;
    }

    public EgressPath Path => _path;
    public EgressSource Source => _path.Source;
    public Site Site => _path.Site;

    /// <summary>The limits in force now (rules, lowered by throttles).</summary>
    public ShapingLimits Limits => _limits;

    /// <summary>Connections open on this path (read from other threads for status).</summary>
    public int Connections => Volatile.Read(ref _connections);

    public int Queued
    {
        get
        {
            int n = 0;
            foreach (var lane in _lanes.ToArray())
                n += lane.Queued;
            return n;
        }
    }

    public int LaneCount => _lanes.Count;

    /// <summary>The loop swept it away: a path that still points here must look again.</summary>
    internal bool Removed;

    internal long LastActiveMs;

    internal void AddLane(IShapedLane lane) => _lanes.Add(lane);

    internal void RemoveLane(IShapedLane lane)
    {
        _lanes.Remove(lane);
        _waiting.Remove(lane);
    }

    /// <summary>
    /// A job came with a path of a newer configuration (a reload): the same names, so the same
    /// state, with the new source object (address, EHLO) and the limits resolved again.
    /// </summary>
    public void Adopt(EgressPath path)
    {
        if (ReferenceEquals(path, _path) || path.Config.Generation <= _path.Config.Generation)
            return; // the same, or a job routed before the reload: the newer configuration stays
        _path = path;
        _base = path.Config.Settings.Shaping.Resolve(path.Site, path.Source);
        _seen = [];
        Apply(_base);
        _recheckAtMs = 0;
    }

    // ---- The gate: automation actions --------------------------------------------------------

    /// <summary>Whether the path takes mail now; refreshes the limits when an action came, lapsed or was lifted.</summary>
    public PathGate Gate(long nowMs)
    {
        var slot = _slot;
        if (slot.Removed)
            _slot = slot = _traffic.Actions.Slot(_path.Source.Name, _path.Site.Name);
        var actions = slot.Actions;
        if (actions.Length == 0 && _seen.Length == 0)
            return PathGate.Open;
        if (!ReferenceEquals(actions, _seen) || nowMs >= _recheckAtMs)
            Recompute(actions, nowMs);
        return _gate;
    }

    /// <summary>The action behind a closed gate (for the reply that defers or bounces).</summary>
    public TrafficAction? GateAction => _gateAction;

    private void Recompute(TrafficAction[] actions, long nowMs)
    {
        _seen = actions;
        var gate = PathGate.Open;
        TrafficAction? why = null;
        var limits = _base;
        long recheck = long.MaxValue;
        foreach (var a in actions)
        {
            if (!a.InForce(nowMs))
                continue;
            recheck = Math.Min(recheck, a.UntilUnixMs);
            switch (a.Kind)
            {
                case TrafficActionKind.Bounce:
                    gate = PathGate.Bounce;
                    why = a;
                    break;
                case TrafficActionKind.Suspend when gate != PathGate.Bounce:
                    gate = PathGate.Suspended;
                    why = a;
                    break;
                case TrafficActionKind.Throttle:
                    limits = limits.LoweredBy(a.Limits);
                    break;
            }
        }
        _gate = gate;
        _gateAction = why;
        _recheckAtMs = recheck;
        if (!ReferenceEquals(limits, _limits) && limits != _limits)
        {
            Apply(limits);
            // A lifted throttle may let waiting lanes open more connections now.
            WakeWaiting();
        }
    }

    private void Apply(ShapingLimits limits)
    {
        var old = _rates;
        _limits = limits;
        _rates = LocalRates.For(limits);
        _rates?.CarryFrom(old);
        var oldConnections = _connectionRate;
        _connectionRate = LocalRates.PerMinute(limits.ConnectionsPerMinute);
        _connectionRate?.CarryFrom(oldConnections);
        Share(limits);
    }

    /// <summary>
    /// On a node of a fleet: the fleet's side of these limits, named by the path's (and the
    /// source's) names, which every node shares. A lowered limit (a throttle) lowers the same
    /// bucket; a connection limit once shared stays known here so the leases of open
    /// connections are given back when they close.
    /// </summary>
    private void Share(ShapingLimits limits)
    {
        if (_traffic.Shared is not { } fleet)
            return;
        string path = _path.Source.Name + "|" + _path.Site.Name;
        _fleetRate = fleet.Rate("path:" + path, limits.MessagesPerSecond, limits.MessagesPerMinute, limits.MessagesPerHour, limits.MessagesPerDay);
        var own = _path.Source.Limits;
        _fleetSourceRate = _path.Source.HasRates
            ? fleet.Rate("source:" + _path.Source.Name, own.MessagesPerSecond, own.MessagesPerMinute, own.MessagesPerHour, own.MessagesPerDay)
            : null;
        _leasesEnforced = limits.MaxConnections is not null;
        if (limits.MaxConnections is { } max)
        {
            _leases = fleet.Connections("path:" + path, max);
            _leaseWake ??= OnLeaseWake;
            _leases.Follow(_loop, _othersWant ??= OnOthersWant);
        }
    }

    // Another node waits for a slot of the path: connections parked idle here give theirs up now.
    private void OnOthersWant()
    {
        if (Removed)
            return;
        foreach (var lane in _lanes.ToArray())
            lane.ReleaseIdle();
    }

    private void OnLeaseWake()
    {
        if (!Removed)
            WakeWaiting();
    }

    // ---- Connections -------------------------------------------------------------------------

    /// <summary>
    /// A lane wants another connection: the path's connection limit, its new-connection rate, the
    /// next message slot (a connection is not opened to sit waiting for it), then the source's
    /// own connection limit. When not now, the lane is called back when it may be.
    /// </summary>
    public OpenDecision TryOpen(IShapedLane lane, long now)
    {
        if (_connections >= (_limits.MaxConnections ?? int.MaxValue))
        {
            RelayMetrics.TrafficWaits.Add(RelayMetrics.WaitConnections, 1);
            Enlist(lane);
            // A slot held by another next-hop set's idle connection is handed over now, not at its idle timeout.
            if (_lanes.Count > 1)
                foreach (var other in _lanes.ToArray())
                    if (!ReferenceEquals(other, lane))
                        other.ReleaseIdle();
            return OpenDecision.Wait;
        }
        if (_connectionRate is { } cr && cr.Next(now) is var nextConnection && nextConnection > now)
        {
            RelayMetrics.TrafficWaits.Add(RelayMetrics.WaitConnectionRate, 1);
            Enlist(lane);
            WakeAt(nextConnection);
            return OpenDecision.Wait;
        }
        // A look only: tokens of the fleet's rate are fetched by connections that will send, not
        // for a lane that may not get a connection (they would sit here, lost to the fleet).
        long nextSend = NextSend(now, fetch: false);
        if (nextSend - now > HoldTicks)
        {
            if (nextSend - now > DeferTicks)
                return OpenDecision.Defer;
            RelayMetrics.TrafficWaits.Add(RelayMetrics.WaitMessageRate, 1);
            Enlist(lane);
            WakeAt(nextSend - HoldTicks / 2);
            return OpenDecision.Wait;
        }
        if (_leasesEnforced && !_leases!.TryUse(_loop, _leaseWake!))
        {
            // The fleet is at the path's limit, or a lease is being asked for: woken when it may have come.
            RelayMetrics.TrafficWaits.Add(RelayMetrics.WaitConnections, 1);
            Enlist(lane);
            return OpenDecision.Wait;
        }
        if (!_path.Source.TryTakeConnection())
        {
            if (_leasesEnforced)
                _leases!.Unuse();
            RelayMetrics.TrafficWaits.Add(RelayMetrics.WaitSource, 1);
            Enlist(lane);
            WakeAt(now + SourceRetryTicks);
            return OpenDecision.Wait;
        }
        _connectionRate?.Take(now);
        Volatile.Write(ref _connections, _connections + 1);
        LastActiveMs = Environment.TickCount64;
        return OpenDecision.Opened;
    }

    /// <summary>A connection of one of the lanes ended: its slots come free.</summary>
    public void Closed()
    {
        Volatile.Write(ref _connections, _connections - 1);
        _path.Source.ReleaseConnection();
        _leases?.Release();
        LastActiveMs = Environment.TickCount64;
        WakeWaiting();
    }

    /// <summary>
    /// Another lane of the path waits for a connection slot: a lane that has delivered on its
    /// connection gives the slot up (closes) rather than keep it for its next job or park it idle,
    /// so the site's next-hop sets take turns under the site's connection limit (and on a fleet,
    /// the nodes under its shared limit).
    /// </summary>
    public bool OthersWaiting(IShapedLane lane) => _waiting.Count > 1 || (_waiting.Count == 1 && !ReferenceEquals(_waiting[0], lane))
        || (_leasesEnforced && _leases!.OthersWant);

    /// <summary>Whether a lane's open connection should stay for another job (the path's limit may have been lowered).</summary>
    public bool OverConnectionLimit => _connections > (_limits.MaxConnections ?? int.MaxValue) || (_leasesEnforced && _leases!.Unleased > 0);

    // ---- Messages ----------------------------------------------------------------------------

    /// <summary>Any message rate on this path (its own or its source's).</summary>
    public bool LimitsMessages => _rates is not null || _path.Source.HasRates;

    /// <summary>When the next message may go (Stopwatch ticks), without reserving it.</summary>
    public long NextSend(long now) => NextSend(now, fetch: true);

    private long NextSend(long now, bool fetch)
    {
        long slot = _rates?.Next(now) ?? now;
        slot = _path.Source.HasRates ? _path.Source.NextSend(slot) : slot;
        if (_fleetRate is not null)
            slot = Math.Max(slot, _fleetRate.Ready(now, fetch));
        if (_fleetSourceRate is not null)
            slot = Math.Max(slot, _fleetSourceRate.Ready(now, fetch));
        return slot;
    }

    /// <summary>Whether the fleet shares a rate of this path (its own or its source's): each message also takes a token of it.</summary>
    public bool SharesMessages => _fleetRate is not null || _fleetSourceRate is not null;

    /// <summary>
    /// Takes the fleet's token(s) for one message: true, or false with when to look again (then
    /// <see cref="FleetReady"/> says when it is worth it). Never waits for Redis.
    /// </summary>
    public bool TryTakeFleet(long now, out long readyAt)
    {
        readyAt = now;
        if (_fleetRate is { } path && !path.TryTake(now, out readyAt))
        {
            _refusedBy = path;
            return false;
        }
        if (_fleetSourceRate is { } source && !source.TryTake(now, out readyAt))
        {
            _fleetRate?.Return();
            _refusedBy = source;
            return false;
        }
        return true;
    }

    /// <summary>A message that took the fleet's token(s) did not go after all (another connection took it): the tokens stay in hand.</summary>
    public void ReturnFleet()
    {
        _fleetRate?.Return();
        _fleetSourceRate?.Return();
    }

    /// <summary>Completes when the rate that refused last may give a token (a batch came, or its time to ask did).</summary>
    public Task FleetReady(CancellationToken cancel) => _refusedBy?.WhenReady(cancel) ?? Task.CompletedTask;

    /// <summary>Reserves the next message slot (the path's buckets, then the source's) at <paramref name="notBefore"/> or later.</summary>
    public long TakeSend(long notBefore)
    {
        long slot = _rates?.Take(notBefore) ?? notBefore;
        return _path.Source.HasRates ? _path.Source.TakeSend(slot) : slot;
    }

    /// <summary>A lane closes its connection rather than hold it for a far slot: called back shortly before the slot.</summary>
    public void WaitForSlot(IShapedLane lane, long slot)
    {
        RelayMetrics.TrafficWaits.Add(RelayMetrics.WaitMessageRate, 1);
        Enlist(lane);
        WakeAt(slot - HoldTicks / 2);
    }

    // ---- Automation --------------------------------------------------------------------------

    /// <summary>A reply from the remote server on this path (not 2xx): the automation rules that match it act.</summary>
    public void Observe(in SmtpReply reply)
    {
        if (reply.IsPositive || reply.Code == 0)
            return;
        foreach (var rule in _path.Config.Settings.Shaping.Automation)
        {
            if (rule.Matches(reply) && rule.Covers(_path))
            {
                _traffic.Apply(_path, _slot, rule, reply);
                _seen = []; // recompute at the next gate
            }
        }
    }

    // ---- Waking lanes ------------------------------------------------------------------------

    private void Enlist(IShapedLane lane)
    {
        if (!_waiting.Contains(lane))
            _waiting.Add(lane);
    }

    private void WakeWaiting()
    {
        if (_waiting.Count == 0)
            return;
        var lanes = _waiting.ToArray();
        _waiting.Clear();
        foreach (var lane in lanes)
            lane.RetryOpen();
    }

    private void WakeAt(long dueTicks)
    {
        if (dueTicks >= _timerDue)
            return; // an earlier wake-up is set: it will look again
        _timerDue = dueTicks;
        long delayMs = Math.Max(1, (dueTicks - Stopwatch.GetTimestamp()) * 1000 / Stopwatch.Frequency + 1);
        _timer ??= new Timer(static s => ((SiteShaper)s!).PostWake(), this, Timeout.Infinite, Timeout.Infinite);
        _timer.Change(delayMs, Timeout.Infinite);
    }

    private void PostWake() => _loop.Post(static s => ((SiteShaper)s!).OnTimer(), this);

    private void OnTimer()
    {
        _timerDue = long.MaxValue;
        if (!Removed)
            WakeWaiting();
    }

    /// <summary>The loop forgets it (idle, no lanes): stops its timer.</summary>
    internal void Retire()
    {
        Removed = true;
        _timer?.Dispose();
        _timer = null;
    }
}
