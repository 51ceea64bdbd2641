using NativeRelay.Smtp;

namespace NativeRelay.Traffic.Bounces;

/// <summary>The delivery path's one way into classification: called only for replies that are not 2xx/3xx.</summary>
public interface IBounceClassifier
{
    /// <param name="local">The relay made the reply up itself (DNS, connect, TLS failures), rather than a remote server.</param>
    BounceClass Classify(SmtpReply reply, bool local);
}

/// <summary>
/// Classifies failed and deferred replies by an ordered rule list: the operator's rules
/// (<c>bounces.classRules</c>) first, then the defaults shipped in the binary
/// (<c>Data/default-bounce-rules.json</c>); the first rule that matches gives the class, and a
/// reply no rule matches is <see cref="BounceClass.Other"/>. Immutable: a reload builds a new one.
/// The rules' regular expressions are built once, when the rules are loaded; a success never
/// gets here, so the cost is paid only by failures.
/// </summary>
public sealed class BounceClassifier : IBounceClassifier
{
    private const string DefaultRulesResource = "NativeRelay.Traffic.Bounces.default-bounce-rules.json";

    private static readonly Lazy<IReadOnlyList<BounceRule>> DefaultRules = new(LoadDefaultRules);

    private readonly BounceRule[] _rules;

    private BounceClassifier(BounceRule[] rules, int operatorRules)
    {
        _rules = rules;
        OperatorRuleCount = operatorRules;
    }

    /// <summary>The shipped rules only.</summary>
    public static BounceClassifier Default { get; } = new([.. DefaultRules.Value], 0);

    /// <summary>The operator's rules of <paramref name="path"/> (ConfigException when wrong), then the defaults; null: the defaults alone.</summary>
    public static BounceClassifier Create(string? path) =>
        path is null ? Default : FromRules(BounceRulesReader.Load(path));

    /// <summary>These rules first, then the defaults.</summary>
    public static BounceClassifier FromRules(IReadOnlyList<BounceRule> operatorRules) =>
        new([.. operatorRules, .. DefaultRules.Value], operatorRules.Count);

    public int OperatorRuleCount { get; }
    public int RuleCount => _rules.Length;

    public BounceClass Classify(SmtpReply reply, bool local) => Classify(reply.Code, reply.Text, local);

    public BounceClass Classify(int code, string? text, bool local)
    {
        var status = EnhancedStatus.Parse(text);
        foreach (var rule in _rules)
            if (rule.Matches(code, status, text, local))
                return rule.Class;
        return BounceClass.Other;
    }

    /// <summary>The shipped rules' text (for <c>check-config</c> and the docs' example).</summary>
    public static string DefaultRulesText()
    {
        using var stream = typeof(BounceClassifier).Assembly.GetManifestResourceStream(DefaultRulesResource)
                           ?? throw new InvalidOperationException($"the resource {DefaultRulesResource} is missing from the build");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }

    private static IReadOnlyList<BounceRule> LoadDefaultRules() => BounceRulesReader.Parse(DefaultRulesText(), "(built in)");
}
