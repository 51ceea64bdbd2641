using System.Collections.Concurrent;
using System.Globalization;
using System.Text.Json;
using NativeRelay.Telemetry;
using NativeRelay.Traffic.Automation;
using NativeRelay.Traffic.Shaping;
using StackExchange.Redis;

namespace NativeRelay.Cluster;

/// <summary>
/// Automation actions and operator resumes for the whole fleet (<see cref="IActionSync"/>).
/// An action a node puts in force is written into a Redis hash of the actions in force (field
/// "source \n site \n rule", value the action as JSON, beside a sorted set of their until-times
/// so lapsed ones are dropped) and published on a channel, in one script; every other node puts
/// it into its own <see cref="ActionTable"/> when the message comes (within a second), and a node
/// that starts, or finds Redis back, loads the hash. A resume removes the path's actions from the
/// hash, remembers its time (a hash of resumes by site and source: an action started before it
/// and written later is refused) and publishes a lift; a resume made while Redis is away is told
/// when it is back, and lifts only the actions started by then. A message missed (a node's
/// subscription was down) is made up by a resync from the hashes every ten seconds: actions the
/// hash has are put in force; actions a later resume covers, or that this node knows were in
/// Redis and no longer are (lifted elsewhere), are lifted here; its own that never reached Redis
/// (applied while it was away) are written now. Actions lapse on every node by their until-time
/// (each node's sweeper), so a lapse needs no message.
/// </summary>
public sealed class SharedActions : IActionSync, IAsyncDisposable
{
    private static readonly TimeSpan ResyncInterval = TimeSpan.FromSeconds(10);

