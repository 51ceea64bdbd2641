using System.Collections.Concurrent;
using NativeRelay.Routing;
using NativeRelay.Smtp;
using NativeRelay.Telemetry;
using NativeRelay.Traffic.Automation;
using NativeRelay.Traffic.Shaping;

namespace NativeRelay.Traffic;

/// <summary>
/// The delivery side's one way into traffic control. At dispatch, <see cref="Assign"/> gives a
/// job its egress path (a source of the message's pool, by weight, and the route's site); the
/// job then goes to the loop the path's hash picks, which keeps the path's shaping state
/// (<see cref="CreateShaper"/>) and queues without locks. After a transient failure caused by an
/// action on the path, <see cref="MoveFrom"/> gives another source of the pool.
/// </summary>
internal interface ITrafficControl
{
    /// <summary>The path of a job to this route for a message of this pool (null: the default pool).</summary>
    EgressPath Assign(Route route, string? pool);

    /// <summary>Another source of the pool, not in <paramref name="tried"/> (bits by source index modulo 64), whose path to the same site takes mail now; or null.</summary>
    EgressPath? MoveFrom(EgressPath path, Route route, string? pool, ulong tried);

    /// <summary>The shaping state of a path, made by the loop that owns it (on that loop's thread; only it uses it).</summary>
    SiteShaper CreateShaper(EgressPath path, SynchronizationContext loop);

    /// <summary>The loop forgot an idle path's state.</summary>
    void Forget(SiteShaper shaper);
}

/// <summary>The traffic stage as the control socket sees it (<c>nativerelay traffic status|resume</c>).</summary>
public interface ITrafficAdmin
{
    TrafficStatus Status();

    /// <summary>Lifts every action on the site (from every source, or one); returns how many.</summary>
    int Resume(string site, string? source);
}

/// <summary>What <c>traffic status</c> shows.</summary>
public sealed record TrafficStatus(
    IReadOnlyList<TrafficStatusAction> Actions,
    IReadOnlyList<TrafficStatusPath> Paths,
    IReadOnlyList<string> Sources,
    IReadOnlyList<string> Pools);

public sealed record TrafficStatusAction(string Source, string Site, string Rule, string Action, long StartedUnixMs, long UntilUnixMs, string Reply, string? Limits);

public sealed record TrafficStatusPath(string Source, string Site, int Connections, int Queued, string Limits);

/// <summary>
/// The traffic stage: the configuration in force (replaced by a reload that changes it), the
/// automation's actions (which survive reloads), and the sweeper that lets actions lapse.
/// </summary>
public sealed class TrafficController : ITrafficControl, ITrafficAdmin, IDisposable
{
    private static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(1);

    private readonly Log _log;
    private readonly Timer _sweeper;
    private readonly ConcurrentDictionary<SiteShaper, byte> _shapers = new();
    private readonly Action<long[]> _fillActive;
    private TrafficConfig _config;
    private int _generation;

    public TrafficController(TrafficSettings settings, int remotePort, Log log)
    {
        _log = log;
        _config = new TrafficConfig(settings, remotePort, ++_generation);
        _sweeper = new Timer(static s => ((TrafficController)s!).Sweep(), this, SweepInterval, SweepInterval);
        _fillActive = FillActive;
        RelayMetrics.TrafficActionsActive.SetSnapshotSource(_fillActive);
    }

    public ActionTable Actions { get; } = new();

    /// <summary>The fleet, when this relay is a node of one: actions and resumes are told to the other nodes (null: none).</summary>
    public IActionSync? Sync { get; set; }

    /// <summary>The fleet's side of the limits (set once at start on a node of a cluster; null: every limit is this relay's alone).</summary>
    internal ISharedLimits? Shared { get; set; }

    public TrafficSettings Settings => Volatile.Read(ref _config).Settings;

