using NativeRelay.Config;
using NativeRelay.Traffic.Bounces;

namespace NativeRelay.Traffic.Suppression;

/// <summary>The <c>suppression</c> section of the configuration (docs/CONFIG.md, "Suppression list").</summary>
public sealed class SuppressionOptions
{
    /// <summary>Keep a suppression list in the spool directory (SPOOL/suppression/journal). Needs a restart to change.</summary>
    public bool Enabled { get; set; } = true;

    /// <summary>Hard bounces (5xx) of these classes add their recipient to the list by themselves; empty: none.</summary>
    public List<string> AutoAdd { get; set; } = ["invalid-recipient", "bad-domain"];

    /// <summary>Where automatic entries apply: "global", or "pool" (the message's pool; global for mail that has none).</summary>
    public string AutoAddScope { get; set; } = "global";

    /// <summary>Refuse a suppressed recipient at RCPT with 550 5.7.1.</summary>
    public bool RefuseAtRcpt { get; set; } = true;

    /// <summary>Mail already queued (or accepted while refuseAtRcpt is off) to a suppressed recipient fails with a DSN instead of being sent.</summary>
    public bool BounceQueued { get; set; } = true;
}

/// <summary>The validated <see cref="SuppressionOptions"/>.</summary>
public sealed record SuppressionSettings
{
    public static SuppressionSettings Default { get; } = Validate(new SuppressionOptions());

    public bool Enabled { get; init; }
    /// <summary>Indexed by <see cref="BounceClass"/>: whether a hard bounce of that class is added.</summary>
    public bool[] AutoAdd { get; init; } = new bool[BounceClassNames.Count];
    public bool AutoAddPerPool { get; init; }
    public bool RefuseAtRcpt { get; init; }
    public bool BounceQueued { get; init; }

    public bool AddsAutomatically(BounceClass c) => Enabled && AutoAdd[(int)c];

    /// <summary>The scope an automatic entry gets for mail of <paramref name="pool"/> (null: none).</summary>
    public SuppressionScope AutoAddScopeFor(string? pool) =>
        AutoAddPerPool && pool is not null ? SuppressionScope.Pool(pool) : SuppressionScope.Global;

    public static SuppressionSettings Validate(SuppressionOptions o)
    {
        var autoAdd = new bool[BounceClassNames.Count];
        foreach (var name in o.AutoAdd)
        {
            if (!BounceClassNames.TryParse(name, out var c))
                throw new ConfigException($"suppression.autoAdd: '{name}' is not a bounce class ({string.Join(", ", BounceClassNames.All)})");
            autoAdd[(int)c] = true;
        }
        bool perPool = (o.AutoAddScope ?? "").Trim().ToLowerInvariant() switch
        {
            "global" => false,
            "pool" => true,
            _ => throw new ConfigException($"suppression.autoAddScope: '{o.AutoAddScope}' is not global or pool"),
        };
        return new SuppressionSettings
        {
            Enabled = o.Enabled,
            AutoAdd = autoAdd,
            AutoAddPerPool = perPool,
            RefuseAtRcpt = o.RefuseAtRcpt,
            BounceQueued = o.BounceQueued,
        };
    }
}
