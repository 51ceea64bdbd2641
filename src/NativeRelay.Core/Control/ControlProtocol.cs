using System.Text.Json.Serialization;

namespace NativeRelay.Control;

/// <summary>
/// The control socket's protocol: the client writes one request as a JSON line; the relay answers
/// with JSON lines, one per queue entry for list/show, then a final line with <c>done: true</c>
/// carrying the outcome (ok or error, a count, statistics). The connection then closes.
/// </summary>
public static class ControlProtocol
{
    /// <summary>The socket's file name inside the spool directory.</summary>
    public const string SocketName = "control.sock";

    /// <summary>Longest request line the relay reads.</summary>
    public const int MaxRequestBytes = 4096;

    public static string SocketPath(string spoolDirectory) => Path.Combine(spoolDirectory, SocketName);

    public static class Commands
    {
        public const string List = "list";
        public const string Show = "show";
        public const string Flush = "flush";
        public const string Delete = "delete";
        public const string Bounce = "bounce";
        public const string Hold = "hold";
        public const string Release = "release";
        public const string Stats = "stats";
        public const string SuppressAdd = "suppress-add";
        public const string SuppressRemove = "suppress-remove";
        public const string SuppressList = "suppress-list";
        /// <summary>After the request line the relay answers <c>ready</c>; the client then sends the addresses, one a line, and closes its side.</summary>
        public const string SuppressImport = "suppress-import";
        public const string TrafficStatus = "traffic-status";
        public const string TrafficResume = "traffic-resume";
        /// <summary>cluster status, queue stats --cluster: this node's state and the fleet's nodes from their heartbeats.</summary>
        public const string ClusterStatus = "cluster-status";
    }
}

public sealed class ControlRequest
{
    public string Command { get; set; } = "";
    /// <summary>A queue id (16 hex digits).</summary>
    public string? Id { get; set; }
    /// <summary>Messages with a pending recipient in this domain.</summary>
    public string? Domain { get; set; }
    /// <summary>list: only messages queued longer than this.</summary>
    public long? OlderThanSeconds { get; set; }
    /// <summary>suppress-add/remove: the addresses.</summary>
    public List<string>? Addresses { get; set; }
    /// <summary>suppress-*: global (default), pool:NAME or domain:SENDERDOMAIN; for list, only that scope.</summary>
    public string? Scope { get; set; }
    /// <summary>suppress-add/import: why (shown by list).</summary>
    public string? Reason { get; set; }
    /// <summary>traffic-resume: the site whose actions are lifted.</summary>
    public string? Site { get; set; }
    /// <summary>traffic-resume: only the actions on this source's path to the site.</summary>
    public string? Source { get; set; }
}

/// <summary>One suppression list entry as the relay reports it.</summary>
public sealed class ControlSuppression
{
    public string Address { get; set; } = "";
    public string Scope { get; set; } = "global";
    public long AddedUnixMs { get; set; }
    public string? Reason { get; set; }
}

/// <summary>traffic status: the automation's actions in force, the busy (source, site) paths, the sources and pools.</summary>
public sealed class ControlTraffic
{
    public List<ControlTrafficAction> Actions { get; set; } = [];
    public List<ControlTrafficPath> Paths { get; set; } = [];
    public List<string> Sources { get; set; } = [];
    public List<string> Pools { get; set; } = [];
}

public sealed class ControlTrafficAction
{
    public string Source { get; set; } = "";
    public string Site { get; set; } = "";
    public string Rule { get; set; } = "";
    public string Action { get; set; } = "";
    public long StartedUnixMs { get; set; }
    public long UntilUnixMs { get; set; }
    public string Reply { get; set; } = "";
    /// <summary>A throttle's lowered limits.</summary>
    public string? Limits { get; set; }
}

public sealed class ControlTrafficPath
{
    public string Source { get; set; } = "";
    public string Site { get; set; } = "";
    public int Connections { get; set; }
    public int Queued { get; set; }
    public string Limits { get; set; } = "";
}