    /// <summary>Applies a reloaded configuration; a configuration equal to the running one changes nothing (paths, state and limits stay).</summary>
    public void Reconfigure(TrafficSettings settings, int remotePort)
    {
        var running = Volatile.Read(ref _config);
        if (running.Settings.Fingerprint == settings.Fingerprint && running.RemotePort == remotePort)
            return;
        Volatile.Write(ref _config, new TrafficConfig(settings, remotePort, Interlocked.Increment(ref _generation)));
        _log.Info($"traffic: configuration {_generation} in force: {settings.Sources.Count} source(s), {settings.Pools.Count} pool(s), "
                  + $"{settings.Shaping.Count} shaping rule(s), {settings.Shaping.Automation.Count} automation rule(s)");
    }

    // ---- Dispatch ----------------------------------------------------------------------------

    public EgressPath Assign(Route route, string? pool)
    {
        var binding = Bind(route);
        var source = binding.Config.Settings.PoolOf(pool).Next();
        return binding.Paths[source.Index] ??= binding.Config.Path(source, binding.Site);
    }

    public EgressPath? MoveFrom(EgressPath path, Route route, string? pool, ulong tried)
    {
        var binding = Bind(route);
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        string site = binding.Site.Name;
        var other = binding.Config.Settings.PoolOf(pool).NextOther(path.Source,
            s => (tried & Bit(s)) == 0 && !Blocked(s.Name, site, now));
        if (other is null)
            return null;
        return binding.Paths[other.Index] ??= binding.Config.Path(other, binding.Site);
    }

    /// <summary>
    /// Whether two routes with the same next hops lead to the same site: always, unless a shaping
    /// rule gives a domain a site of its own.
    /// </summary>
    internal bool SameSite(Route a, Route b)
    {
        if (Volatile.Read(ref _config).Settings.Shaping.OwnSiteDomains.Count == 0)
            return true;
        var sa = Bind(a).Site;
        var sb = Bind(b).Site;
        return ReferenceEquals(sa, sb) || sa.Name == sb.Name;
    }

    /// <summary>The route's site and paths under the configuration in force (cached on the route).</summary>
    private RouteBinding Bind(Route route)
    {
        var config = Volatile.Read(ref _config);
        var binding = route.TrafficBinding;
        if (binding is null || !ReferenceEquals(binding.Config, config))
            route.TrafficBinding = binding = new RouteBinding(config, config.Sites.SiteOf(route));
        return binding;
    }

    /// <summary>A source's bit in <see cref="Delivery.DeliveryJob.Tried"/>.</summary>
    internal static ulong Bit(Sources.EgressSource source) => 1UL << (source.Index & 63);

    /// <summary>Whether a suspension or bounce is in force on the path (a look; makes no slot).</summary>
    private bool Blocked(string source, string site, long now)
    {
        if (Actions.TryGetSlot(source, site) is not { } slot)
            return false;
        foreach (var a in slot.Actions)
            if (a.Kind != TrafficActionKind.Throttle && a.InForce(now))
                return true;
        return false;
    }

    SiteShaper ITrafficControl.CreateShaper(EgressPath path, SynchronizationContext loop)
    {
        var shaper = new SiteShaper(this, path, loop);
        _shapers[shaper] = 0;
        return shaper;
    }

    void ITrafficControl.Forget(SiteShaper shaper)
    {
        shaper.Retire();
        _shapers.TryRemove(shaper, out _);
    }

    // ---- Automation --------------------------------------------------------------------------

    /// <summary>A rule matched a reply on a path (a loop's thread): the action goes in force, or the one in force is extended.</summary>
    internal void Apply(EgressPath path, ActionSlot slot, AutomationRule rule, in SmtpReply reply)
    {
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var action = new TrafficAction(rule.Name, rule.Action, now, now + (long)rule.Duration.TotalMilliseconds,
            Shorten(reply.ToString()), rule.Limits);
        bool added = slot.Put(action);
        if (slot.Removed)
            added = Actions.Slot(slot.Source, slot.Site).Put(action); // pruned meanwhile: the slot holders look again
        RelayMetrics.TrafficRuleFired.Increment(rule.Name);
        Sync?.Applied(slot.Source, slot.Site, action, added);
        if (!added)
        {
            if (_log.IsEnabled(LogLevel.Debug))
                _log.Debug($"traffic: {rule.Name} on source {path.Source.Name} to site {path.Site.Name} extended until {Time(action.UntilUnixMs)} (\"{action.Reply}\")");
            return;
        }
        RelayMetrics.TrafficActions.Add((int)rule.Action, 1);
        string what = rule.Action == TrafficActionKind.Throttle ? $"throttle to {rule.Limits.Describe()}" : AutomationRule.ActionName(rule.Action);
        _log.Warn($"traffic: {what} on source {path.Source.Name} to site {path.Site.Name} for {AutomationRule.DescribeDuration(rule.Duration)} "
                  + $"(until {Time(action.UntilUnixMs)}; rule {rule.Name}; reply \"{action.Reply}\")");
    }

