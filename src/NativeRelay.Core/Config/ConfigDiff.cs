using System.Text.Json;

namespace NativeRelay.Config;

/// <summary>
/// What differs between two configurations, as the option paths an operator writes
/// ("relayNetworks", "limits.maxRecipients", "routing.routes.example.com.hosts"), and which of
/// them only take effect at a restart. Both sides are serialized with the configuration's own
/// source-generated JSON contract, so every option is compared and none can be forgotten here.
/// </summary>
public static class ConfigDiff
{
    /// <summary>
    /// Options fixed for the life of the process: the sockets are bound, the spool and its log
    /// files are open, the delivery loops are threads, the privileges are dropped, and the host
    /// name is in every component. A reload logs them as "needs a restart" and keeps their values.
    /// </summary>
    private static readonly string[] RestartOnly =
    [
        "hostname",
        "listen",
        "listeners",
        "spool",
        "spoolTuning",
        "delivery.loops",
        "delivery.logFile",
        "limits.maxConnections",
        "limits.maxConnectionsPerIp",
        "metrics",
        "http.listen",
        "http.tls",
        "http.maxRequestBytes",
        "suppression.enabled",
        "user",
        "events",
        // The Redis connection, the node's name in the fleet and its lease and heartbeat times
        // are the cluster node's, made once at start (its leases and heartbeat carry them).
        "cluster",
    ];

    /// <summary>True when the option (or every option under it) only changes at a restart.</summary>
    public static bool NeedsRestart(string path)
    {
        foreach (var r in RestartOnly)
            if (path == r || (path.StartsWith(r, StringComparison.Ordinal) && path.Length > r.Length && path[r.Length] == '.'))
                return true;
        return false;
    }

    /// <summary>The paths of the options whose values differ (objects compared key by key; lists and values as a whole).</summary>
    public static IReadOnlyList<string> Compare(RelayOptions before, RelayOptions after)
    {
        var a = JsonSerializer.SerializeToElement(before, RelayOptionsJsonContext.Default.RelayOptions);
        var b = JsonSerializer.SerializeToElement(after, RelayOptionsJsonContext.Default.RelayOptions);
        var changed = new List<string>();
        Walk(a, b, "", changed);
        return changed;
    }

    private static void Walk(JsonElement a, JsonElement b, string path, List<string> changed)
    {
        if (a.ValueKind == JsonValueKind.Object && b.ValueKind == JsonValueKind.Object)
        {
            var names = new SortedSet<string>(StringComparer.Ordinal);
            foreach (var p in a.EnumerateObject())
                names.Add(p.Name);
            foreach (var p in b.EnumerateObject())
                names.Add(p.Name);
            foreach (var name in names)
            {
                string child = path.Length == 0 ? name : path + "." + name;
                bool inA = a.TryGetProperty(name, out var va);
                bool inB = b.TryGetProperty(name, out var vb);
                if (inA && inB)
                    Walk(va, vb, child, changed);
                else if (!(IsNull(inA ? va : vb)))
                    changed.Add(child);
            }
            return;
        }
        if (!JsonElement.DeepEquals(a, b))
            changed.Add(path);
    }

    private static bool IsNull(JsonElement e) => e.ValueKind is JsonValueKind.Null or JsonValueKind.Undefined;
}
