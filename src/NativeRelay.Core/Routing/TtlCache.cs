using System.Collections.Concurrent;

namespace NativeRelay.Routing;

/// <summary>
/// A bounded cache of DNS-derived answers, each kept for its own TTL, with single flight: while
/// a name is being looked up, every other caller for that name waits on the same task instead of
/// sending its own query (a burst of 10,000 messages to one new domain costs one lookup).
/// Keys compare case-insensitively and can be looked up as characters without allocating.
/// When full, expired entries go first, then arbitrary ones (a sweep, rare and off the hot path).
/// </summary>
internal sealed class TtlCache<T> where T : class
{
    private readonly ConcurrentDictionary<string, Entry> _entries = new(StringComparer.OrdinalIgnoreCase);
    private readonly ConcurrentDictionary<string, Entry>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    private readonly int _capacity;
    private readonly Func<long> _nowMs;
    private int _sweeping;

    public TtlCache(int capacity, Func<long> nowMs)
    {
        _capacity = capacity;
        _nowMs = nowMs;
        _lookup = _entries.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    public int Count => _entries.Count;

    /// <summary>A fresh answer, if there is one (no waiting, no allocation).</summary>
    public bool TryGetFresh(ReadOnlySpan<char> key, out T value)
    {
        if (_lookup.TryGetValue(key, out var entry) && entry.Task.IsCompletedSuccessfully && entry.ExpiresMs > _nowMs())
        {
            value = entry.Task.Result;
            return true;
        }
        value = null!;
        return false;
    }

    /// <summary>
    /// The cached answer, the lookup already in flight, or a new lookup by <paramref name="load"/>
    /// (which returns the answer and how long it may be kept).
    /// </summary>
    public Task<T> GetAsync(string key, Func<string, Task<(T Value, TimeSpan Ttl)>> load)
    {
        while (true)
        {
            if (_entries.TryGetValue(key, out var existing))
            {
                if (!existing.Task.IsCompleted || (existing.Task.IsCompletedSuccessfully && existing.ExpiresMs > _nowMs()))
                    return existing.Task;
                var fresh = new Entry();
                if (!_entries.TryUpdate(key, fresh, existing))
                    continue;
                return fresh.Run(key, load, this);
            }
            var entry = new Entry();
            if (!_entries.TryAdd(key, entry))
                continue;
            if (_entries.Count > _capacity)
                Sweep();
            return entry.Run(key, load, this);
        }
    }

    public void Clear() => _entries.Clear();

    /// <summary>Drops expired answers; if that is not enough, arbitrary ones, down to 90% of the capacity.</summary>
    private void Sweep()
    {
        if (Interlocked.Exchange(ref _sweeping, 1) != 0)
            return;
        try
        {
            long now = _nowMs();
            foreach (var (key, entry) in _entries)
                if (entry.Task.IsCompleted && entry.ExpiresMs <= now)
                    _entries.TryRemove(new KeyValuePair<string, Entry>(key, entry));
            int target = _capacity * 9 / 10;
            if (_entries.Count <= target)
                return;
            foreach (var (key, entry) in _entries)
            {
                if (_entries.Count <= target)
                    break;
                if (entry.Task.IsCompleted)
                    _entries.TryRemove(new KeyValuePair<string, Entry>(key, entry));
            }
        }
        finally
        {
            Volatile.Write(ref _sweeping, 0);
        }
    }

    private sealed class Entry
    {
        private readonly TaskCompletionSource<T> _source = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private long _expiresMs;

        public long ExpiresMs => Volatile.Read(ref _expiresMs);

        public Task<T> Task => _source.Task;

        public Task<T> Run(string key, Func<string, Task<(T Value, TimeSpan Ttl)>> load, TtlCache<T> cache)
        {
            _ = RunAsync(key, load, cache);
            return _source.Task;
        }

        private async Task RunAsync(string key, Func<string, Task<(T Value, TimeSpan Ttl)>> load, TtlCache<T> cache)
        {
            try
            {
                var (value, ttl) = await load(key).ConfigureAwait(false);
                Volatile.Write(ref _expiresMs, cache._nowMs() + (long)ttl.TotalMilliseconds);
                _source.TrySetResult(value);
            }
            catch (Exception e)
            {
                // Not cached: the next caller tries again.
                cache._entries.TryRemove(new KeyValuePair<string, Entry>(key, this));
                _source.TrySetException(e);
            }
        }
    }
}
