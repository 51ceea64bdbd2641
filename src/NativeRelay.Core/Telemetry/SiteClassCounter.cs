using System.Collections.Concurrent;
using System.Text;

namespace NativeRelay.Telemetry;

/// <summary>
/// Counts failed and deferred recipients by site and bounce class:
/// <c>name{site="...",class="...",outcome="failed|deferred"}</c>. Each site is one array of
/// counters indexed by (class, outcome), made the first time the site fails, so counting is a
/// dictionary lookup and one interlocked add. Sites are capped like the per-destination counters
/// (<c>metrics.maxDestinations</c>): the rest share <c>site="other"</c>. Only classes a site
/// has seen are written.
/// </summary>
public sealed class SiteClassCounter : Metric
{
    public const string Other = "other";

    private readonly string[] _classNames;
    private readonly ConcurrentDictionary<string, long[]> _sites = new(StringComparer.Ordinal);
    private readonly long[] _other;
    private int _count;

    public SiteClassCounter(string name, string help, IReadOnlyList<string> classNames, int maxSites) : base(name, help)
    {
        _classNames = [.. classNames];
        _other = new long[_classNames.Length * 2];
        MaxSites = maxSites;
    }

    public int MaxSites { get; private set; }

    protected override string Type => "counter";

    public void SetMaxSites(int maxSites) => MaxSites = Math.Max(0, maxSites);

    /// <param name="classIndex">The class's index in the names given at construction.</param>
    public void Increment(string site, int classIndex, bool failed) =>
        Interlocked.Increment(ref Find(site)[classIndex * 2 + (failed ? 0 : 1)]);

    public long Get(string site, int classIndex, bool failed) =>
        (_sites.TryGetValue(site, out var counts) ? counts : site == Other ? _other : null) is { } c
            ? Volatile.Read(ref c[classIndex * 2 + (failed ? 0 : 1)]) : 0;

    private long[] Find(string site)
    {
        if (_sites.TryGetValue(site, out var counts))
            return counts;
        if (site == Other || Interlocked.Increment(ref _count) > MaxSites)
        {
            if (site != Other)
                Interlocked.Decrement(ref _count);
            return _other;
        }
        var made = new long[_classNames.Length * 2];
        var kept = _sites.GetOrAdd(site, made);
        if (!ReferenceEquals(kept, made))
            Interlocked.Decrement(ref _count);
        return kept;
    }

    protected override void WriteSamples(StringBuilder sb)
    {
        foreach (var (site, counts) in _sites.OrderBy(p => p.Key, StringComparer.Ordinal))
            WriteSite(sb, site, counts);
        WriteSite(sb, Other, _other);
    }

    private void WriteSite(StringBuilder sb, string site, long[] counts)
    {
        string? siteLabel = null;
        for (int i = 0; i < counts.Length; i++)
        {
            long value = Volatile.Read(ref counts[i]);
            if (value == 0)
                continue;
            siteLabel ??= Label("site", site);
            Sample(sb, Name, $"{siteLabel},{Label("class", _classNames[i / 2])},outcome=\"{(i % 2 == 0 ? "failed" : "deferred")}\"", value);
        }
    }
}
