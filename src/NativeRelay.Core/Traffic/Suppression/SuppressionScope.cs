using System.Text;

namespace NativeRelay.Traffic.Suppression;

public enum SuppressionScopeKind : byte
{
    Global,
    /// <summary>Only mail of one pool (the egress pools of Traffic).</summary>
    Pool,
    /// <summary>Only mail from one sender domain (unsubscribes).</summary>
    Domain,
}

/// <summary>Where an entry applies: <c>global</c>, <c>pool:NAME</c> or <c>domain:SENDERDOMAIN</c> (the text form in the CLI, the journal and listings).</summary>
public readonly record struct SuppressionScope(SuppressionScopeKind Kind, string? Name)
{
    public static SuppressionScope Global => default;

    public static SuppressionScope Pool(string name) => new(SuppressionScopeKind.Pool, name);

    public static SuppressionScope Domain(string domain) => new(SuppressionScopeKind.Domain, domain.ToLowerInvariant());

    public override string ToString() => Kind switch
    {
        SuppressionScopeKind.Pool => "pool:" + Name,
        SuppressionScopeKind.Domain => "domain:" + Name,
        _ => "global",
    };

    /// <summary>Parses global, pool:NAME or domain:DOMAIN; false with a reason otherwise.</summary>
    public static bool TryParse(string? text, out SuppressionScope scope, out string? error)
    {
        scope = Global;
        error = null;
        text = text?.Trim();
        if (string.IsNullOrEmpty(text) || text.Equals("global", StringComparison.OrdinalIgnoreCase))
            return true;
        int colon = text.IndexOf(':');
        string kind = colon < 0 ? text : text[..colon].ToLowerInvariant();
        string name = colon < 0 ? "" : text[(colon + 1)..];
        if (name.Length is 0 or > 255 || name.Any(c => c <= ' ' || c == 0x7F))
        {
            error = $"'{text}' is not a scope: global, pool:NAME or domain:SENDERDOMAIN";
            return false;
        }
        switch (kind)
        {
            case "pool":
                scope = Pool(name);
                return true;
            case "domain":
                scope = Domain(name);
                return true;
            default:
                error = $"'{text}' is not a scope: global, pool:NAME or domain:SENDERDOMAIN";
                return false;
        }
    }

    /// <summary>The UTF-8 text form, as the journal stores it.</summary>
    internal byte[] ToUtf8() => Encoding.UTF8.GetBytes(ToString());
}
