using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.Support;

/// <summary>
/// A fleet of published relays for the cluster tests (issue 28): a private redis-server
/// (<see cref="TestRedis"/>), a DNS responder, and three relay processes n1, n2, n3 listening
/// on 127.0.0.11, .12 and .13 with their own spools, each joined with <c>cluster.redis</c> and
/// <c>cluster.node</c>, each sending from its own address (an egress source of the same name,
/// <c>out</c>, on every node: a limit per (source, site) is then the same limit fleet-wide) to
/// sinks on 127.0.0.21 (fleet.test), .22 (solo.test) and .23 (flow.test) that record peer
/// addresses, times and the connections open at each instant.
/// </summary>
public sealed class Fleet : IAsyncDisposable
{
    public const string RatedDomain = "fleet.test";
    public const string RatedSite = "mx.fleet.test";
    public const string SoloDomain = "solo.test";
    public const string SoloSite = "mx.solo.test";
    public const string FlowDomain = "flow.test";
    public const string Source = "out";

    private Fleet(TestRedis redis, TestDnsServer dns, SinkSet sinks, List<FleetNode> nodes)
    {
        Redis = redis;
        Dns = dns;
        Sinks = sinks;
        Nodes = nodes;
    }

    public TestRedis Redis { get; }
    public TestDnsServer Dns { get; }
    public SinkSet Sinks { get; }
    public IReadOnlyList<FleetNode> Nodes { get; }

    /// <summary>fleet.test's MX host (127.0.0.21): the site the shaping rules limit.</summary>
    public TestSmtpSink Rated => Sinks[0];

    /// <summary>solo.test's MX host (127.0.0.22).</summary>
    public TestSmtpSink Solo => Sinks[1];

    /// <summary>flow.test's MX host (127.0.0.23): no limits.</summary>
    public TestSmtpSink Flow => Sinks[2];

    /// <param name="shaping">The shaping file every node reads (null: none).</param>
    /// <param name="leaseSeconds">cluster.leaseSeconds (low in tests: a killed node's leases lapse quickly).</param>
    /// <param name="configure">Changes to a node's configuration (its JSON root and its index 0..2) before it starts.</param>
    public static async Task<Fleet> StartAsync(ITestOutputHelper log, string? shaping = null, int leaseSeconds = 5,
        Action<JsonObject, int>? configure = null)
    {
        TestRedis? redis = null;
        TestDnsServer? dns = null;
        SinkSet? sinks = null;
        var nodes = new List<FleetNode>();
        try
        {
            redis = await TestRedis.StartAsync();
            sinks = SinkSet.Start("127.0.0.21", "127.0.0.22", "127.0.0.23");
            dns = new TestDnsServer();
            dns.Mx(RatedDomain, (10, RatedSite)).A(RatedSite, "127.0.0.21")
               .Mx(SoloDomain, (10, SoloSite)).A(SoloSite, "127.0.0.22")
               .Mx(FlowDomain, (10, "mx.flow.test")).A("mx.flow.test", "127.0.0.23");
            // Started one after the other (each waits for its greeting), so they do not all start at once on 2 cores.
            for (int i = 0; i < 3; i++)
                nodes.Add(await FleetNode.StartAsync(log, i, redis, dns, sinks.Port, shaping, leaseSeconds, configure));
            return new Fleet(redis, dns, sinks, nodes);
        }
        catch
        {
            foreach (var n in nodes)
                await n.DisposeAsync();
            if (sinks is not null)
                await sinks.DisposeAsync();
            if (dns is not null)
                await dns.DisposeAsync();
            if (redis is not null)
                await redis.DisposeAsync();
            throw;
        }
    }

    /// <summary>Every node's output and the sinks' state, for failure messages.</summary>
    public string Describe() => string.Join("\n", Nodes.Select(n => n.Process.Describe())) + "\n" + Rated.Describe();

    public async ValueTask DisposeAsync()
    {
        foreach (var n in Nodes)
            await n.DisposeAsync();
        await Sinks.DisposeAsync();
        await Dns.DisposeAsync();
        await Redis.DisposeAsync();
    }
}

/// <summary>One relay of a <see cref="Fleet"/>: n1..n3 on 127.0.0.11..13, its own spool, config and metrics endpoint.</summary>
public sealed class FleetNode : IAsyncDisposable
{
    private readonly ITestOutputHelper _log;
    private readonly string[] _arguments;

    private FleetNode(ITestOutputHelper log, string name, IPAddress address, int port, int metricsPort, TempDir dir, string[] arguments, RelayProcess process)
    {
        _log = log;
        Name = name;
        Address = address;
        Port = port;
        MetricsPort = metricsPort;
        Dir = dir;
        _arguments = arguments;
        Process = process;
    }

