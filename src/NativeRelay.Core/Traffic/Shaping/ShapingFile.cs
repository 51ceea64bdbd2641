using System.Text.Json;
using System.Text.Json.Serialization;
using NativeRelay.Config;

namespace NativeRelay.Traffic.Shaping;

/// <summary>
/// The shaping rules file as the operator writes it (camelCase JSON, comments allowed; see
/// docs/CONFIG.md "Shaping rules" and docs/examples/shaping.json). Validated into
/// <see cref="ShapingRules"/>.
/// </summary>
public sealed class ShapingFileOptions
{
    /// <summary>Site labels: name to the MX host suffixes that make a site of that name (every MX host of a domain must match).</summary>
    public Dictionary<string, SiteLabelOptions> Sites { get; set; } = new();

    /// <summary>Limits for every site no rule names (the least specific rule).</summary>
    public ShapingRuleOptions? Default { get; set; }

    /// <summary>Limits matched by domain, site (label or name), MX suffix and source; per limit, the most specific rule that sets it wins.</summary>
    public List<ShapingRuleOptions> Rules { get; set; } = [];

    /// <summary>Reactions to replies. Absent: the built-in defaults (AutomationRule.Defaults); an empty list: none.</summary>
    public List<AutomationRuleOptions>? Automation { get; set; }
}

/// <summary>One site label: the MX host suffixes (".google.com" or "google.com": the name itself or any name under it).</summary>
public sealed class SiteLabelOptions
{
    public List<string> MxSuffixes { get; set; } = [];
    /// <summary>Free text for the operator (ignored).</summary>
    public string? Note { get; set; }
    /// <summary>Where the figures come from (ignored).</summary>
    public string? Reference { get; set; }
}

/// <summary>The limits a rule can set; null leaves a limit to a less specific rule.</summary>
public class ShapingLimitsOptions
{
    /// <summary>Connections open at once to the site from one source.</summary>
    public int? MaxConnections { get; set; }
    /// <summary>New connections per minute to the site from one source (smooth).</summary>
    public double? ConnectionsPerMinute { get; set; }
    /// <summary>Messages to the site from one source (smooth token buckets: one every 1/rate, burst 1).</summary>
    public double? MessagesPerSecond { get; set; }
    public double? MessagesPerMinute { get; set; }
    public double? MessagesPerHour { get; set; }
    public double? MessagesPerDay { get; set; }
    /// <summary>Deliveries (transactions) on one connection before it is closed and another opened.</summary>
    public int? MessagesPerConnection { get; set; }
    /// <summary>Recipients in one transaction; the rest go in further transactions.</summary>
    public int? RecipientsPerTransaction { get; set; }
    /// <summary>Seconds an open connection waits idle for more mail before it is closed.</summary>
    public int? IdleSeconds { get; set; }
    /// <summary>TLS policy (none, opportunistic, required, verify) where the route uses the default one.</summary>
    public string? Tls { get; set; }
}

/// <summary>A shaping rule: what it matches (all given must hold; none: every site), and its limits.</summary>
public sealed class ShapingRuleOptions : ShapingLimitsOptions
{
    /// <summary>A recipient domain, exactly (case-insensitive). Its mail then forms a site of its own, named by the domain.</summary>
    public string? Domain { get; set; }
    /// <summary>A site: a label of <see cref="ShapingFileOptions.Sites"/>, or a site's name (its sorted MX host names).</summary>
    public string? Site { get; set; }
    /// <summary>Sites whose every MX host ends with this suffix.</summary>
    public string? MxSuffix { get; set; }
    /// <summary>An egress source's name: the rule applies to mail leaving from it only.</summary>
    public string? Source { get; set; }
    public string? Note { get; set; }
    public string? Reference { get; set; }
}

/// <summary>
/// An automation rule: a reply it matches (every condition given must hold) from the sites it
/// covers, and what to do with that (source, site) for how long.
/// </summary>
public sealed class AutomationRuleOptions : ShapingLimitsOptions
{
    /// <summary>Names the rule in logs, metrics and traffic status.</summary>
    public string Name { get; set; } = "";
    /// <summary>The reply code (421, 451, 550 ...).</summary>
    public int? Code { get; set; }
    /// <summary>The enhanced status code, or its start ("4.7.28", "4.7").</summary>
    public string? Enhanced { get; set; }
    /// <summary>A regular expression searched in the reply text (case-insensitive).</summary>
    public string? Text { get; set; }
    public string? Domain { get; set; }
    public string? Site { get; set; }
    public string? MxSuffix { get; set; }
    public string? Source { get; set; }
    /// <summary>suspend (no mail on that path), throttle (the limits given here, lower), bounce (queued mail fails with a DSN).</summary>
    public string Action { get; set; } = "";
    /// <summary>How long the action lasts: seconds, or 90s, 30m, 2h, 1d. It lapses by itself.</summary>
    public string Duration { get; set; } = "";
    public string? Note { get; set; }
    public string? Reference { get; set; }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    ReadCommentHandling = JsonCommentHandling.Skip,
    AllowTrailingCommas = true)]
[JsonSerializable(typeof(ShapingFileOptions))]
internal sealed partial class ShapingFileJsonContext : JsonSerializerContext;

/// <summary>Reads a shaping file; any problem is a one-line <see cref="ConfigException"/> naming the file.</summary>
public static class ShapingFile
{
    public static ShapingFileOptions Load(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"traffic.shaping: cannot read {path}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
        return Parse(text, path);
    }

    public static ShapingFileOptions Parse(string text, string path)
    {
        try
        {
            return JsonSerializer.Deserialize(text, ShapingFileJsonContext.Default.ShapingFileOptions)
                   ?? throw new ConfigException($"shaping file {path} is empty (null)");
        }
        catch (JsonException e)
        {
            throw new ConfigException($"shaping file {path}: {e.Message.ReplaceLineEndings(" ")}");
        }
    }
}
