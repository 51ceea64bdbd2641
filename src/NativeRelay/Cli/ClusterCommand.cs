using System.CommandLine;
using System.Text.Json;
using NativeRelay.Config;
using NativeRelay.Control;

namespace NativeRelay.Cli;

/// <summary>
/// <c>nativerelay cluster status</c>: the fleet as the relay running on a spool sees it, through
/// its control socket (found with <c>--spool DIR</c> or <c>--config FILE</c>, as <c>queue</c>
/// finds it): this node (Redis reachable or degraded, the live node count its fallback shares
/// divide by) and every node's last heartbeat (age, version, queue sizes, degraded flag).
/// Exit codes as queue's: 0 done, 1 refused (a relay that is not part of a fleet), 2 usage or
/// configuration error, 3 no relay running on that spool.
/// </summary>
internal static class ClusterCommand
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private static readonly Option<bool> Json = Recursive(Flags.Switch("--json", "print the relay's answer as JSON"));
    private static readonly Option<string> SpoolFlag = Recursive(Flags.Text("--spool", "DIR", "the spool of the relay to ask",
        $"the configuration's, else {new RelayOptions().Spool}"));
    private static readonly Option<string> Config = Recursive(Flags.Text("--config", "FILE", "find the spool in this configuration file, as serve does"));

    private const string Details =
        "Exit codes: 0 done, 1 the relay is not part of a fleet, 2 usage or configuration error, 3 no relay running on that spool.";

    public static Command Build()
    {
        var status = new VerbCommand("status", "Show this node (Redis reachable or degraded, live node count) and the fleet's nodes from their heartbeats.", Details);
        status.SetAction((result, _) => StatusAsync(result));
        return new VerbCommand("cluster", "Look at the fleet a running relay is a node of.",
            """
            Talks to the relay running on a spool through its control socket (found with --spool DIR or --config
            FILE, as queue finds it): 'status' shows this node (its name, Redis reachable or degraded, the live
            node count that divides every limit while Redis is away) and every node of the fleet from its last
            heartbeat (live or gone, age, version, active/deferred/held queue sizes, degraded flag). Exit codes:
            0 done, 1 the relay is not part of a fleet, 2 usage or configuration error, 3 no relay running on
            that spool.
            """)
        {
            Json, SpoolFlag, Config, status,
        };
    }

    private static Option<T> Recursive<T>(Option<T> option)
    {
        option.Recursive = true;
        return option;
    }

    private static async Task<int> StatusAsync(ParseResult result)
    {
        string spool = ControlVerb.SpoolDirectory(result.ValueOrNull(SpoolFlag), result.ValueOrNull(Config));
        bool json = result.GetValue(Json);
        return await ControlVerb.RunAsync("cluster", async () =>
        {
            var final = await AskAsync(spool);
            if (json)
            {
                Console.WriteLine(JsonSerializer.Serialize(final, ControlJsonContext.Default.ControlResponse));
                return final.Ok ? QueueCommand.ExitOk : QueueCommand.ExitFailed;
            }
            if (!final.Ok || final.Cluster is not { } c)
            {
                Console.Error.WriteLine($"nativerelay cluster: {final.Error ?? "the relay refused the request"}");
                return QueueCommand.ExitFailed;
            }
            Print(c);
            return QueueCommand.ExitOk;
        });
    }

    /// <summary>One cluster-status exchange (also queue stats --cluster's).</summary>
    internal static async Task<ControlResponse> AskAsync(string spool)
    {
        var (_, final) = await ControlClient.SendAsync(spool, new ControlRequest { Command = ControlProtocol.Commands.ClusterStatus }, Timeout);
        return final;
    }

    private static void Print(ControlCluster c)
    {
        Console.WriteLine($"node:       {c.Node}");
        Console.WriteLine($"redis:      {c.Redis} ({(c.Degraded ? "UNREACHABLE: degraded, each limit at its share, local state" : "reachable: limits and state shared")})");
        Console.WriteLine($"live nodes: {c.LiveNodes} (while Redis is away each node takes 1/{c.LiveNodes} of every limit)");
        Console.WriteLine($"heartbeat:  every {c.HeartbeatSeconds}s; leases {c.LeaseSeconds}s");
        if (c.NodesError is not null)
        {
            Console.WriteLine(c.NodesFromUnixMs is long at
                ? $"nodes as last read {QueueCommand.Duration(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() - at)} ago ({c.NodesError}):"
                : $"nodes: unknown ({c.NodesError})");
        }
        if (c.Nodes.Count == 0)
            return;
        Console.WriteLine($"{"NODE",-20} {"STATE",-5} {"SEEN",8} {"ACTIVE",8} {"DEFERRED",8} {"HELD",8}  {"REDIS",-8} VERSION");
        foreach (var n in c.Nodes)
        {
            Console.WriteLine($"{n.Name,-20} {(n.Live ? "live" : "gone"),-5} {QueueCommand.Duration(n.LastHeartbeatAgeMs) + " ago",8} {n.Active,8} {n.Deferred,8} {n.Held,8}  "
                              + $"{(n.Degraded ? "degraded" : "ok"),-8} {n.Version}");
        }
    }
}
