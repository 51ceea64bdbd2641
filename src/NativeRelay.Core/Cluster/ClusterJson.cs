using System.Text.Json.Serialization;

namespace NativeRelay.Cluster;

/// <summary>
/// An automation action or a resume as the fleet passes it around: the value of the actions
/// hash (an action in force) and the message on the actions channel (an action, or a lift).
/// </summary>
public sealed class ActionMessage
{
    /// <summary>"apply" or "lift".</summary>
    public string Op { get; set; } = "apply";
    /// <summary>The node that applied or lifted it (its own messages come back to it: ignored).</summary>
    public string Node { get; set; } = "";
    /// <summary>The path's source (a lift: null for every source).</summary>
    public string? Source { get; set; }
    public string Site { get; set; } = "";
    public string? Rule { get; set; }
    /// <summary>throttle, suspend or bounce.</summary>
    public string? Kind { get; set; }
    public long StartedUnixMs { get; set; }
    public long UntilUnixMs { get; set; }
    public string? Reply { get; set; }
    // A throttle's lowered limits (the ones a throttle may set).
    public int? MaxConnections { get; set; }
    public double? ConnectionsPerMinute { get; set; }
    public double? MessagesPerSecond { get; set; }
    public double? MessagesPerMinute { get; set; }
    public double? MessagesPerHour { get; set; }
    public double? MessagesPerDay { get; set; }
    public int? MessagesPerConnection { get; set; }
    public int? RecipientsPerTransaction { get; set; }
}

// Source-generated: no reflection in the native binary.
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(ActionMessage))]
[JsonSerializable(typeof(NativeRelay.Api.IdempotencyRecord))]
internal sealed partial class ClusterJsonContext : JsonSerializerContext;
