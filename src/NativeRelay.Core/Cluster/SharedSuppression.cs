using System.Globalization;
using System.Text;
using NativeRelay.Telemetry;
using NativeRelay.Traffic.Suppression;
using StackExchange.Redis;

namespace NativeRelay.Cluster;

/// <summary>
/// One suppression list for the fleet (<see cref="ISuppressionSync"/>). Redis holds the full
/// state, a hash of entries (field "scope \n address", value "time \t node \t reason"), and a
/// stream of the changes (trimmed to about <see cref="StreamLength"/>); both change together in
/// one script, which writes a change to the stream only when it changes the hash. Every node
/// keeps its own <see cref="SuppressionList"/> as the copy the RCPT check and delivery probe (a
/// local hash probe, as without a fleet) and follows the stream from the last id it applied.
/// <para>
/// StackExchange.Redis multiplexes one connection and has no blocking XREAD, so the follower
/// reads the stream when a node says it wrote to it (a message on a channel) and every second in
/// case that message was missed: a change made on one node is in force on the others within a
/// second. A stream trimmed past the follower's id, or a Redis that lost its data (another
/// epoch), makes the node load the whole hash again. The id and the epoch are kept on disk
/// (<c>cluster-cursor</c>, written after the list's commit), so a node that restarts follows on
/// from where it was instead of loading the whole list.
/// </para>
/// <para>
/// This node's changes go into a durable outbox (<see cref="SuppressionOutbox"/>) and are sent in
/// the background, in order; while Redis is away they wait there (across a restart too) and are
/// sent when it is back. A change from the fleet is not applied while a change of the same entry
/// made here waits to be sent (this node's is newer). Changes are applied in the stream's order,
/// this node's own included (a no-op when nothing came between), so every node ends with the
/// state of the hash.
/// </para>
/// <para>
/// Loading the hash: entries it has are added here; entries this node has and the hash lacks were
/// removed elsewhere while it was not following, and are removed here; except when this node has
/// never been in this Redis's fleet (the epoch it remembers, in <c>cluster-cursor</c>, differs):
/// then its entries are added to the fleet's (a node joining with a list of its own, or a Redis
/// that lost its data, loses no entry).
/// </para>
/// </summary>
public sealed class SharedSuppression : ISuppressionSync, IAsyncDisposable
{
    /// <summary>About this many changes are kept in the stream (a node further behind loads the hash).</summary>
    public const int StreamLength = 100_000;
    private const int PushBatch = 200;
    private const int ReadBatch = 500;
    private const int LoggedOneByOne = 20;
    private static readonly TimeSpan FollowInterval = TimeSpan.FromSeconds(1);

    // KEYS[1] the hash, KEYS[2] the stream. ARGV: node, stream length, channel, then per change:
    // op (a/r), scope, address, time, reason. Returns how many changed the hash.
    private static readonly RedisScript PushScript = new("""
        local n = 0
        for i = 4, #ARGV, 5 do
          local field = ARGV[i + 1] .. '\n' .. ARGV[i + 2]
          local changed
          if ARGV[i] == 'a' then
            changed = redis.call('HSETNX', KEYS[1], field, ARGV[i + 3] .. '\t' .. ARGV[1] .. '\t' .. ARGV[i + 4])
          else
            changed = redis.call('HDEL', KEYS[1], field)
          end
          if changed == 1 then
            redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'op', ARGV[i], 'scope', ARGV[i + 1],
              'address', ARGV[i + 2], 'time', ARGV[i + 3], 'node', ARGV[1], 'reason', ARGV[i + 4])
            n = n + 1
          end
        end
        if n > 0 then redis.call('PUBLISH', ARGV[3], ARGV[1]) end
        return n
        """);

    // KEYS[1] the stream, KEYS[2] the epoch. ARGV: last id applied ('0-0': the stream was empty), count, the epoch known.
    // Returns {0, entries after the id}, {1} when the stream was trimmed past the id, {2} when the epoch differs.
    private static readonly RedisScript FollowScript = new("""
        if redis.call('GET', KEYS[2]) ~= ARGV[3] then return {2} end
        if ARGV[1] ~= '0-0' then
          local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
          if #first > 0 then
            local fm, fs = string.match(first[1][1], '^(%d+)-(%d+)$')
            local lm, ls = string.match(ARGV[1], '^(%d+)-(%d+)$')
            fm, fs, lm, ls = tonumber(fm), tonumber(fs), tonumber(lm), tonumber(ls)
            if fm > lm or (fm == lm and fs > ls) then return {1} end
          end
        end
        return {0, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))}
        """);

