using System.Net;
using System.Text.Json;
using NativeRelay.Config;
using NativeRelay.Traffic.Shaping;
using NativeRelay.Traffic.Sources;

namespace NativeRelay.Traffic;

/// <summary>
/// The validated <c>traffic</c> section and its shaping file: the egress sources (built, with
/// their shared limits), the pools, the default pool, the reception-time pool rules and the
/// shaping rules. Built once per configuration (start, every reload); immutable but for the
/// sources' live counters.
/// </summary>
public sealed class TrafficSettings
{
    /// <summary>No traffic section: the system's default source alone, no shaping file, the default automation rules.</summary>
    public static TrafficSettings Default { get; } = Build(new TrafficOptions(), null);

    private TrafficSettings(IReadOnlyList<EgressSource> sources, EgressSource systemDefault, IReadOnlyDictionary<string, EgressPool> pools,
        EgressPool defaultPool, PoolRules poolRules, ShapingRules shaping, string fingerprint, bool configured)
    {
        Sources = sources;
        SystemDefault = systemDefault;
        Pools = pools;
        DefaultPool = defaultPool;
        PoolRules = poolRules;
        Shaping = shaping;
        Fingerprint = fingerprint;
        IsConfigured = configured;
    }

    /// <summary>The configured sources (the system's default source is not among them unless a pool uses it).</summary>
    public IReadOnlyList<EgressSource> Sources { get; }

    /// <summary>The system's default source: no bind, the host name in EHLO.</summary>
    public EgressSource SystemDefault { get; }

    public IReadOnlyDictionary<string, EgressPool> Pools { get; }

    /// <summary>The pool of a message that has none (or names one that no longer exists).</summary>
    public EgressPool DefaultPool { get; }

    public PoolRules PoolRules { get; }

    public ShapingRules Shaping { get; }

    /// <summary>Anything configured (sources, pools, rules, a shaping file).</summary>
    public bool IsConfigured { get; }

    /// <summary>Equal for equal configurations (options and shaping file text): a reload that changes nothing keeps the running state.</summary>
    internal string Fingerprint { get; }

    /// <summary>Every source that mail may leave from (the pools' members), each once.</summary>
    public IEnumerable<EgressSource> SourcesInUse => Pools.Values.Append(DefaultPool).SelectMany(p => p.Members.Select(m => m.Source)).Distinct();

    /// <summary>The pool of a message (its stored name; null or unknown: the default pool).</summary>
    public EgressPool PoolOf(string? name) =>
        name is not null && Pools.TryGetValue(name, out var pool) ? pool : DefaultPool;

    /// <summary>Checks that every source's address is on this host (start and reload; ConfigException naming the source).</summary>
    public void CheckBind()
    {
        foreach (var source in Sources)
            source.CheckBind();
    }

    /// <summary>Validates the section (and reads the shaping file it names); every problem is a one-line <see cref="ConfigException"/>.</summary>
    public static TrafficSettings Validate(RelayOptions o)
    {
        var t = o.Traffic ?? new TrafficOptions();
        string? shapingText = null;
        string? shapingPath = null;
        if (!string.IsNullOrWhiteSpace(t.Shaping))
        {
            shapingPath = Path.GetFullPath(t.Shaping);
            shapingText = ReadBounded(shapingPath);
        }
        return Build(t, shapingPath is null ? null : (shapingPath, shapingText!));
    }

