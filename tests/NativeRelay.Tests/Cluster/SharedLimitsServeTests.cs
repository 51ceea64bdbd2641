using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using NativeRelay.Tests.Support;
using Xunit.Abstractions;

namespace NativeRelay.Tests.Cluster;

/// <summary>
/// One relay of a fleet against the published binary: <c>serve --redis ... --node ...</c> with a
/// shaping file that limits a site; its deliveries take the fleet's rate tokens and connection
/// leases from a real redis-server (the three-relay proofs are the fleet's end-to-end tests).
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class SharedLimitsServeTests(ITestOutputHelper log)
{
    [Fact]
    public async Task Serve_with_redis_node_and_a_site_limit_delivers_under_the_fleets_rate_and_leases()
    {
        await using var redis = await TestRedis.StartAsync();
        using var sink = new TestSmtpSink(IPAddress.Parse("127.0.0.18"), 0);
        await using var dns = new TestDnsServer();
        dns.Mx("fleet.test", (10, "mx.fleet.test")).A("mx.fleet.test", "127.0.0.18");
        await using var relay = await MxRelay.StartAsync(log, dns, sink.Port, root =>
        {
            string shaping = Path.Combine(Path.GetDirectoryName((string)root["spool"]!)!, "shaping.json");
            File.WriteAllText(shaping, """{ "rules": [ { "site": "mx.fleet.test", "messagesPerSecond": 50, "maxConnections": 1 } ] }""");
            root["traffic"] = new JsonObject { ["shaping"] = shaping };
        }, ["--redis", redis.ConnectionString, "--node", "smoke"]);

        var result = await RelayProcess.RunToExitAsync(
            ["blast", "--to", $"127.0.0.1:{relay.Port}", "--messages", "40", "--sessions", "4", "--size", "600", "--rcpt", "user@fleet.test", "--quiet"],
            relay.Dir.Path, log, TimeSpan.FromMinutes(2));
        Assert.True(result.ExitCode == 0, $"blast exited with {result.ExitCode}\n{result.Output}");
        await sink.WaitForCountAsync(40, TimeSpan.FromSeconds(60));

        Assert.Equal(1, sink.MaxConcurrentConnections);
        // The site's limits are the fleet's: a rate bucket and a lease set in Redis under the
        // path's name, and the node in the fleet's members.
        string rate = await redis.CommandAsync("HGET", "nativerelay:rate:path:default|mx.fleet.test", "s");
        Assert.True(long.TryParse(rate, NumberStyles.Integer, CultureInfo.InvariantCulture, out _), $"rate bucket: {rate}");
        Assert.Contains("smoke", await redis.CommandAsync("ZRANGE", "nativerelay:{nodes}", "0", "-1"));
        Assert.Contains("cluster: node smoke connected to Redis", relay.Process.Output);
    }
}
