using System.Collections.Concurrent;

namespace NativeRelay.TlsPolicies.MtaSts;

/// <summary>What MTA-STS says for a domain now: the policy in force (or none), and a fetch failure to report.</summary>
public readonly record struct MtaStsLookup(CachedMtaStsPolicy? Policy, string? FetchFailureType, string? FetchError);

/// <summary>
/// The MTA-STS policies of the recipient domains (RFC 8461 5.1): a policy is used while it is
/// younger than its max_age and its record id is the one published (the TXT id changing means
/// "fetch again"); otherwise it is fetched, once at a time per domain however many connections ask
/// (single flight), asynchronously, so no delivery loop thread ever waits on HTTPS. A policy near
/// the end of its life is refreshed in the background while the old one stays in force. A fetch
/// that fails keeps the cached policy if it is still fresh (3.3), and otherwise means "no policy"
/// (with the failure reported to TLS-RPT). Policies live in memory and in <see cref="MtaStsStore"/>.
/// </summary>
public sealed class MtaStsPolicies
{
    private readonly MtaStsStore _store;
    private readonly MtaStsFetcher _fetcher;
    private readonly Func<DateTimeOffset> _now;
    private readonly ConcurrentDictionary<string, CachedMtaStsPolicy?> _cache = new(StringComparer.Ordinal);
    private readonly Dictionary<string, Task<MtaStsLookup>> _inFlight = new(StringComparer.Ordinal);
    private readonly Action<string>? _log;

    public MtaStsPolicies(MtaStsStore store, MtaStsFetcher fetcher, Func<DateTimeOffset>? now = null, Action<string>? log = null)
    {
        _store = store;
        _fetcher = fetcher;
        _now = now ?? (() => DateTimeOffset.UtcNow);
        _log = log;
    }

    public MtaStsStore Store => _store;

    /// <summary>Fetches started (tests and metrics).</summary>
    public int Fetches => _fetches;
    private int _fetches;

    /// <param name="recordId">The id of the domain's "_mta-sts" TXT record now, or null when it has none (or it did not parse).</param>
    public async ValueTask<MtaStsLookup> GetAsync(string domain, string? recordId, CancellationToken cancel)
    {
        var now = _now();
        // The first look at a domain reads its file, on the thread pool: loop threads never touch the disk.
        var cached = _cache.TryGetValue(domain, out var known) ? known
            : await Task.Run(() => Cached(domain), cancel).ConfigureAwait(false);
        bool fresh = cached is not null && cached.IsFresh(now);
        if (fresh && (recordId is null || recordId == cached!.Id))
        {
            // Refreshed before it expires (a quarter of its life left), the old policy in force meanwhile.
            if (recordId is not null && cached!.Expires - now < TimeSpan.FromSeconds(cached.Policy.MaxAge / 4.0))
                _ = FetchOnceAsync(domain, recordId);
            return new MtaStsLookup(cached, null, null);
        }
        if (recordId is null)
            return default; // no record and nothing fresh in the cache: the domain has no MTA-STS
        return await FetchOnceAsync(domain, recordId).WaitAsync(cancel).ConfigureAwait(false);
    }

    private CachedMtaStsPolicy? Cached(string domain)
    {
        if (_cache.TryGetValue(domain, out var cached))
            return cached;
        cached = _store.Load(domain);
        return _cache.GetOrAdd(domain, cached);
    }

    private Task<MtaStsLookup> FetchOnceAsync(string domain, string recordId)
    {
        lock (_inFlight)
        {
            if (_inFlight.TryGetValue(domain, out var running))
                return running;
            var task = FetchAsync(domain, recordId);
            if (!task.IsCompleted)
                _inFlight[domain] = task;
            return task;
        }
    }

    private async Task<MtaStsLookup> FetchAsync(string domain, string recordId)
    {
        await Task.Yield(); // off the caller's loop thread: the fetch and the file write run on the pool
        try
        {
            Interlocked.Increment(ref _fetches);
            var result = await _fetcher.FetchAsync(domain, CancellationToken.None).ConfigureAwait(false);
            var now = _now();
            if (result.Policy is not null)
            {
                var fetched = new CachedMtaStsPolicy(recordId, now, result.Policy);
                _cache[domain] = fetched;
                try
                {
                    _store.Save(domain, fetched);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    _log?.Invoke($"MTA-STS: cannot save the policy of {domain} in {_store.Directory}: {e.Message}");
                }
                _log?.Invoke($"MTA-STS: fetched the policy of {domain} (id {recordId}, mode {MtaStsPolicy.ModeName(result.Policy.Mode)}, max_age {result.Policy.MaxAge})");
                return new MtaStsLookup(fetched, null, null);
            }
            _log?.Invoke($"MTA-STS: {domain}: {result.FailureType}: {result.Error}");
            var old = Cached(domain);
            return new MtaStsLookup(old is not null && old.IsFresh(now) ? old : null, result.FailureType, result.Error);
        }
        catch (Exception e)
        {
            _log?.Invoke($"MTA-STS: {domain}: fetch failed: {e.Message}");
            return new MtaStsLookup(null, TlsFailureType.StsPolicyFetchError, e.Message);
        }
        finally
        {
            lock (_inFlight)
                _inFlight.Remove(domain);
        }
    }
}
