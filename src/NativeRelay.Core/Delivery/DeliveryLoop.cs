using System.Runtime.CompilerServices;
using System.Threading.Channels;
using NativeRelay.Traffic;
using NativeRelay.Traffic.Shaping;

namespace NativeRelay.Delivery;

/// <summary>
/// One delivery loop: a thread of its own running a <see cref="LoopSynchronizationContext"/>.
/// It owns the egress paths hashed to it (a (source, site) pair: its shaping state, a
/// <see cref="SiteShaper"/>) and their destinations (one per next-hop set of the site), their
/// queues, connections and throttles; other threads reach it only through its bounded inbox.
/// Everything here runs on the loop's thread, so none of it is locked; a destination that hangs
/// only holds its own connections' awaits, never the thread.
/// </summary>
internal sealed class DeliveryLoop
{
    private const int InboxCapacity = 16 * 1024;
    private static readonly TimeSpan SweepInterval = TimeSpan.FromSeconds(30);

    private readonly int _index;
    private readonly DeliveryContext _context;
    private readonly LoopSynchronizationContext _sync = new();
    private readonly Channel<DeliveryJob> _inbox = Channel.CreateBounded<DeliveryJob>(
        new BoundedChannelOptions(InboxCapacity) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
    private readonly Dictionary<LaneKey, Destination> _destinations = new(LaneKey.Comparer);
    // A path's state by the names of its source and site: the same after a reload (new objects, same names).
    private readonly Dictionary<(string Source, string Site), SiteShaper> _shapers = new();
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Thread? _thread;

    public DeliveryLoop(int index, DeliveryContext context)
    {
        _index = index;
        _context = context;
    }

    internal DeliveryContext Context => _context;

    /// <summary>The loop's thread, for work that must run where the loop's state lives.</summary>
    internal SynchronizationContext Sync => _sync;

    private int _parked;

    /// <summary>Open connections of this loop's destinations waiting idle for a job (read from any thread).</summary>
    internal int ParkedConnections => Volatile.Read(ref _parked);

    /// <summary>On the loop's thread: a connection parked (+1) or left its wait (-1).</summary>
    internal void CountParked(int change) => Volatile.Write(ref _parked, _parked + change);

    public int Index => _index;

    /// <summary>Destinations this loop knows (approximate when read from another thread; for stats).</summary>
    public int DestinationCount => _destinations.Count;

    public void Start()
    {
        _thread = new Thread(() =>
        {
            _sync.Post(static s => ((DeliveryLoop)s!).RunAsync(), this);
            _sync.Run();
        })
        {
            IsBackground = true,
            Name = $"delivery-{_index}",
        };
        _thread.Start();
    }

    public ValueTask EnqueueAsync(DeliveryJob job) =>
        _inbox.Writer.TryWrite(job) ? ValueTask.CompletedTask : _inbox.Writer.WriteAsync(job);

    private async void RunAsync()
    {
        try
        {
            var sweeper = SweepAsync();
            var reader = _inbox.Reader;
            while (await reader.WaitToReadAsync())
            {
                while (reader.TryRead(out var job))
                    Accept(job);
            }
            await sweeper;
        }
        catch (Exception e)
        {
            _context.Log.Error($"delivery loop {_index} failed: {e}");
        }
        finally
        {
            _stopped.TrySetResult();
        }
    }

    private void Accept(DeliveryJob job)
    {
        if (job.Message.IsStopped)
        {
            _ = _context.Scheduler.CompleteJobAsync(job, null, null);
            return;
        }
        var path = job.Path!;
        var shaper = path.Shaper;
        if (shaper is null || shaper.Removed)
            path.Shaper = shaper = ShaperOf(path);
        shaper.Adopt(path);
        var key = new LaneKey(shaper, job.Route.Key, job.Route.KeyHash);
        if (!_destinations.TryGetValue(key, out var destination))
        {
            destination = new Destination(job.Route, this, shaper);
            _destinations.Add(key, destination);
            shaper.AddLane(destination);
        }
        destination.Enqueue(job);
    }

    private SiteShaper ShaperOf(EgressPath path)
    {
        var names = (path.Source.Name, path.Site.Name);
        if (!_shapers.TryGetValue(names, out var shaper))
        {
            shaper = _context.Traffic.CreateShaper(path, _sync);
            _shapers.Add(names, shaper);
        }
        return shaper;
    }

    /// <summary>A destination: one next-hop set (route key) of one path.</summary>
    private readonly record struct LaneKey(SiteShaper Shaper, string RouteKey, uint RouteHash)
    {
        public static readonly IEqualityComparer<LaneKey> Comparer = new KeyComparer();

        private sealed class KeyComparer : IEqualityComparer<LaneKey>
        {
            public bool Equals(LaneKey a, LaneKey b) => ReferenceEquals(a.Shaper, b.Shaper) && string.Equals(a.RouteKey, b.RouteKey, StringComparison.Ordinal);
            public int GetHashCode(LaneKey k) => RuntimeHelpers.GetHashCode(k.Shaper) * 31 + (int)k.RouteHash;
        }
    }

    /// <summary>Forgets destinations that have been idle for a while (their slow-start state goes with them), then paths without destinations.</summary>
    private async Task SweepAsync()
    {
        var stopping = _context.Stopping;
        List<LaneKey>? idle = null;
        List<(string, string)>? unused = null;
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(SweepInterval, stopping);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            long now = Environment.TickCount64;
            foreach (var (key, destination) in _destinations)
                if (destination.IsIdleSince(now - (long)SweepInterval.TotalMilliseconds * 2))
                    (idle ??= new()).Add(key);
            if (idle is null)
                continue;
            foreach (var key in idle)
            {
                key.Shaper.RemoveLane(_destinations[key]);
                _destinations.Remove(key);
            }
            idle.Clear();
            foreach (var (names, shaper) in _shapers)
                if (shaper.LaneCount == 0 && shaper.Connections == 0)
                    (unused ??= new()).Add(names);
            if (unused is null)
                continue;
            foreach (var names in unused)
            {
                _context.Traffic.Forget(_shapers[names]);
                _shapers.Remove(names);
            }
            unused.Clear();
        }
        _inbox.Writer.TryComplete();
    }

    public async Task StopAsync(TimeSpan deadline)
    {
        _inbox.Writer.TryComplete();
        await Task.WhenAny(_stopped.Task, Task.Delay(deadline));
        var drained = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _sync.Post(_ => WaitForConnectionsAsync(drained, deadline), null);
        await Task.WhenAny(drained.Task, Task.Delay(deadline));
        _sync.Stop();
    }

    private async void WaitForConnectionsAsync(TaskCompletionSource drained, TimeSpan deadline)
    {
        var until = DateTime.UtcNow + deadline;
        while (DateTime.UtcNow < until)
        {
            bool busy = false;
            foreach (var d in _destinations.Values)
                busy |= d.ActiveConnections > 0;
            if (!busy)
                break;
            await Task.Delay(20);
        }
        drained.TrySetResult();
    }
}
