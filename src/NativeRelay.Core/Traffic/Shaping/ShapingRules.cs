using NativeRelay.Config;
using NativeRelay.Traffic.Automation;
using NativeRelay.Traffic.Sites;
using NativeRelay.Traffic.Sources;

namespace NativeRelay.Traffic.Shaping;

/// <summary>
/// The shaping rules of one configuration: site labels, limits by match, and the automation
/// rules. A path's limits are resolved once per configuration (<see cref="Resolve"/>): starting
/// from the default, every matching rule is applied from the least specific to the most, each
/// replacing the limits it sets, so per limit the most specific rule that sets it wins. The
/// order of specificity: domain, then site (label or name), then MX suffix (a longer suffix
/// first), each with a source before the same without; a rule with only a source comes after
/// the site rules; the default last.
/// </summary>
public sealed class ShapingRules
{
    public static ShapingRules Empty { get; } = new(ShapingLimits.None, [], [], AutomationRule.Defaults, null);

    private readonly Rule[] _rules; // least specific first

    private ShapingRules(ShapingLimits defaults, Rule[] rules, IReadOnlyList<SiteLabel> labels, IReadOnlyList<AutomationRule> automation, string? path)
    {
        Default = defaults;
        _rules = rules;
        Labels = labels;
        Automation = automation;
        Path = path;
        OwnSiteDomains = rules.Where(r => r.Domain is not null).Select(r => r.Domain!).ToHashSet(StringComparer.Ordinal);
    }

    public ShapingLimits Default { get; }
    public IReadOnlyList<SiteLabel> Labels { get; }
    public IReadOnlyList<AutomationRule> Automation { get; }
    /// <summary>The file these came from (null: no file).</summary>
    public string? Path { get; }
    /// <summary>Domains a rule names: each is a site of its own.</summary>
    public IReadOnlySet<string> OwnSiteDomains { get; }
    public int Count => _rules.Length;

    internal sealed record Rule(string? Domain, string? Site, string? MxSuffix, string? Source, ShapingLimits Limits, int Specificity, int Order)
    {
        public bool Matches(Site site, EgressSource source) => new SiteScope(Domain, Site, MxSuffix, Source).Covers(site, source);

        public string Describe()
        {
            var when = new List<string>();
            if (Domain is not null) when.Add($"domain {Domain}");
            if (Site is not null) when.Add($"site {Site}");
            if (MxSuffix is not null) when.Add($"mx *.{MxSuffix}");
            if (Source is not null) when.Add($"source {Source}");
            return $"{string.Join(", ", when)}: {Limits.Describe()}";
        }
    }

    public IEnumerable<string> DescribeRules() => _rules.Reverse().Select(r => r.Describe());

    /// <summary>The limits of a path: the default, then every matching rule from the least specific to the most.</summary>
    public ShapingLimits Resolve(Site site, EgressSource source)
    {
        var limits = Default;
        foreach (var rule in _rules)
            if (rule.Matches(site, source))
                limits = limits.With(rule.Limits);
        return limits;
    }

    /// <summary>Checks a shaping file against the configured sources; every problem is a <see cref="ConfigException"/>.</summary>
    public static ShapingRules Validate(ShapingFileOptions file, string path, IReadOnlySet<string> sources)
    {
        string what = $"shaping file {path}";
        var labels = new List<SiteLabel>();
        foreach (var (name, label) in file.Sites ?? new())
        {
            if (string.IsNullOrWhiteSpace(name) || name.Contains(','))
                throw new ConfigException($"{what}: sites: '{name}' is not a label (a word without commas)");
            if (label?.MxSuffixes is not { Count: > 0 })
                throw new ConfigException($"{what}: sites.{name}: mxSuffixes is needed");
            var suffixes = new List<string>();
            foreach (var s in label.MxSuffixes)
            {
                var suffix = s.Trim().TrimStart('.').TrimEnd('.').ToLowerInvariant();
                if (!RelaySettings.IsValidHostname(suffix))
                    throw new ConfigException($"{what}: sites.{name}.mxSuffixes: '{s}' is not a host name suffix");
                suffixes.Add(suffix);
            }
            labels.Add(new SiteLabel(name, suffixes));
        }

        var defaults = file.Default is null ? ShapingLimits.None : ShapingLimits.From(file.Default, $"{what}: default");
        if (file.Default is { } d && (d.Domain ?? d.Site ?? d.MxSuffix ?? d.Source) is not null)
            throw new ConfigException($"{what}: default applies everywhere: no domain, site, mxSuffix or source in it");

        var rules = new List<Rule>();
        for (int i = 0; i < (file.Rules?.Count ?? 0); i++)
        {
            var r = file.Rules![i] ?? throw new ConfigException($"{what}: rules[{i}] is null");
            string rw = $"{what}: rules[{i}]";
            if (r.Domain is null && r.Site is null && r.MxSuffix is null && r.Source is null)
                throw new ConfigException($"{rw}: a rule needs domain, site, mxSuffix or source (limits for everything go in default)");
            if (r.Domain is not null && (r.Site is not null || r.MxSuffix is not null))
                throw new ConfigException($"{rw}: domain makes a site of its own: no site or mxSuffix beside it");
            string? domain = null;
            if (r.Domain is { } dn)
            {
                domain = dn.Trim().TrimEnd('.').ToLowerInvariant();
                if (!RelaySettings.IsValidHostname(domain))
                    throw new ConfigException($"{rw}.domain: '{dn}' is not a domain");
            }
            string? suffix = null;
            if (r.MxSuffix is { } sx)
            {
                suffix = sx.Trim().TrimStart('.').TrimEnd('.').ToLowerInvariant();
                if (!RelaySettings.IsValidHostname(suffix))
                    throw new ConfigException($"{rw}.mxSuffix: '{sx}' is not a host name suffix");
            }
            if (r.Source is { } src && !sources.Contains(src))
                throw new ConfigException($"{rw}.source: no source '{src}' in traffic.sources");
            var limits = ShapingLimits.From(r, rw);
            if (limits.IsEmpty)
                throw new ConfigException($"{rw}: sets no limit");
            int specificity = domain is not null ? 3000 : r.Site is not null ? 2000 : suffix is not null ? 1000 + 2 * suffix.Length : 0;
            if (r.Source is not null)
                specificity += specificity == 0 ? 500 : 1;
            rules.Add(new Rule(domain, r.Site?.Trim(), suffix, r.Source, limits, specificity, i));
        }
        // Least specific first; equal ones in file order (a later one wins).
        rules.Sort(static (a, b) => a.Specificity != b.Specificity ? a.Specificity.CompareTo(b.Specificity) : a.Order.CompareTo(b.Order));

        IReadOnlyList<AutomationRule> automation = AutomationRule.Defaults;
        if (file.Automation is { } list)
        {
            var built = new List<AutomationRule>();
            var names = new HashSet<string>(StringComparer.Ordinal);
            for (int i = 0; i < list.Count; i++)
            {
                var a = AutomationRule.From(list[i] ?? throw new ConfigException($"{what}: automation[{i}] is null"), $"{what}: automation[{i}]");
                if (!names.Add(a.Name))
                    throw new ConfigException($"{what}: automation[{i}]: the name '{a.Name}' is used twice");
                if (a.Source is { } s && !sources.Contains(s))
                    throw new ConfigException($"{what}: automation[{i}].source: no source '{s}' in traffic.sources");
                built.Add(a);
            }
            automation = built;
        }
        return new ShapingRules(defaults, rules.ToArray(), labels, automation, path);
    }
}
