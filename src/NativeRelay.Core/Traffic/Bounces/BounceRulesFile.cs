using System.Text.Json;
using System.Text.Json.Serialization;
using NativeRelay.Config;

namespace NativeRelay.Traffic.Bounces;

/// <summary>
/// A bounce rules file as the operator writes it (JSON, the format of docs/CONFIG.md,
/// "Bounce classes"): an ordered list of rules, the first that matches a reply gives its class.
/// </summary>
public sealed class BounceRulesFile
{
    public List<BounceRuleOptions> Rules { get; set; } = [];
}

/// <summary>One rule: every condition given must hold (an absent condition holds for any reply).</summary>
public sealed class BounceRuleOptions
{
    /// <summary>The class given to a reply this rule matches (invalid-recipient, bad-domain, ...).</summary>
    public string Class { get; set; } = "";

    /// <summary>Basic reply codes, "550", or with x for any digit: "55x", "4xx".</summary>
    public List<string>? Code { get; set; }

    /// <summary>Enhanced status codes (RFC 3463), "5.1.1", with x or * for any value of a part: "x.1.1", "5.7.*".</summary>
    public List<string>? Status { get; set; }

    /// <summary>A .NET regular expression searched in the reply text, case-insensitive.</summary>
    public string? Text { get; set; }

    /// <summary>true: only replies this relay made up itself (DNS, connect, TLS failures); false: only replies of a remote server.</summary>
    public bool? Local { get; set; }

    /// <summary>Free text: why the rule is there, where its wording comes from. Not used.</summary>
    public string? Comment { get; set; }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    ReadCommentHandling = JsonCommentHandling.Skip,
    AllowTrailingCommas = true)]
[JsonSerializable(typeof(BounceRulesFile))]
internal sealed partial class BounceRulesJsonContext : JsonSerializerContext;

public static class BounceRulesReader
{
    /// <summary>Parses and compiles a rules file's text; any problem is a one-line <see cref="ConfigException"/> naming <paramref name="source"/> and the rule.</summary>
    public static IReadOnlyList<BounceRule> Parse(string text, string source)
    {
        BounceRulesFile? file;
        try
        {
            file = JsonSerializer.Deserialize(text, BounceRulesJsonContext.Default.BounceRulesFile);
        }
        catch (JsonException e)
        {
            throw new ConfigException($"bounce rules {source}: {e.Message.ReplaceLineEndings(" ")}");
        }
        if (file is null)
            throw new ConfigException($"bounce rules {source}: the file is empty (null)");
        var rules = new List<BounceRule>(file.Rules.Count);
        for (int i = 0; i < file.Rules.Count; i++)
            rules.Add(BounceRule.Compile(file.Rules[i], $"bounce rules {source}: rule {i + 1}"));
        return rules;
    }

    /// <summary>Reads a rules file (ConfigException when it cannot be read or is wrong).</summary>
    public static IReadOnlyList<BounceRule> Load(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"bounces.classRules: cannot read {path}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
        return Parse(text, path);
    }
}
