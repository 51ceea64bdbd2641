using System.Globalization;
using System.Text;
using NativeRelay.Config;
using NativeRelay.Routing;

namespace NativeRelay.Traffic.Shaping;

/// <summary>
/// The limits of one (source, site) path, or the part of them one rule sets (null: not set here,
/// a less specific rule or the delivery options decide). Immutable.
/// </summary>
public sealed record ShapingLimits
{
    public static ShapingLimits None { get; } = new();

    public int? MaxConnections { get; init; }
    public double? ConnectionsPerMinute { get; init; }
    public double? MessagesPerSecond { get; init; }
    public double? MessagesPerMinute { get; init; }
    public double? MessagesPerHour { get; init; }
    public double? MessagesPerDay { get; init; }
    public int? MessagesPerConnection { get; init; }
    public int? RecipientsPerTransaction { get; init; }
    public int? IdleSeconds { get; init; }
    public TlsPolicy? Tls { get; init; }

    public bool IsEmpty => this == None;

    /// <summary>Any message rate limit set.</summary>
    public bool LimitsMessages => MessagesPerSecond is not null || MessagesPerMinute is not null || MessagesPerHour is not null || MessagesPerDay is not null;

    /// <summary>These limits with every one <paramref name="over"/> sets replacing this one's (the more specific rule last).</summary>
    public ShapingLimits With(ShapingLimits over) => over.IsEmpty ? this : IsEmpty ? over : new ShapingLimits
    {
        MaxConnections = over.MaxConnections ?? MaxConnections,
        ConnectionsPerMinute = over.ConnectionsPerMinute ?? ConnectionsPerMinute,
        MessagesPerSecond = over.MessagesPerSecond ?? MessagesPerSecond,
        MessagesPerMinute = over.MessagesPerMinute ?? MessagesPerMinute,
        MessagesPerHour = over.MessagesPerHour ?? MessagesPerHour,
        MessagesPerDay = over.MessagesPerDay ?? MessagesPerDay,
        MessagesPerConnection = over.MessagesPerConnection ?? MessagesPerConnection,
        RecipientsPerTransaction = over.RecipientsPerTransaction ?? RecipientsPerTransaction,
        IdleSeconds = over.IdleSeconds ?? IdleSeconds,
        Tls = over.Tls ?? Tls,
    };

    /// <summary>These limits lowered by <paramref name="cap"/> (an automation's throttle): each the smaller of the two.</summary>
    public ShapingLimits LoweredBy(ShapingLimits cap) => cap.IsEmpty ? this : this with
    {
        MaxConnections = Min(MaxConnections, cap.MaxConnections),
        ConnectionsPerMinute = Min(ConnectionsPerMinute, cap.ConnectionsPerMinute),
        MessagesPerSecond = Min(MessagesPerSecond, cap.MessagesPerSecond),
        MessagesPerMinute = Min(MessagesPerMinute, cap.MessagesPerMinute),
        MessagesPerHour = Min(MessagesPerHour, cap.MessagesPerHour),
        MessagesPerDay = Min(MessagesPerDay, cap.MessagesPerDay),
        MessagesPerConnection = Min(MessagesPerConnection, cap.MessagesPerConnection),
        RecipientsPerTransaction = Min(RecipientsPerTransaction, cap.RecipientsPerTransaction),
    };

    private static int? Min(int? a, int? b) => a is null ? b : b is null ? a : Math.Min(a.Value, b.Value);
    private static double? Min(double? a, double? b) => a is null ? b : b is null ? a : Math.Min(a.Value, b.Value);

    /// <summary>Checks and converts what a rule (or a source, or an automation's throttle) sets; <paramref name="what"/> names it in errors.</summary>
    public static ShapingLimits From(ShapingLimitsOptions o, string what)
    {
        Positive(o.MaxConnections, what, "maxConnections");
        Rate(o.ConnectionsPerMinute, what, "connectionsPerMinute");
        Rate(o.MessagesPerSecond, what, "messagesPerSecond");
        Rate(o.MessagesPerMinute, what, "messagesPerMinute");
        Rate(o.MessagesPerHour, what, "messagesPerHour");
        Rate(o.MessagesPerDay, what, "messagesPerDay");
        Positive(o.MessagesPerConnection, what, "messagesPerConnection");
        Positive(o.RecipientsPerTransaction, what, "recipientsPerTransaction");
        Positive(o.IdleSeconds, what, "idleSeconds");
        var limits = new ShapingLimits
        {
            MaxConnections = o.MaxConnections,
            ConnectionsPerMinute = o.ConnectionsPerMinute,
            MessagesPerSecond = o.MessagesPerSecond,
            MessagesPerMinute = o.MessagesPerMinute,
            MessagesPerHour = o.MessagesPerHour,
            MessagesPerDay = o.MessagesPerDay,
            MessagesPerConnection = o.MessagesPerConnection,
            RecipientsPerTransaction = o.RecipientsPerTransaction,
            IdleSeconds = o.IdleSeconds,
            Tls = o.Tls is null ? null : RoutingSettings.ParseTls(o.Tls, $"{what}.tls"),
        };
        return limits == None ? None : limits;
    }

    private static void Positive(int? value, string what, string name)
    {
        if (value is <= 0)
            throw new ConfigException($"{what}.{name} must be positive (got {value})");
    }

    private static void Rate(double? value, string what, string name)
    {
        if (value is { } v && (!(v > 0) || double.IsInfinity(v)))
            throw new ConfigException($"{what}.{name} must be a positive number (got {v.ToString(CultureInfo.InvariantCulture)})");
    }

    /// <summary>"5 connections, 10/s, 2000/h, 50 per connection" (only what is set), for logs and check-config.</summary>
    public string Describe()
    {
        if (IsEmpty)
            return "no limits";
        var parts = new List<string>();
        if (MaxConnections is { } c) parts.Add($"{c} connections");
        if (ConnectionsPerMinute is { } cm) parts.Add($"{N(cm)} new connections/min");
        if (MessagesPerSecond is { } s) parts.Add($"{N(s)}/s");
        if (MessagesPerMinute is { } m) parts.Add($"{N(m)}/min");
        if (MessagesPerHour is { } h) parts.Add($"{N(h)}/h");
        if (MessagesPerDay is { } d) parts.Add($"{N(d)}/day");
        if (MessagesPerConnection is { } pc) parts.Add($"{pc} per connection");
        if (RecipientsPerTransaction is { } r) parts.Add($"{r} recipients per transaction");
        if (IdleSeconds is { } i) parts.Add($"idle {i}s");
        if (Tls is { } t) parts.Add($"tls {RoutingSettings.TlsName(t)}");
        return string.Join(", ", parts);
    }

    private static string N(double v) => v.ToString("0.###", CultureInfo.InvariantCulture);
}