    private void Sweep()
    {
        try
        {
            foreach (var (slot, a) in Actions.Sweep(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()))
                _log.Info($"traffic: {AutomationRule.ActionName(a.Kind)} on source {slot.Source} to site {slot.Site} lapsed (rule {a.Rule}, in force since {Time(a.StartedUnixMs)})");
        }
        catch (Exception e)
        {
            _log.Error($"traffic: sweeping actions failed: {e}");
        }
    }

    private void FillActive(long[] counts)
    {
        var (t, s, b) = Actions.CountsInForce(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
        counts[(int)TrafficActionKind.Throttle] = t;
        counts[(int)TrafficActionKind.Suspend] = s;
        counts[(int)TrafficActionKind.Bounce] = b;
    }

    // ---- Administration ----------------------------------------------------------------------

    public TrafficStatus Status()
    {
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var actions = Actions.Active(now)
            .OrderBy(p => p.Slot.Site, StringComparer.Ordinal).ThenBy(p => p.Slot.Source, StringComparer.Ordinal)
            .Select(p => new TrafficStatusAction(p.Slot.Source, p.Slot.Site, p.Action.Rule, AutomationRule.ActionName(p.Action.Kind),
                p.Action.StartedUnixMs, p.Action.UntilUnixMs, p.Action.Reply, p.Action.Limits.IsEmpty ? null : p.Action.Limits.Describe()))
            .ToList();
        var paths = new List<TrafficStatusPath>();
        foreach (var shaper in _shapers.Keys)
        {
            // Read from the loops' fields without their thread: counts may be a moment old.
            int connections = shaper.Connections, queued;
            try
            {
                queued = shaper.Queued;
            }
            catch (Exception e) when (e is InvalidOperationException or ArgumentException or IndexOutOfRangeException)
            {
                queued = -1;
            }
            if (connections == 0 && queued <= 0)
                continue;
            paths.Add(new TrafficStatusPath(shaper.Source.Name, shaper.Site.Name, connections, queued, shaper.Limits.Describe()));
        }
        paths.Sort(static (a, b) => string.CompareOrdinal(a.Site, b.Site) is var c && c != 0 ? c : string.CompareOrdinal(a.Source, b.Source));
        var settings = Settings;
        var sources = settings.SourcesInUse.Select(s => $"{s.Name}: {s.Describe()} ({s.Connections} connections open)").ToList();
        var pools = settings.Pools.Values.Append(settings.DefaultPool).DistinctBy(p => p.Name)
            .Select(p => $"{p.Name}{(ReferenceEquals(p, settings.DefaultPool) ? " (default)" : "")}: {p.Describe()}").ToList();
        return new TrafficStatus(actions, paths, sources, pools);
    }

    public int Resume(string site, string? source)
    {
        var lifted = Actions.Lift(site, source);
        Sync?.Resumed(site, source); // on every node, even when none was in force here
        foreach (var (slot, a) in lifted)
            _log.Warn($"traffic: {AutomationRule.ActionName(a.Kind)} on source {slot.Source} to site {slot.Site} lifted by the administrator (rule {a.Rule})");
        if (lifted.Count == 0)
            _log.Info($"traffic: resume site {site}{(source is null ? "" : $" source {source}")}: no action was in force");
        return lifted.Count;
    }

    private static string Time(long unixMs) => DateTimeOffset.FromUnixTimeMilliseconds(unixMs).UtcDateTime.ToString("HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);

    private static string Shorten(string text) => text.Length <= 300 ? text : text[..300] + "...";

    public void Dispose()
    {
        _sweeper.Dispose();
        RelayMetrics.TrafficActionsActive.ClearSnapshotSource(_fillActive);
    }
}