    private readonly RedisLink _link;
    private readonly SuppressionList _list;
    private readonly Log _log;
    private readonly SuppressionOutbox _outbox;
    private readonly string _epochFile;
    private readonly RedisKey _hash;
    private readonly RedisKey _stream;
    private readonly RedisKey _epochKey;
    private readonly RedisChannel _channel;
    private readonly SemaphoreSlim _wake = new(0, 1);
    private readonly CancellationTokenSource _stop = new();
    private string _lastId = "0-0";
    private string? _epoch;
    private bool _needLoad = true;
    private int _streamLength = StreamLength;
    private Task? _loop;

    private SharedSuppression(RedisLink link, SuppressionList list, Log log, SuppressionOutbox outbox, string directory)
    {
        _link = link;
        _list = list;
        _log = log;
        _outbox = outbox;
        _epochFile = Path.Combine(directory, CursorFileName);
        _hash = link.Key("{suppression}");
        _stream = link.Key("{suppression}:changes");
        _epochKey = link.Key("{suppression}:epoch");
        _channel = link.Channel("suppression");
        // "epoch \n last id": a node that restarts follows on from its place in the stream (no
        // load of the whole list) when Redis still has that epoch and that place.
        if (File.Exists(_epochFile))
        {
            var lines = File.ReadAllLines(_epochFile);
            _epoch = lines.Length > 0 && lines[0].Trim().Length > 0 ? lines[0].Trim() : null;
            if (_epoch is not null && lines.Length > 1 && IsStreamId(lines[1].Trim()))
            {
                _lastId = lines[1].Trim();
                _needLoad = false;
            }
        }
    }

    /// <summary>The file beside the journal with the fleet's epoch and the stream id this node applied up to.</summary>
    public const string CursorFileName = "cluster-cursor";

    private string Node => _link.Settings.Node;

    private static bool IsStreamId(string text)
    {
        int dash = text.IndexOf('-');
        return dash > 0 && ulong.TryParse(text.AsSpan(0, dash), NumberStyles.None, CultureInfo.InvariantCulture, out _)
               && ulong.TryParse(text.AsSpan(dash + 1), NumberStyles.None, CultureInfo.InvariantCulture, out _);
    }

    // After the list's commit: the place saved is never ahead of what the list holds durably.
    private void SaveCursor() => File.WriteAllText(_epochFile, (_epoch ?? "") + "\n" + _lastId + "\n");

    /// <summary>Changes of this node waiting to be sent to the fleet.</summary>
    public int Pending => _outbox.Count;

    /// <summary>The stream id up to which this node has applied the fleet's changes.</summary>
    public string LastId => Volatile.Read(ref _lastId);

    /// <summary>For tests: a shorter stream, and a follower that stops reading (as if it were slow).</summary>
    internal int StreamLengthForTests { set => _streamLength = value; }
    internal volatile bool PausedForTests;

    /// <summary>
    /// Shares <paramref name="list"/> with the fleet: its outbox is opened, and when Redis answers
    /// the pending changes are sent and the fleet's list loaded before this returns.
    /// </summary>
    public static async Task<SharedSuppression> StartAsync(RedisLink link, SuppressionList list, Log log)
    {
        string directory = Path.GetDirectoryName(list.JournalPath)!;
        var outbox = SuppressionOutbox.Open(directory);
        var shared = new SharedSuppression(link, list, log, outbox, directory);
        if (outbox.Count > 0)
            log.Info($"cluster: {outbox.Count} suppression change(s) of an earlier run still to be sent to the fleet");
        list.Sync = shared;
        ClusterMetrics.SuppressionPending.SetSource(() => outbox.Count);
        link.AvailabilityChanged += shared.OnAvailability;
        try
        {
            await link.Subscriber.SubscribeAsync(shared._channel, (_, node) =>
            {
                if ((string?)node != shared.Node)
                    shared.Wake();
            }).ConfigureAwait(false);
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
            // Subscribed again by the client library when it connects; the follower polls meanwhile.
        }
        await shared.RoundAsync().ConfigureAwait(false);
        shared._loop = Task.Run(() => shared.LoopAsync(shared._stop.Token));
        return shared;
    }

    // ---- This node's changes -----------------------------------------------------------------------

    public void Changed(in SuppressionChange change)
    {
        _outbox.Append(change);
        Wake();
    }

    void ISuppressionSync.Commit() => _outbox.Commit();

    private void OnAvailability(bool available)
    {
        if (available)
            Wake();
    }

    private void Wake()
    {
        if (_wake.CurrentCount == 0)
        {
            try
            {
                _wake.Release();
            }
            catch (SemaphoreFullException)
            {
            }
        }
    }