/// <summary>cluster status: this node (its view of Redis, the live count its fallback shares divide by) and the fleet.</summary>
public sealed class ControlCluster
{
    public string Node { get; set; } = "";
    /// <summary>The connection string with any password replaced by ***.</summary>
    public string Redis { get; set; } = "";
    /// <summary>Redis is away: this node runs on its share of each limit and on local state.</summary>
    public bool Degraded { get; set; }
    /// <summary>Live nodes as this node last saw them: every shared limit's fallback share is the limit divided by this.</summary>
    public int LiveNodes { get; set; }
    public int HeartbeatSeconds { get; set; }
    public int LeaseSeconds { get; set; }
    /// <summary>The nodes from their heartbeats, by name (live, and gone ones Redis still remembers).</summary>
    public List<ControlClusterNode> Nodes { get; set; } = [];
    /// <summary>Set when the list could not be read now (Redis away): <see cref="Nodes"/> is then the last list read, from this time.</summary>
    public long? NodesFromUnixMs { get; set; }
    public string? NodesError { get; set; }
}

/// <summary>One node of the fleet as its last heartbeat describes it.</summary>
public sealed class ControlClusterNode
{
    public string Name { get; set; } = "";
    /// <summary>Its heartbeat is recent (within three heartbeat intervals).</summary>
    public bool Live { get; set; }
    public long LastHeartbeatUnixMs { get; set; }
    /// <summary>How long ago that was, by the answering node's clock (0 if the clocks disagree the other way).</summary>
    public long LastHeartbeatAgeMs { get; set; }
    public long StartedUnixMs { get; set; }
    public string Version { get; set; } = "";
    public long Active { get; set; }
    public long Deferred { get; set; }
    public long Held { get; set; }
    /// <summary>The node said it was degraded (Redis away from it) in that heartbeat.</summary>
    public bool Degraded { get; set; }
}

/// <summary>One queued message as the relay reports it.</summary>
public sealed class ControlEntry
{
    public string Id { get; set; } = "";
    public long ArrivalUnixMs { get; set; }
    public long Size { get; set; }
    public string Sender { get; set; } = "";
    public List<string> Recipients { get; set; } = [];
    public long? NextAttemptUnixMs { get; set; }
    public int Attempts { get; set; }
    public string? LastError { get; set; }
    public bool Held { get; set; }
}

public sealed class ControlStats
{
    public int Active { get; set; }
    public int Deferred { get; set; }
    public int Held { get; set; }
    public Dictionary<string, int> ByDestination { get; set; } = new();
}

/// <summary>The spool's own figures (queue stats shows them beside the delivery counts).</summary>
public sealed class ControlSpoolStats
{
    public int LiveMessages { get; set; }
    public long LogBytes { get; set; }
    /// <summary>The segment files' sizes (holes punched in them are not subtracted).</summary>
    public long SizeOnDisk { get; set; }
    public long FreeBytes { get; set; }
    public bool RefusingMail { get; set; }
    public string? Problem { get; set; }
}

public sealed class ControlResponse
{
    /// <summary>Set on the last line of an answer.</summary>
    public bool Done { get; set; }
    public bool Ok { get; set; }
    public string? Error { get; set; }
    /// <summary>Messages listed or touched.</summary>
    public int? Count { get; set; }
    public ControlEntry? Entry { get; set; }
    public ControlStats? Stats { get; set; }
    public ControlSpoolStats? Spool { get; set; }
    public ControlSuppression? Suppression { get; set; }
    /// <summary>suppress-import: the relay waits for the addresses.</summary>
    public bool? Ready { get; set; }
    /// <summary>suppress-*: addresses that were already in (add, import) or not in (remove) the list, or were malformed.</summary>
    public int? Unchanged { get; set; }
    /// <summary>suppress-import: the first lines that were not addresses.</summary>
    public List<string>? Problems { get; set; }
    public ControlTraffic? Traffic { get; set; }
    /// <summary>cluster-status: this node and the fleet; null answer (with <see cref="Error"/>) on a relay without a cluster section.</summary>
    public ControlCluster? Cluster { get; set; }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(ControlRequest))]
[JsonSerializable(typeof(ControlResponse))]
public sealed partial class ControlJsonContext : JsonSerializerContext;