    private static TrafficSettings Build(TrafficOptions t, (string Path, string Text)? shapingFile)
    {
        var sources = new List<EgressSource>();
        var byName = new Dictionary<string, EgressSource>(StringComparer.Ordinal);
        var addresses = new Dictionary<IPAddress, string>();
        foreach (var (name, s) in (t.Sources ?? new()).OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            string what = $"traffic.sources.{name}";
            if (!IsName(name))
                throw new ConfigException($"traffic.sources: '{name}' is not a source name (letters, digits, '-', '_', '.')");
            if (s is null || !IPAddress.TryParse(s.Address?.Trim(), out var address) || s.Address!.Contains('/'))
                throw new ConfigException($"{what}.address: '{s?.Address}' is not an IPv4 or IPv6 address");
            if (address.Equals(IPAddress.Any) || address.Equals(IPAddress.IPv6Any))
                throw new ConfigException($"{what}.address: {address} is the wildcard address, not a source (leave the source out to use the system's default)");
            if (addresses.TryGetValue(address, out var other))
                throw new ConfigException($"{what}.address: {address} is also the address of source {other}");
            addresses[address] = name;
            string? ehlo = s.Ehlo?.Trim();
            if (ehlo is not null && !RelaySettings.IsValidHostname(ehlo))
                throw new ConfigException($"{what}.ehlo: '{s.Ehlo}' is not a host name");
            ShapingLimits.From(new ShapingLimitsOptions
            {
                MaxConnections = s.MaxConnections, MessagesPerSecond = s.MessagesPerSecond, MessagesPerMinute = s.MessagesPerMinute,
                MessagesPerHour = s.MessagesPerHour, MessagesPerDay = s.MessagesPerDay,
            }, what);
            var source = new EgressSource(name, address, ehlo, s, sources.Count + 1);
            sources.Add(source);
            byName[name] = source;
        }
        var systemDefault = byName.TryGetValue(EgressSource.DefaultName, out var named)
            ? named
            : new EgressSource(EgressSource.DefaultName, null, null, null, 0);

        var pools = new Dictionary<string, EgressPool>(StringComparer.Ordinal);
        foreach (var (name, p) in (t.Pools ?? new()).OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            string what = $"traffic.pools.{name}";
            if (!IsName(name))
                throw new ConfigException($"traffic.pools: '{name}' is not a pool name (letters, digits, '-', '_', '.')");
            if (p?.Sources is not { Count: > 0 })
                throw new ConfigException($"{what}.sources: a pool needs at least one source");
            if (p.Sources.Count > 256)
                throw new ConfigException($"{what}.sources: at most 256 sources in a pool");
            var members = new List<(EgressSource, int)>();
            foreach (var (sourceName, weight) in p.Sources.OrderBy(m => m.Key, StringComparer.Ordinal))
            {
                var source = byName.TryGetValue(sourceName, out var s) ? s
                    : sourceName == EgressSource.DefaultName ? systemDefault
                    : throw new ConfigException($"{what}.sources: no source '{sourceName}' in traffic.sources");
                if (weight is < 1 or > 1000)
                    throw new ConfigException($"{what}.sources.{sourceName}: a weight from 1 to 1000 (got {weight})");
                members.Add((source, weight));
            }
            pools[name] = new EgressPool(name, members);
        }

        EgressPool defaultPool;
        if (t.DefaultPool is { } dp)
        {
            if (!pools.TryGetValue(dp, out defaultPool!))
                throw new ConfigException($"traffic.defaultPool: no pool '{dp}' in traffic.pools");
        }
        else if (pools.Count == 0 && sources.Count > 0)
        {
            // --source without pools: every source, equal weights.
            defaultPool = new EgressPool("default", sources.Select(s => (s, 1)).ToList());
        }
        else
        {
            defaultPool = new EgressPool("default", [(systemDefault, 1)]);
        }

        var poolRules = PoolRules.Validate(t.PoolRules ?? [], pools.Keys.ToHashSet(StringComparer.Ordinal));

        var shaping = ShapingRules.Empty;
        if (shapingFile is { } file)
        {
            var parsed = ShapingFile.Parse(file.Text, file.Path);
            var names = byName.Keys.Append(EgressSource.DefaultName).ToHashSet(StringComparer.Ordinal);
            shaping = ShapingRules.Validate(parsed, file.Path, names);
        }

        string fingerprint = JsonSerializer.Serialize(t, RelayOptionsJsonContext.Default.TrafficOptions) + "\n" + (shapingFile?.Text ?? "");
        bool configured = sources.Count > 0 || pools.Count > 0 || poolRules.Count > 0 || shapingFile is not null;
        return new TrafficSettings(sources, systemDefault, pools, defaultPool, poolRules, shaping, fingerprint, configured);
    }

    /// <summary>The shaping file's text, at most 4 MiB (a device such as /dev/zero is refused, not read forever).</summary>
    private static string ReadBounded(string path)
    {
        const int Max = 4 * 1024 * 1024;
        try
        {
            using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1, FileOptions.None);
            var buffer = new byte[Max + 1];
            int used = 0, n;
            while (used < buffer.Length && (n = file.Read(buffer, used, buffer.Length - used)) > 0)
                used += n;
            if (used > Max)
                throw new ConfigException($"traffic.shaping: {path} is larger than 4 MiB");
            return System.Text.Encoding.UTF8.GetString(buffer, 0, used);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"traffic.shaping: cannot read {path}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
    }

    private static bool IsName(string name) =>
        name.Length is > 0 and <= 64 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.');

    /// <summary>Lines for check-config and the start-up log.</summary>
    public IEnumerable<(string Key, string Value)> Describe()
    {
        foreach (var s in Sources)
            yield return ("source", $"{s.Name}: {s.Describe()}");
        foreach (var p in Pools.Values)
            yield return ("pool", $"{p.Name}: {p.Describe()}");
        yield return ("default pool", Pools.ContainsKey(DefaultPool.Name) ? DefaultPool.Name
            : DefaultPool.Members.Count == 1 && DefaultPool.Members[0].Source.Address is null ? "the system's default source"
            : $"{DefaultPool.Describe()}");
        foreach (var r in PoolRules.Describe())
            yield return ("pool rule", r);
        if (Shaping.Path is null)
            yield return ("shaping", "no rules file: limits from delivery and routes; default automation");
        else
        {
            yield return ("shaping", $"{Shaping.Path}: {Shaping.Labels.Count} site label(s), {Shaping.Count} rule(s), {Shaping.Automation.Count} automation rule(s)");
            if (!Shaping.Default.IsEmpty)
                yield return ("shaping default", Shaping.Default.Describe());
            foreach (var l in Shaping.Labels)
                yield return ("site label", $"{l.Name}: MX *.{string.Join(", *.", l.Suffixes)}");
            foreach (var r in Shaping.DescribeRules())
                yield return ("shaping rule", r);
        }
        foreach (var a in Shaping.Automation)
            yield return ("automation", a.Describe());
    }
}
