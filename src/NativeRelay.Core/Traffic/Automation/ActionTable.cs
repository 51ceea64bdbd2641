using System.Collections.Concurrent;
using NativeRelay.Traffic.Shaping;

namespace NativeRelay.Traffic.Automation;

/// <summary>One action in force on a (source, site) path. Immutable.</summary>
public sealed record TrafficAction(
    string Rule,
    TrafficActionKind Kind,
    long StartedUnixMs,
    long UntilUnixMs,
    string Reply,
    ShapingLimits Limits)
{
    public bool InForce(long nowMs) => nowMs < UntilUnixMs;
}

/// <summary>
/// The actions in force on one (source, site) path, by name, so they outlive a reload and the
/// loop-owned shaping state (which holds its slot and reads it with one volatile read per job).
/// The array is replaced whole (copy on write, compare-and-exchange): readers never lock.
/// </summary>
public sealed class ActionSlot
{
    private TrafficAction[] _actions = [];

    internal ActionSlot(string source, string site)
    {
        Source = source;
        Site = site;
    }

    public string Source { get; }
    public string Site { get; }

    /// <summary>The actions, some maybe lapsed (the sweeper removes those within a second).</summary>
    public TrafficAction[] Actions => Volatile.Read(ref _actions);

    /// <summary>Touched last (Unix ms), for pruning slots nobody uses.</summary>
    internal long LastUsedMs;

    /// <summary>Dropped from the table: a holder must fetch its slot again.</summary>
    internal volatile bool Removed;

    /// <summary>Adds the action, or replaces the one of the same rule (extending it); true when it is new.</summary>
    internal bool Put(TrafficAction action)
    {
        while (true)
        {
            var seen = Volatile.Read(ref _actions);
            int same = Array.FindIndex(seen, a => a.Rule == action.Rule);
            TrafficAction[] next;
            if (same >= 0)
            {
                next = (TrafficAction[])seen.Clone();
                next[same] = action with { StartedUnixMs = seen[same].StartedUnixMs };
            }
            else
            {
                next = [.. seen, action];
            }
            if (Interlocked.CompareExchange(ref _actions, next, seen) == seen)
                return same < 0;
        }
    }

    /// <summary>Removes the actions <paramref name="drop"/> picks; returns them.</summary>
    internal List<TrafficAction> RemoveWhere(Func<TrafficAction, bool> drop)
    {
        while (true)
        {
            var seen = Volatile.Read(ref _actions);
            var removed = new List<TrafficAction>();
            var kept = new List<TrafficAction>(seen.Length);
            foreach (var a in seen)
                (drop(a) ? removed : kept).Add(a);
            if (removed.Count == 0)
                return removed;
            if (Interlocked.CompareExchange(ref _actions, kept.ToArray(), seen) == seen)
                return removed;
        }
    }
}

/// <summary>
/// Every path's actions, keyed by the names of source and site (they survive a reload, which
/// makes new source and site objects). Thread-safe: the loops add actions, the control socket
/// lists and lifts them, the sweeper lets them lapse.
/// </summary>
public sealed class ActionTable
{
    private const long PruneAfterMs = 3_600_000;

    private readonly ConcurrentDictionary<(string Source, string Site), ActionSlot> _slots = new();

    /// <summary>The slot of a path (made on first use).</summary>
    public ActionSlot Slot(string source, string site)
    {
        var slot = _slots.GetOrAdd((source, site), static key => new ActionSlot(key.Source, key.Site));
        Volatile.Write(ref slot.LastUsedMs, Environment.TickCount64);
        return slot;
    }

    /// <summary>The slot of a path if it has one (a look: makes none).</summary>
    public ActionSlot? TryGetSlot(string source, string site) => _slots.TryGetValue((source, site), out var slot) ? slot : null;

    /// <summary>
    /// Puts an action another node of the fleet put in force (<see cref="IActionSync"/>): true when
    /// it is new here, or ends later than the one of its rule in force (which it then replaces).
    /// </summary>
    public bool PutFromFleet(string source, string site, TrafficAction action)
    {
        var slot = Slot(source, site);
        foreach (var a in slot.Actions)
            if (a.Rule == action.Rule && a.UntilUnixMs >= action.UntilUnixMs)
                return false;
        slot.Put(action);
        if (slot.Removed)
            Slot(source, site).Put(action); // pruned meanwhile: the slot holders look again
        return true;
    }

    /// <summary>Lifts one rule's action on a path (the fleet no longer has it: a lift this node missed); true when one was in force.</summary>
    public bool LiftRule(string source, string site, string rule) =>
        TryGetSlot(source, site) is { } slot && slot.RemoveWhere(a => a.Rule == rule).Count > 0;

    /// <summary>Every action in force, with its path.</summary>
    public List<(ActionSlot Slot, TrafficAction Action)> Active(long nowMs)
    {
        var list = new List<(ActionSlot, TrafficAction)>();
        foreach (var slot in _slots.Values)
            foreach (var a in slot.Actions)
                if (a.InForce(nowMs))
                    list.Add((slot, a));
        return list;
    }

    /// <summary>Lifts the actions on a site (every source, or one); returns what was lifted.</summary>
    public List<(ActionSlot Slot, TrafficAction Action)> Lift(string site, string? source) => Lift(site, source, 0);

    /// <summary>
    /// Lifts the actions on a site (every source, or one) that started by <paramref name="startedByUnixMs"/>
    /// (0: all): a resume another node of the fleet made while Redis was away lifts nothing newer.
    /// </summary>
    public List<(ActionSlot Slot, TrafficAction Action)> Lift(string site, string? source, long startedByUnixMs)
    {
        var lifted = new List<(ActionSlot, TrafficAction)>();
        foreach (var slot in _slots.Values)
        {
            if (!string.Equals(slot.Site, site, StringComparison.OrdinalIgnoreCase))
                continue;
            if (source is not null && !string.Equals(slot.Source, source, StringComparison.Ordinal))
                continue;
            foreach (var a in slot.RemoveWhere(a => startedByUnixMs == 0 || a.StartedUnixMs <= startedByUnixMs))
                lifted.Add((slot, a));
        }
        return lifted;
    }

    /// <summary>Removes lapsed actions (returned, for the log) and forgets slots unused for an hour.</summary>
    public List<(ActionSlot Slot, TrafficAction Action)> Sweep(long nowMs)
    {
        var lapsed = new List<(ActionSlot, TrafficAction)>();
        long tick = Environment.TickCount64;
        foreach (var (key, slot) in _slots)
        {
            foreach (var a in slot.RemoveWhere(a => !a.InForce(nowMs)))
                lapsed.Add((slot, a));
            if (slot.Actions.Length == 0 && tick - Volatile.Read(ref slot.LastUsedMs) > PruneAfterMs)
            {
                slot.Removed = true;
                _slots.TryRemove(new KeyValuePair<(string, string), ActionSlot>(key, slot));
            }
        }
        return lapsed;
    }

    /// <summary>Actions in force by kind (for the metrics endpoint).</summary>
    public (int Throttle, int Suspend, int Bounce) CountsInForce(long nowMs)
    {
        int t = 0, s = 0, b = 0;
        foreach (var slot in _slots.Values)
            foreach (var a in slot.Actions)
                if (a.InForce(nowMs))
                {
                    if (a.Kind == TrafficActionKind.Suspend) s++;
                    else if (a.Kind == TrafficActionKind.Bounce) b++;
                    else t++;
                }
        return (t, s, b);
    }
}
