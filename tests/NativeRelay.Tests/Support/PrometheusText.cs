using System.Globalization;
using System.Text.RegularExpressions;

namespace NativeRelay.Tests.Support;

/// <summary>
/// A strict reader of the Prometheus text exposition format 0.0.4, for asserting on a scrape:
/// every sample belongs to a family announced by "# HELP" and "# TYPE" (in that order, once each,
/// before its samples); sample lines are <c>name{label="value",...} number</c>; a histogram has
/// <c>_bucket</c> series with increasing <c>le</c> bounds ending in "+Inf", cumulative (never
/// decreasing) counts, a <c>_sum</c>, and a <c>_count</c> equal to its +Inf bucket. Any breach
/// throws with the line at fault.
/// </summary>
public sealed partial class PrometheusText
{
    private readonly Dictionary<string, double> _samples = new(StringComparer.Ordinal);

    public IReadOnlyDictionary<string, string> Types => _types;
    private readonly Dictionary<string, string> _types = new(StringComparer.Ordinal);

    /// <summary>Samples by "name" or "name{labels}" exactly as written.</summary>
    public IReadOnlyDictionary<string, double> Samples => _samples;

    public double this[string series] =>
        _samples.TryGetValue(series, out var v) ? v : throw new KeyNotFoundException($"no sample {series} in the scrape");

    [GeneratedRegex(@"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*=""(?:[^""\\]|\\.)*"",?)*)\})? (\S+)$")]
    private static partial Regex SampleLine();

    [GeneratedRegex(@"^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) ?(.*)$")]
    private static partial Regex CommentLine();

    public static PrometheusText Parse(string text)
    {
        var result = new PrometheusText();
        if (!text.EndsWith('\n'))
            throw new FormatException("the exposition must end with a line feed");
        var help = new HashSet<string>(StringComparer.Ordinal);
        var histograms = new Dictionary<string, List<(double Le, double Count)>>(StringComparer.Ordinal);
        var lines = text.Split('\n');
        for (int n = 0; n < lines.Length - 1; n++)
        {
            string line = lines[n];
            void Fail(string why) => throw new FormatException($"line {n + 1} '{line}': {why}");
            if (line.Length == 0)
                Fail("empty line");
            if (line.StartsWith('#'))
            {
                var c = CommentLine().Match(line);
                if (!c.Success)
                    Fail("not '# HELP name text' or '# TYPE name type'");
                string family = c.Groups[2].Value;
                if (c.Groups[1].Value == "HELP")
                {
                    if (!help.Add(family))
                        Fail("second HELP");
                }
                else
                {
                    if (!help.Contains(family))
                        Fail("TYPE before HELP");
                    if (result._types.ContainsKey(family))
                        Fail("second TYPE");
                    if (c.Groups[3].Value is not ("counter" or "gauge" or "histogram" or "summary" or "untyped"))
                        Fail("unknown type");
                    result._types[family] = c.Groups[3].Value;
                }
                continue;
            }
            var m = SampleLine().Match(line);
            if (!m.Success)
                Fail("not a sample line");
            string name = m.Groups[1].Value;
            string labels = m.Groups[3].Value;
            if (!TryParseValue(m.Groups[4].Value, out double value))
                Fail("not a number");
            string familyName = FamilyOf(name, result._types);
            if (!result._types.TryGetValue(familyName, out var type))
                Fail("sample without a preceding TYPE");
            string key = m.Groups[2].Success ? $"{name}{{{labels}}}" : name;
            if (!result._samples.TryAdd(key, value))
                Fail("duplicate series");
            if (type == "counter" && value < 0)
                Fail("negative counter");
            if (type == "histogram" && name.EndsWith("_bucket", StringComparison.Ordinal))
            {
                var le = Regex.Match(labels, @"(?:^|,)le=""([^""]*)""");
                if (!le.Success || !TryParseValue(le.Groups[1].Value, out double bound))
                    Fail("bucket without a numeric le label");
                if (!histograms.TryGetValue(familyName, out var buckets))
                    histograms[familyName] = buckets = [];
                if (buckets.Count > 0 && (bound <= buckets[^1].Le || value < buckets[^1].Count))
                    Fail("buckets must have increasing le and cumulative counts");
                buckets.Add((bound, value));
            }
        }
        foreach (var (family, buckets) in histograms)
        {
            if (!double.IsPositiveInfinity(buckets[^1].Le))
                throw new FormatException($"{family}: the last bucket is not le=\"+Inf\"");
            if (!result._samples.TryGetValue(family + "_count", out double count) || count != buckets[^1].Count)
                throw new FormatException($"{family}: _count missing or not equal to the +Inf bucket");
            if (!result._samples.ContainsKey(family + "_sum"))
                throw new FormatException($"{family}: _sum missing");
        }
        return result;
    }

    /// <summary>The cumulative bucket counts of a histogram, by le, +Inf last.</summary>
    public IReadOnlyList<(string Le, double Count)> Buckets(string family) =>
        _samples.Where(p => p.Key.StartsWith(family + "_bucket{", StringComparison.Ordinal))
            .Select(p => (Regex.Match(p.Key, @"le=""([^""]*)""").Groups[1].Value, p.Value)).ToList();

    private static string FamilyOf(string name, Dictionary<string, string> types)
    {
        if (types.ContainsKey(name))
            return name;
        foreach (var suffix in new[] { "_bucket", "_sum", "_count" })
            if (name.EndsWith(suffix, StringComparison.Ordinal) && types.TryGetValue(name[..^suffix.Length], out var t) && t is "histogram" or "summary")
                return name[..^suffix.Length];
        return name;
    }

    private static bool TryParseValue(string text, out double value)
    {
        switch (text)
        {
            case "+Inf": value = double.PositiveInfinity; return true;
            case "-Inf": value = double.NegativeInfinity; return true;
            case "NaN": value = double.NaN; return true;
        }
        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out value);
    }
}