    private async Task LoopAsync(CancellationToken stop)
    {
        try
        {
            while (!stop.IsCancellationRequested)
            {
                await _wake.WaitAsync(FollowInterval, stop).ConfigureAwait(false);
                try
                {
                    await RoundAsync().ConfigureAwait(false);
                }
                catch (Exception e) when (e is not OperationCanceledException)
                {
                    // A bug, not Redis: logged with its stack, and the follower goes on (the next round tries again).
                    _log.Error($"cluster: following the fleet's suppression list failed: {e}");
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>One round: load the hash if needed, send what waits, apply what the stream has; nothing while Redis is away.</summary>
    internal async Task RoundAsync()
    {
        if (!_link.Available)
            return;
        try
        {
            for (int again = 0; again < 3; again++)
            {
                if (_needLoad)
                {
                    await LoadAsync().ConfigureAwait(false);
                    _needLoad = false;
                }
                await SendAsync().ConfigureAwait(false);
                if (PausedForTests || await FollowAsync().ConfigureAwait(false))
                    break;
            }
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
            // Again when Redis is back; this node's changes wait in the outbox.
        }
        catch (Exception e) when (e is RedisException or IOException or InvalidCastException or FormatException)
        {
            _log.Error($"cluster: following the fleet's suppression list failed: {e.Message}");
        }
    }

    private async Task SendAsync()
    {
        while (true)
        {
            var batch = _outbox.Peek(PushBatch);
            if (batch.Count == 0)
                return;
            var values = new RedisValue[3 + batch.Count * 5];
            values[0] = Node;
            values[1] = _streamLength;
            values[2] = _channel.ToString();
            int i = 3;
            foreach (var c in batch)
            {
                values[i++] = c.Added ? "a" : "r";
                values[i++] = c.Scope.ToString();
                values[i++] = c.Address;
                values[i++] = c.TimeUnixMs;
                values[i++] = c.Reason;
            }
            await _link.RunAsync(PushScript, [_hash, _stream], values).ConfigureAwait(false);
            _outbox.Sent(batch.Count);
            ClusterMetrics.SuppressionSent.Add(batch.Count);
        }
    }

    // ---- The fleet's changes -----------------------------------------------------------------------

    /// <summary>Applies the stream's changes after the last id; true when caught up, false when the hash must be loaded.</summary>
    private async Task<bool> FollowAsync()
    {
        while (true)
        {
            var result = (RedisResult[])(await _link.RunAsync(FollowScript, [_stream, _epochKey], [_lastId, ReadBatch, _epoch ?? ""]).ConfigureAwait(false))!;
            long status = (long)result[0];
            if (status == 1)
            {
                _log.Warn($"cluster: the fleet's suppression changes after {_lastId} were trimmed before node {Node} read them: loading the whole list");
                _needLoad = true;
                return false;
            }
            if (status == 2)
            {
                _log.Warn("cluster: Redis does not have the fleet's suppression list this node followed (it lost its data, or is another): "
                          + "loading it, and adding this node's entries");
                _needLoad = true;
                return false;
            }
            var entries = (RedisResult[])result[1]!;
            if (entries.Length == 0)
                return true;
            var applied = new Dictionary<string, int>(StringComparer.Ordinal);
            var lines = new List<string>();
            foreach (var entry in entries)
            {
                var parts = (RedisResult[])entry!;
                string id = (string)parts[0]!;
                var fields = (RedisResult[])parts[1]!;
                var map = new Dictionary<string, RedisResult>(StringComparer.Ordinal);
                for (int f = 0; f + 1 < fields.Length; f += 2)
                    map[(string)fields[f]!] = fields[f + 1];
                Volatile.Write(ref _lastId, id);
                if (Parse(map) is not { } change)
                    continue;
                string from = map.TryGetValue("node", out var n) ? Text(n) : "?";
                if (_outbox.IsPending(change.Key))
                    continue; // a newer change of this entry made here is on its way
                if (!_list.ApplyFromFleet(change) || from == Node)
                    continue;
                applied[from] = applied.GetValueOrDefault(from) + 1;
                ClusterMetrics.SuppressionReceived.Increment();
                if (lines.Count < LoggedOneByOne)
                    lines.Add($"suppression: <{Encoding.UTF8.GetString(change.Address)}> {(change.Added ? "added" : "removed")} ({change.Scope}) from node {from}");
            }
            if (applied.Count > 0)
                _list.Commit();
            SaveCursor();
            if (applied.Count > 0)
            {
                int total = applied.Values.Sum();
                if (total <= LoggedOneByOne)
                    foreach (var line in lines)
                        _log.Info(line);
                else
                    _log.Info($"suppression: {total} change(s) from the fleet ({string.Join(", ", applied.Select(p => $"{p.Value} from node {p.Key}"))})");
            }
            if (entries.Length < ReadBatch)
                return true;
        }
    }

    private static SuppressionChange? Parse(Dictionary<string, RedisResult> map)
    {
        if (!map.TryGetValue("op", out var op) || !map.TryGetValue("scope", out var scopeText) || !map.TryGetValue("address", out var address))
            return null;
        if (!SuppressionScope.TryParse(Text(scopeText), out var scope, out _))
            return null;
        long time = map.TryGetValue("time", out var t) && long.TryParse(Text(t), NumberStyles.Integer, CultureInfo.InvariantCulture, out long v) ? v : 0;
        string reason = map.TryGetValue("reason", out var r) ? Text(r) : "";
        return new SuppressionChange(Text(op) == "a", time, scope, SuppressionSyncKeys.Lowercased((byte[])address!), reason);
    }

    private static string Text(RedisResult r) => (string?)r ?? "";

    /// <summary>Loads the fleet's whole list (see the class): at a node's first start, after a trimmed stream, and when Redis lost its data.</summary>
    private async Task LoadAsync()
    {
        await SendAsync().ConfigureAwait(false);
        ClusterMetrics.SuppressionReloads.Increment();
        string epoch = await FleetEpoch.CurrentAsync(_link, _epochKey).ConfigureAwait(false);
        bool member = _epoch == epoch;
        // The stream's end first: a change made while the hash is read is applied again after (a no-op).
        var last = await _link.CallAsync(db => db.StreamRangeAsync(_stream, "-", "+", 1, Order.Descending)).ConfigureAwait(false);
        string lastId = last.Length == 0 ? "0-0" : (string)last[0].Id!;
        var entries = await _link.CallAsync(async db =>
        {
            var all = new List<HashEntry>();
            await foreach (var e in db.HashScanAsync(_hash, pageSize: 1000).ConfigureAwait(false))
                all.Add(e);
            return all;
        }).ConfigureAwait(false);
        var inFleet = new HashSet<string>(entries.Count, StringComparer.Ordinal);
        int added = 0, removed = 0, offered = 0;
        foreach (var e in entries)
        {
            string field = (string)e.Name!;
            inFleet.Add(field);
            int nl = field.IndexOf('\n');
            if (nl <= 0 || !SuppressionScope.TryParse(field[..nl], out var scope, out _))
                continue;
            var value = ((string)e.Value!).Split('\t', 3);
            long time = long.TryParse(value[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out long t) ? t : 0;
            var change = new SuppressionChange(true, time, scope, Encoding.UTF8.GetBytes(field[(nl + 1)..]), value.Length > 2 ? value[2] : "");
            if (!_outbox.IsPending(field) && _list.ApplyFromFleet(change))
                added++;
        }
        var pending = _outbox.PendingKeys();
        foreach (var entry in _list.Entries().ToList())
        {
            string key = SuppressionSyncKeys.Of(entry.Scope, Encoding.UTF8.GetBytes(entry.Address));
            if (inFleet.Contains(key) || pending.Contains(key) || !SuppressionScope.TryParse(entry.Scope, out var scope, out _))
                continue;
            var address = Encoding.UTF8.GetBytes(entry.Address);
            if (member)
            {
                // Removed elsewhere while this node was not following.
                if (_list.ApplyFromFleet(new SuppressionChange(false, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), scope, address, "")))
                    removed++;
            }
            else
            {
                // New to this fleet (or Redis lost it): the fleet gets it.
                _outbox.Append(new SuppressionChange(true, entry.AddedUnixMs, scope, address, entry.Reason));
                offered++;
            }
        }
        _list.Commit();
        _outbox.Commit();
        _epoch = epoch;
        Volatile.Write(ref _lastId, lastId);
        SaveCursor();
        await SendAsync().ConfigureAwait(false);
        _log.Info($"cluster: suppression list loaded from the fleet ({entries.Count} entr{(entries.Count == 1 ? "y" : "ies")}): "
                  + $"{added} added here, {removed} removed here" + (member ? "" : $", {offered} of this node's added to the fleet's"));
    }

    public async ValueTask DisposeAsync()
    {
        _link.AvailabilityChanged -= OnAvailability;
        _stop.Cancel();
        if (_loop is not null)
            await _loop.ConfigureAwait(false);
        // A last try to send what waits (it stays in the outbox for the next start otherwise).
        if (_link.Available && _outbox.Count > 0)
        {
            try
            {
                await SendAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (RedisLink.IsUnavailable(e))
            {
            }
        }
        try
        {
            await _link.Subscriber.UnsubscribeAsync(_channel).ConfigureAwait(false);
        }
        catch (Exception e) when (RedisLink.IsUnavailable(e))
        {
        }
        _list.Sync = null;
        ClusterMetrics.SuppressionPending.SetSource(null);
        _outbox.Dispose();
        _stop.Dispose();
    }
}