    public string Name { get; }

    /// <summary>Where it listens, and the address its mail leaves from (its egress source).</summary>
    public IPAddress Address { get; }

    public int Port { get; }
    public int MetricsPort { get; }
    public TempDir Dir { get; }
    public RelayProcess Process { get; private set; }
    public string Spool => Dir.Spool;
    public string DeliveryLogPath => Dir.File("delivery.log");

    internal static async Task<FleetNode> StartAsync(ITestOutputHelper log, int index, TestRedis redis, TestDnsServer dns, int remotePort,
        string? shaping, int leaseSeconds, Action<JsonObject, int>? configure)
    {
        string name = $"n{index + 1}";
        var address = IPAddress.Parse($"127.0.0.{11 + index}");
        var dir = new TempDir("nativerelay-fleet-" + name);
        try
        {
            int port = FreePort.Get();
            int metricsPort = FreePort.Get();
            var traffic = new JsonObject
            {
                ["sources"] = new JsonObject { [Fleet.Source] = new JsonObject { ["address"] = address.ToString(), ["ehlo"] = $"{name}.fleet.test" } },
            };
            if (shaping is not null)
            {
                string path = dir.File("shaping.json");
                File.WriteAllText(path, shaping);
                traffic["shaping"] = path;
            }
            var root = new JsonObject
            {
                ["hostname"] = $"{name}.fleet.test",
                ["listen"] = new JsonArray($"{address}:{port}"),
                ["spool"] = dir.Spool,
                ["delivery"] = new JsonObject
                {
                    ["retryInitialSeconds"] = 1,
                    ["retryMaxSeconds"] = 2,
                    ["connectTimeoutSeconds"] = 10,
                    ["commandTimeoutSeconds"] = 60,
                    ["logFile"] = dir.File("delivery.log"),
                },
                ["routing"] = new JsonObject { ["dnsTimeoutSeconds"] = 2 },
                ["metrics"] = new JsonObject { ["listen"] = $"{address}:{metricsPort}" },
                ["traffic"] = traffic,
                // The connection string only; the node's name comes from --node (as a quick start would give it).
                ["cluster"] = new JsonObject
                {
                    ["redis"] = redis.ConnectionString,
                    ["leaseSeconds"] = leaseSeconds,
                    ["heartbeatSeconds"] = 1,
                    ["timeoutMilliseconds"] = 500,
                },
            };
            configure?.Invoke(root, index);
            string config = dir.File("relay.json");
            File.WriteAllText(config, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            string[] arguments = ["serve", "--config", config, "--node", name, "--dns", dns.Address, "--remote-port", remotePort.ToString(CultureInfo.InvariantCulture)];
            var process = await StartProcessAsync(log, arguments, address, port, dir);
            return new FleetNode(log, name, address, port, metricsPort, dir, arguments, process);
        }
        catch
        {
            dir.Dispose();
            throw;
        }
    }

    private static async Task<RelayProcess> StartProcessAsync(ITestOutputHelper log, string[] arguments, IPAddress address, int port, TempDir dir)
    {
        var process = RelayProcess.Start(arguments, dir.Path, log);
        try
        {
            await process.WaitUntilGreetingAsync(address, port, TimeSpan.FromSeconds(60));
            return process;
        }
        catch
        {
            process.Dispose();
            throw;
        }
    }

    /// <summary>kill -9: its connections drop at once, its leases and heartbeat stay in Redis until they lapse.</summary>
    public async Task KillAsync()
    {
        Process.Kill();
        await Process.WaitForExitAsync(Waits.Exit);
    }

    /// <summary>Starts it again on the same spool and config (after <see cref="KillAsync"/>).</summary>
    public async Task RestartAsync()
    {
        Process.Dispose();
        Process = await StartProcessAsync(_log, _arguments, Address, Port, Dir);
    }

    /// <summary>One message over SMTP to this node; the reply to the end of DATA (250 with the queue id when acknowledged).</summary>
    public async Task<SmtpReply> SendAsync(string from, string rcpt, byte[] data)
    {
        await using var client = await TestSmtpClient.ConnectAsync(Address, Port);
        var greeting = await client.ReadReplyAsync();
        if (greeting.Code != 220)
            throw new Xunit.Sdk.XunitException($"{Name}: greeting {greeting}");
        await client.ExpectAsync("EHLO client.fleet.test", 250);
        await client.ExpectAsync($"MAIL FROM:<{from}>", 250);
        var rcptReply = await client.CommandAsync($"RCPT TO:<{rcpt}>");
        if (rcptReply.Code != 250)
            return rcptReply;
        await client.ExpectAsync("DATA", 354);
        await client.SendRawAsync(TestSmtpClient.DotStuff(data));
        var reply = await client.ReadReplyAsync();
        await client.CommandAsync("QUIT");
        return reply;
    }

    /// <summary>The reply to RCPT TO for this recipient (the transaction is then reset).</summary>
    public async Task<SmtpReply> RcptReplyAsync(string from, string rcpt)
    {
        await using var client = await TestSmtpClient.ConnectAsync(Address, Port);
        await client.ReadReplyAsync();
        await client.ExpectAsync("EHLO client.fleet.test", 250);
        await client.ExpectAsync($"MAIL FROM:<{from}>", 250);
        var reply = await client.CommandAsync($"RCPT TO:<{rcpt}>");
        await client.CommandAsync("QUIT");
        return reply;
    }

    /// <summary>Queues <paramref name="messages"/> messages with the binary's own load tool (small messages, a few sessions).</summary>
    public async Task BlastAsync(int messages, string rcpt, int sessions = 4)
    {
        var result = await RelayProcess.RunToExitAsync(
            ["blast", "--to", $"{Address}:{Port}", "--messages", messages.ToString(CultureInfo.InvariantCulture),
             "--sessions", sessions.ToString(CultureInfo.InvariantCulture), "--size", "600", "--rcpt", rcpt, "--quiet"],
            Dir.Path, _log, TimeSpan.FromMinutes(3));
        Assert.True(result.ExitCode == 0, $"blast to {Name} exited with {result.ExitCode}\n{result.Output}\n{Process.Describe()}");
    }

    /// <summary>Runs the CLI against this node's spool (queue, suppress, traffic, cluster ...).</summary>
    public Task<CliResult> CliAsync(params string[] arguments) =>
        CliRun.RunAsync([.. arguments, "--spool", Spool], [], Dir.Path, _log);

    /// <summary><c>cluster status --json</c>'s "cluster" object.</summary>
    public async Task<JsonObject> ClusterStatusAsync()
    {
        var result = await CliAsync("cluster", "status", "--json");
        Assert.True(result.ExitCode == 0, $"{Name}: {result}");
        return (JsonNode.Parse(result.Stdout)!["cluster"] as JsonObject)!;
    }

    /// <summary><c>traffic status --json</c>'s "traffic" object.</summary>
    public async Task<JsonObject> TrafficStatusAsync()
    {
        var result = await CliAsync("traffic", "status", "--json");
        Assert.True(result.ExitCode == 0, $"{Name}: {result}");
        return (JsonNode.Parse(result.Stdout)!["traffic"] as JsonObject)!;
    }

    /// <summary>GET /metrics, parsed.</summary>
    public async Task<PrometheusText> MetricsAsync()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await socket.ConnectAsync(new IPEndPoint(Address, MetricsPort), timeout.Token);
        await socket.SendAsync(Encoding.ASCII.GetBytes($"GET /metrics HTTP/1.1\r\nHost: {Address}\r\nConnection: close\r\n\r\n"), SocketFlags.None, timeout.Token);
        var response = new MemoryStream();
        var buffer = new byte[8192];
        int n;
        while ((n = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token)) > 0)
            response.Write(buffer, 0, n);
        string text = Encoding.UTF8.GetString(response.ToArray());
        Assert.StartsWith("HTTP/1.1 200", text);
        return PrometheusText.Parse(text[(text.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..]);
    }

    public async ValueTask DisposeAsync()
    {
        Process.Dispose();
        await Task.CompletedTask;
        Dir.Dispose();
    }
}

/// <summary>
/// Checks that are all made before the test fails, so one run of a long scenario reports every
/// part that does not hold (the fleet tests' phases take a minute each: failing at the first
/// would hide the rest).
/// </summary>
public sealed class SoftChecks(ITestOutputHelper log)
{
    private readonly List<string> _failed = [];

    public void That(bool condition, string what)
    {
        log.WriteLine($"{(condition ? "ok  " : "FAIL")} {what}");
        if (!condition)
            _failed.Add(what);
    }

    public void InRange(double value, double low, double high, string what) =>
        That(value >= low && value <= high, $"{what}: {value:0.##} in [{low:0.##}, {high:0.##}]");

    /// <summary>Fails the test naming every check that did not hold.</summary>
    public void AssertAll(Func<string>? describe = null)
    {
        if (_failed.Count > 0)
            Assert.Fail($"{_failed.Count} check(s) failed:\n  " + string.Join("\n  ", _failed) + (describe is null ? "" : "\n" + describe()));
    }
}