    // KEYS[1] the actions hash, KEYS[2] the until-times sorted set, KEYS[3] the lifts (field "site \n source",
    // '' for every source; value the time of the resume). ARGV: field, JSON, until ms, channel, site (lowercased),
    // source, started ms. Drops lapsed actions; keeps the later of two ends of a rule's action; refuses an action a
    // resume made after its start lifted (a resume told late, or at the same moment). Returns 1 when written (and
    // published), 0 when a later end is there, -1 when a resume lifted it.
    private static readonly RedisScript ApplyScript = new("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local started = tonumber(ARGV[7])
        for _, key in ipairs({ARGV[5] .. '\n' .. ARGV[6], ARGV[5] .. '\n'}) do
          local lifted = redis.call('HGET', KEYS[3], key)
          if lifted and tonumber(lifted) >= started then return -1 end
        end
        local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
        for _, f in ipairs(lapsed) do redis.call('HDEL', KEYS[1], f) end
        redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
        local untilMs = tonumber(ARGV[3])
        local old = redis.call('ZSCORE', KEYS[2], ARGV[1])
        if old and tonumber(old) >= untilMs then return 0 end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        redis.call('ZADD', KEYS[2], untilMs, ARGV[1])
        redis.call('PUBLISH', ARGV[4], ARGV[2])
        return 1
        """);

    // KEYS as above. ARGV: site (lowercased), source ('' for every one), channel, the lift as JSON, the resume's
    // time (this node's clock), and whether it was made while Redis was away ('1': then only actions started by
    // then are lifted). The resume is remembered (for actions started by then, told later) for 31 days, longer
    // than any action lasts. Returns how many were removed.
    private static readonly RedisScript LiftScript = new("""
        local site = ARGV[1]
        local at = tonumber(ARGV[5])
        local n = 0
        for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
          local src, st = string.match(f, '^([^\n]*)\n([^\n]*)\n')
          if st and string.lower(st) == site and (ARGV[2] == '' or src == ARGV[2]) then
            local lift = true
            if ARGV[6] == '1' then
              local ok, a = pcall(cjson.decode, redis.call('HGET', KEYS[1], f))
              lift = not ok or type(a) ~= 'table' or tonumber(a.startedUnixMs or 0) <= at
            end
            if lift then
              redis.call('HDEL', KEYS[1], f)
              redis.call('ZREM', KEYS[2], f)
              n = n + 1
            end
          end
        end
        local key = site .. '\n' .. ARGV[2]
        local before = redis.call('HGET', KEYS[3], key)
        if not before or tonumber(before) < at then redis.call('HSET', KEYS[3], key, at) end
        for _, f in ipairs(redis.call('HKEYS', KEYS[3])) do
          if tonumber(redis.call('HGET', KEYS[3], f)) < at - 31 * 86400000 then redis.call('HDEL', KEYS[3], f) end
        end
        redis.call('PUBLISH', ARGV[3], ARGV[4])
        return n
        """);

    private readonly RedisLink _link;
    private readonly ActionTable _table;
    private readonly Log _log;
    private readonly RedisKey _hash;
    private readonly RedisKey _untils;
    private readonly RedisKey _epochKey;
    private readonly RedisKey _lifts;
    private readonly RedisChannel _channel;
    private readonly CancellationTokenSource _stop = new();
    private readonly SemaphoreSlim _resyncing = new(1, 1);
    // Actions known to be in Redis (written by this node or received from it), by field, with their end:
    // one that is in force here, known there, and gone from the hash was lifted elsewhere.
    private readonly ConcurrentDictionary<string, long> _inRedis = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<Task, byte> _sending = new();
    private readonly ConcurrentQueue<(string Site, string? Source, long AtMs)> _unsentLifts = new();
    private string? _epoch;
    private Task? _loop;

    public SharedActions(RedisLink link, ActionTable table, Log log)
    {
        _link = link;
        _table = table;
        _log = log;
        _hash = link.Key("{actions}");
        _untils = link.Key("{actions}:until");
        _epochKey = link.Key("{actions}:epoch");
        _lifts = link.Key("{actions}:lifts");
        _channel = link.Channel("actions");
    }

    private string Node => _link.Settings.Node;

    /// <summary>Subscribes, loads the actions in force (when Redis answers) and resyncs every ten seconds and whenever Redis comes back.</summary>
    public async Task StartAsync()
    {
        _link.AvailabilityChanged += OnAvailability;
        try
        {
            await _link.Subscriber.SubscribeAsync(_channel, (_, message) => Receive(message)).ConfigureAwait(false);
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
            // The client library subscribes again by itself once it connects.
        }
        await ResyncAsync().ConfigureAwait(false);
        _loop = Task.Run(() => LoopAsync(_stop.Token));
    }

    private void OnAvailability(bool available)
    {
        if (available)
            Track(Task.Run(ResyncAsync));
    }

    private async Task LoopAsync(CancellationToken stop)
    {
        using var timer = new PeriodicTimer(ResyncInterval);
        try
        {
            while (await timer.WaitForNextTickAsync(stop).ConfigureAwait(false))
                await ResyncAsync().ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
    }

    // ---- This node's actions and resumes -------------------------------------------------------

    public void Applied(string source, string site, TrafficAction action, bool added)
    {
        if (_stop.IsCancellationRequested)
            return; // stopping: the fleet keeps what it has

        string field = Field(source, site, action.Rule);
        // An extension is told only when it moves the end by a tenth of the action's length (at
        // least a second): a throttled path keeps getting the reply that extends it.
        if (!added && _inRedis.TryGetValue(field, out long known)
            && action.UntilUnixMs - known < Math.Max(1000, (action.UntilUnixMs - action.StartedUnixMs) / 10))
            return;
        if (!_link.Available)
            return; // written by the resync when Redis is back
        Track(WriteAsync(field, ToMessage(source, site, action)));
    }

    public void Resumed(string site, string? source)
    {
        if (_stop.IsCancellationRequested)
            return;

        foreach (var field in _inRedis.Keys)
            if (SplitField(field) is { } f && string.Equals(f.Site, site, StringComparison.OrdinalIgnoreCase) && (source is null || f.Source == source))
                _inRedis.TryRemove(field, out _);
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        if (!_link.Available)
        {
            Unsent(site, source, now);
            return;
        }
        Track(Task.Run(async () =>
        {
            try
            {
                await SendLiftAsync(site, source, now, late: false).ConfigureAwait(false);
            }
            catch (Exception e) when (RedisLink.IsUnavailable(e))
            {
                Unsent(site, source, now);
            }
            catch (RedisException e)
            {
                _log.Error($"cluster: the resume of site {site} was not told to the fleet: {e.Message}");
            }
        }));
    }

    // A resume made while Redis is away is told when it is back (the resync sends it before it reads the
    // hash, so the action is not put back here), lifting only the actions started by then.
    private void Unsent(string site, string? source, long atMs)
    {
        _unsentLifts.Enqueue((site, source, atMs));
        _log.Warn($"cluster: the resume of site {site}{(source is null ? "" : $" source {source}")} is told to the fleet when Redis is back "
                  + "(the other nodes keep their actions until then)");
    }

    /// <param name="late">A resume made while Redis was away: only actions started by <paramref name="atMs"/> are lifted (else every one of the path).</param>
    private async Task SendLiftAsync(string site, string? source, long atMs, bool late)
    {
        var lift = new ActionMessage { Op = "lift", Node = Node, Source = source, Site = site, StartedUnixMs = late ? atMs : 0 };
        string json = JsonSerializer.Serialize(lift, ClusterJsonContext.Default.ActionMessage);
        await _link.RunAsync(LiftScript, [_hash, _untils, _lifts],
            [site.ToLowerInvariant(), source ?? "", _channel.ToString(), json, atMs, late ? "1" : "0"]).ConfigureAwait(false);
    }

    private async Task WriteAsync(string field, ActionMessage message)
    {
        try
        {
            string json = JsonSerializer.Serialize(message, ClusterJsonContext.Default.ActionMessage);
            var written = (long)await _link.RunAsync(ApplyScript, [_hash, _untils, _lifts],
                [field, json, message.UntilUnixMs, _channel.ToString(), message.Site.ToLowerInvariant(), message.Source ?? "", message.StartedUnixMs]).ConfigureAwait(false);
            if (written < 0)
            {
                // Resumed in the fleet after it started (told late, or at the same moment): lifted here too.
                if (message.Source is not null && message.Rule is not null && _table.LiftRule(message.Source, message.Site, message.Rule))
                    _log.Warn($"traffic: {message.Kind} on source {message.Source} to site {message.Site} lifted: resumed elsewhere in the fleet (rule {message.Rule})");
                return;
            }
            _inRedis.AddOrUpdate(field, message.UntilUnixMs, (_, old) => Math.Max(old, message.UntilUnixMs));
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
            // Not in _inRedis: the resync writes it when Redis is back (if it is still in force).
        }
        catch (RedisException e)
        {
            _log.Error($"cluster: the action on source {message.Source} to site {message.Site} was not told to the fleet: {e.Message}");
        }
    }

    // ---- The other nodes' ------------------------------------------------------------------------

    private void Receive(RedisValue value)
    {
        try
        {
            var message = JsonSerializer.Deserialize((string)value!, ClusterJsonContext.Default.ActionMessage);
            if (message is null || message.Node == Node)
                return; // this node's own, back from Redis
            if (message.Op == "lift")
            {
                int n = 0;
                foreach (var (slot, a) in _table.Lift(message.Site, message.Source, message.StartedUnixMs))
                {
                    n++;
                    ClusterMetrics.ActionsReceived.Increment();
                    _inRedis.TryRemove(Field(slot.Source, slot.Site, a.Rule), out _);
                    _log.Warn($"traffic: {AutomationRule.ActionName(a.Kind)} on source {slot.Source} to site {slot.Site} lifted by the administrator on node {message.Node} (rule {a.Rule})");
                }
                if (n == 0)
                    _log.Info($"traffic: resume of site {message.Site}{(message.Source is null ? "" : $" source {message.Source}")} on node {message.Node}: no action was in force here");
                return;
            }
            PutFromFleet(message);
        }
        catch (Exception e) when (e is JsonException or ArgumentException or FormatException or InvalidCastException)
        {
            _log.Warn($"cluster: a message on {_channel} that is not an action was ignored: {e.Message}");
        }
    }

    private void PutFromFleet(ActionMessage message)
    {
        if (message.Source is null || message.Rule is null || ToAction(message) is not { } action)
            return;
        if (!action.InForce(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()))
            return;
        string field = Field(message.Source, message.Site, message.Rule);
        _inRedis.AddOrUpdate(field, action.UntilUnixMs, (_, old) => Math.Max(old, action.UntilUnixMs));
        if (!_table.PutFromFleet(message.Source, message.Site, action))
            return;
        ClusterMetrics.ActionsReceived.Increment();
        string from = message.Node == Node ? $"node {Node} (this one, before it restarted)" : $"node {message.Node}";
        string what = action.Kind == TrafficActionKind.Throttle ? $"throttle to {action.Limits.Describe()}" : AutomationRule.ActionName(action.Kind);
        _log.Warn($"traffic: {what} on source {message.Source} to site {message.Site} until {Time(action.UntilUnixMs)} "
                  + $"from {from} (rule {action.Rule}; reply \"{action.Reply}\")");
    }

    // ---- Resync ------------------------------------------------------------------------------------

    /// <summary>Makes this node's actions agree with the hash (see the class); does nothing while Redis is away.</summary>
    public async Task ResyncAsync()
    {
        if (!_link.Available || !await _resyncing.WaitAsync(0).ConfigureAwait(false))
            return;
        try
        {
            // Resumes made here while Redis was away go first: what they lifted is not put back from the hash.
            while (_unsentLifts.TryPeek(out var unsent))
            {
                await SendLiftAsync(unsent.Site, unsent.Source, unsent.AtMs, late: true).ConfigureAwait(false);
                _unsentLifts.TryDequeue(out _);
            }
            // What is in force here and known in Redis is taken before the hash is read: an action
            // that comes meanwhile is not mistaken for one lifted elsewhere.
            long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            var active = _table.Active(now);
            var knownBefore = _inRedis.Keys.ToHashSet(StringComparer.Ordinal);
            string epoch = await FleetEpoch.CurrentAsync(_link, _epochKey).ConfigureAwait(false);
            var entries = await _link.CallAsync(db => db.HashGetAllAsync(_hash)).ConfigureAwait(false);
            var lifts = (await _link.CallAsync(db => db.HashGetAllAsync(_lifts)).ConfigureAwait(false))
                .ToDictionary(e => (string)e.Name!, e => (long)e.Value, StringComparer.Ordinal);
            // A Redis that lost its data (another epoch) lifted nothing: this node's actions go back in.
            bool sameRedis = _epoch == epoch;
            _epoch = epoch;
            var inHash = new HashSet<string>(StringComparer.Ordinal);
            foreach (var entry in entries)
            {
                string field = (string)entry.Name!;
                inHash.Add(field);
                try
                {
                    // Every node's, this one's too: after a restart its table is empty, the fleet's is not.
                    if (JsonSerializer.Deserialize((string)entry.Value!, ClusterJsonContext.Default.ActionMessage) is { } message)
                        PutFromFleet(message);
                }
                catch (JsonException)
                {
                }
            }
            foreach (var (slot, action) in active)
            {
                string field = Field(slot.Source, slot.Site, action.Rule);
                if (LiftedBy(lifts, slot.Source, slot.Site, action.StartedUnixMs))
                {
                    // Resumed in the fleet after it started (a lift message this node missed).
                    if (_table.LiftRule(slot.Source, slot.Site, action.Rule))
                        _log.Warn($"traffic: {AutomationRule.ActionName(action.Kind)} on source {slot.Source} to site {slot.Site} lifted: "
                                  + $"resumed elsewhere in the fleet (rule {action.Rule})");
                    _inRedis.TryRemove(field, out _);
                    continue;
                }
                if (inHash.Contains(field))
                    continue;
                if (sameRedis && knownBefore.Contains(field))
                {
                    // It was in Redis and is no more: lifted on another node (the message was missed).
                    _inRedis.TryRemove(field, out _);
                    if (_table.LiftRule(slot.Source, slot.Site, action.Rule))
                        _log.Warn($"traffic: {AutomationRule.ActionName(action.Kind)} on source {slot.Source} to site {slot.Site} lifted: "
                                  + $"resumed elsewhere in the fleet (rule {action.Rule})");
                    continue;
                }
                // Applied while Redis was away (or Redis lost it): the fleet gets it now, if a lift
                // that came meanwhile has not taken it away.
                if (slot.Actions.Contains(action))
                    await WriteAsync(field, ToMessage(slot.Source, slot.Site, action)).ConfigureAwait(false);
            }
            // Forget what lapsed or was lifted everywhere.
            var inForce = active.Select(p => Field(p.Slot.Source, p.Slot.Site, p.Action.Rule)).ToHashSet(StringComparer.Ordinal);
            foreach (var field in _inRedis.Keys)
                if (!inHash.Contains(field) && !inForce.Contains(field))
                    _inRedis.TryRemove(field, out _);
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
            // Again when Redis is back.
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _log.Error($"cluster: resyncing the traffic actions failed: {e.Message}");
        }
        finally
        {
            _resyncing.Release();
        }
    }

    // ---- Forms -------------------------------------------------------------------------------------

    private static bool LiftedBy(Dictionary<string, long> lifts, string source, string site, long startedUnixMs)
    {
        string lower = site.ToLowerInvariant();
        return (lifts.TryGetValue(lower + "\n" + source, out long one) && one >= startedUnixMs)
               || (lifts.TryGetValue(lower + "\n", out long all) && all >= startedUnixMs);
    }

    internal static string Field(string source, string site, string rule) => source + "\n" + site + "\n" + rule;

    private static (string Source, string Site)? SplitField(string field)
    {
        var parts = field.Split('\n');
        return parts.Length >= 3 ? (parts[0], parts[1]) : null;
    }

    private ActionMessage ToMessage(string source, string site, TrafficAction a) => new()
    {
        Op = "apply",
        Node = Node,
        Source = source,
        Site = site,
        Rule = a.Rule,
        Kind = AutomationRule.ActionName(a.Kind),
        StartedUnixMs = a.StartedUnixMs,
        UntilUnixMs = a.UntilUnixMs,
        Reply = a.Reply,
        MaxConnections = a.Limits.MaxConnections,
        ConnectionsPerMinute = a.Limits.ConnectionsPerMinute,
        MessagesPerSecond = a.Limits.MessagesPerSecond,
        MessagesPerMinute = a.Limits.MessagesPerMinute,
        MessagesPerHour = a.Limits.MessagesPerHour,
        MessagesPerDay = a.Limits.MessagesPerDay,
        MessagesPerConnection = a.Limits.MessagesPerConnection,
        RecipientsPerTransaction = a.Limits.RecipientsPerTransaction,
    };

    private static TrafficAction? ToAction(ActionMessage m)
    {
        TrafficActionKind kind;
        switch (m.Kind)
        {
            case "suspend": kind = TrafficActionKind.Suspend; break;
            case "bounce": kind = TrafficActionKind.Bounce; break;
            case "throttle": kind = TrafficActionKind.Throttle; break;
            default: return null; // a kind a newer node knows and this one does not
        }
        var limits = new ShapingLimits
        {
            MaxConnections = m.MaxConnections,
            ConnectionsPerMinute = m.ConnectionsPerMinute,
            MessagesPerSecond = m.MessagesPerSecond,
            MessagesPerMinute = m.MessagesPerMinute,
            MessagesPerHour = m.MessagesPerHour,
            MessagesPerDay = m.MessagesPerDay,
            MessagesPerConnection = m.MessagesPerConnection,
            RecipientsPerTransaction = m.RecipientsPerTransaction,
        };
        if (kind == TrafficActionKind.Throttle && limits.IsEmpty)
            return null;
        return new TrafficAction(m.Rule!, kind, m.StartedUnixMs, m.UntilUnixMs, m.Reply ?? "", kind == TrafficActionKind.Throttle ? limits : ShapingLimits.None);
    }

    private static string Time(long unixMs) =>
        DateTimeOffset.FromUnixTimeMilliseconds(unixMs).UtcDateTime.ToString("HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    private void Track(Task task)
    {
        _sending[task] = 0;
        _ = task.ContinueWith(t => _sending.TryRemove(t, out _), TaskScheduler.Default);
    }

    public async ValueTask DisposeAsync()
    {
        _link.AvailabilityChanged -= OnAvailability;
        _stop.Cancel();
        if (_loop is not null)
            await _loop.ConfigureAwait(false);
        try
        {
            await Task.WhenAll(_sending.Keys).WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }
        catch (Exception e) when (e is TimeoutException || RedisLink.IsUnavailable(e))
        {
        }
        try
        {
            await _link.Subscriber.UnsubscribeAsync(_channel).ConfigureAwait(false);
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
        }
        _stop.Dispose();
    }
}
