namespace NativeRelay.Config;

/// <summary>
/// Traffic control on the delivery side (docs/CONFIG.md, "Traffic"): the local addresses mail
/// leaves from (egress sources), weighted sets of them (pools), which pool a message belongs to
/// (decided at reception), and the shaping rules file (limits by site, domain and source, and the
/// automatic reactions to what receivers say). Empty: every message leaves from the system's
/// default address, shaped only by the delivery options and routes, as without this section.
/// Validated into <see cref="NativeRelay.Traffic.TrafficSettings"/>.
/// </summary>
public sealed class TrafficOptions
{
    /// <summary>Egress sources by name: a local address to bind, the EHLO name to use from it, and its own limits.</summary>
    public Dictionary<string, SourceOptions> Sources { get; set; } = new();

    /// <summary>Pools by name: each a set of sources with integer weights.</summary>
    public Dictionary<string, PoolOptions> Pools { get; set; } = new();

    /// <summary>
    /// The pool of a message no rule places. Default: with sources but no pools, every source in
    /// equal weights; with pools, the system's default source (no bind, the host name as EHLO).
    /// </summary>
    public string? DefaultPool { get; set; }

    /// <summary>Which pool a message belongs to, decided at reception; the first rule that matches wins.</summary>
    public List<PoolRuleOptions> PoolRules { get; set; } = [];

    /// <summary>The shaping rules file (JSON: limits by site, domain and source; automation), reloaded on SIGHUP.</summary>
    public string? Shaping { get; set; }
}

/// <summary>One egress source of <see cref="TrafficOptions.Sources"/>.</summary>
public sealed class SourceOptions
{
    /// <summary>The local IPv4 or IPv6 address outgoing connections bind to (it must be on this host).</summary>
    public string Address { get; set; } = "";

    /// <summary>The name said in EHLO from this address (its PTR name, ideally). Default: the relay's host name.</summary>
    public string? Ehlo { get; set; }

    /// <summary>Connections open from this source at once, over every site.</summary>
    public int? MaxConnections { get; set; }

    /// <summary>Messages from this source, over every site (smooth: one every 1/rate).</summary>
    public double? MessagesPerSecond { get; set; }
    public double? MessagesPerMinute { get; set; }
    public double? MessagesPerHour { get; set; }
    public double? MessagesPerDay { get; set; }
}

/// <summary>One pool of <see cref="TrafficOptions.Pools"/>.</summary>
public sealed class PoolOptions
{
    /// <summary>Source name to weight (1 to 1000): a source gets weight/total of the pool's first attempts.</summary>
    public Dictionary<string, int> Sources { get; set; } = new();
}

/// <summary>
/// One rule of <see cref="TrafficOptions.PoolRules"/>: every condition given must hold. With
/// <see cref="Header"/> and no <see cref="Pool"/>, the header's value names the pool. A header a
/// rule names is removed from the message before it is spooled (trusted clients only: relay
/// networks or authenticated; from anyone else it is neither read nor removed).
/// </summary>
public sealed class PoolRuleOptions
{
    /// <summary>The authenticated user (AUTH), exactly.</summary>
    public string? AuthUser { get; set; }

    /// <summary>The listener the message came in on: its IP:PORT, or its kind (smtp, submission, implicit-tls).</summary>
    public string? Listener { get; set; }

    /// <summary>The envelope sender's domain: "example.com", or ".example.com" for it and its subdomains.</summary>
    public string? SenderDomain { get; set; }

    /// <summary>A header field the operator names (e.g. X-Pool); removed before the message is spooled.</summary>
    public string? Header { get; set; }

    /// <summary>With <see cref="Header"/>: the value the field must have (case-insensitive) for <see cref="Pool"/>.</summary>
    public string? Value { get; set; }

    /// <summary>The pool the message goes to.</summary>
    public string? Pool { get; set; }
}
