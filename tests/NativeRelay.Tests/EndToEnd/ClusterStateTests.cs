using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// Shared state of a fleet with the published binary: two relays joined through a real
/// redis-server (<c>serve --redis --node</c>), each with its own spool. The three-relay fleet
/// tests (limits, leases, Redis stopped mid-run) are in their own class.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class ClusterStateTests(ITestOutputHelper log)
{
    private const string Sender = "alice@origin.test";

    private static async Task<string> RcptAsync(MxRelay relay, string to)
    {
        await using var client = await TestSmtpClient.ConnectAndGreetAsync(relay.Port);
        await client.EhloAsync();
        await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
        var reply = await client.CommandAsync($"RCPT TO:<{to}>");
        return reply.ToString();
    }

    [Fact]
    public async Task A_421_4_7_28_seen_by_one_relay_suspends_the_path_on_the_other_and_a_resume_on_the_other_lifts_it_on_both()
    {
        const string Ip2 = "127.0.0.2", Ip3 = "127.0.0.3";
        await using var redis = await TestRedis.StartAsync();
        await using var sink = new TestSmtpSink(IPAddress.Parse("127.0.0.12"), 0);
        int refused = 0;
        // The site answers the first message from 127.0.0.2 (relay one's, by the test's order) with Gmail's rate limit.
        sink.DataReply = attempt => attempt.PeerAddress == Ip2 && Interlocked.Exchange(ref refused, 1) == 0
            ? "421 4.7.28 [127.0.0.2] Our system has detected an unusual rate of unsolicited mail originating from your IP address. gsmtp"
            : "250 2.0.0 Ok";
        await using var dns = new TestDnsServer();
        dns.Mx("a.test", (10, "mx.a.test")).A("mx.a.test", "127.0.0.12");
        void Configure(JsonObject root)
        {
            string shaping = Path.Combine(Path.GetDirectoryName((string)root["spool"]!)!, "shaping.json");
            File.WriteAllText(shaping, """
                { "automation": [ { "name": "gmail-rate-limited", "code": 421, "enhanced": "4.7.28", "action": "suspend", "duration": "10m" } ] }
                """);
            root["traffic"] = new JsonObject
            {
                ["sources"] = new JsonObject
                {
                    ["ip2"] = new JsonObject { ["address"] = Ip2, ["ehlo"] = "mta2.traffic.test" },
                    ["ip3"] = new JsonObject { ["address"] = Ip3, ["ehlo"] = "mta3.traffic.test" },
                },
                ["shaping"] = shaping,
            };
        }
        await using var one = await MxRelay.StartAsync(log, dns, sink.Port, Configure, ["--redis", redis.ConnectionString, "--node", "one"]);
        await using var two = await MxRelay.StartAsync(log, dns, sink.Port, Configure, ["--redis", redis.ConnectionString, "--node", "two"]);

        for (int i = 0; i < 4; i++)
            await one.SendAsync(Sender, ["user@a.test"], MessageText.Simple($"one-{i}@cluster.test"));
        await one.Process.WaitForOutputAsync("traffic: suspend on source ip2 to site mx.a.test for 10m", Waits.Delivery);
        await two.Process.WaitForOutputAsync("traffic: suspend on source ip2 to site mx.a.test until", TimeSpan.FromSeconds(10));
        Assert.Contains(two.Process.StdoutLines, l => l.Contains("from node one (rule gmail-rate-limited", StringComparison.Ordinal));
        var status = await CliRun.RunAsync(["traffic", "status", "--json", "--spool", two.Dir.Spool], [], two.Dir.Path, log);
        Assert.True(status.ExitCode == 0, status.ToString());
        var action = Assert.Single(JsonNode.Parse(status.Stdout)!["traffic"]!["actions"]!.AsArray());
        Assert.Equal("ip2", (string?)action!["source"]);
        Assert.Equal("mx.a.test", (string?)action["site"]);
        Assert.Equal("suspend", (string?)action["action"]);

        // Relay two never got the 421 itself, yet sends to the site from ip3 only.
        for (int i = 0; i < 6; i++)
            await two.SendAsync(Sender, ["user@a.test"], MessageText.Simple($"two-{i}@cluster.test"));
        bool FromTwo(ReceivedMessage m) => m.Header("Message-ID")!.StartsWith("<two-", StringComparison.Ordinal);
        await sink.WaitUntilAsync(() => sink.Messages.Count(FromTwo) == 6, Waits.Delivery, "relay two's six messages");
        Assert.All(sink.Messages.Where(FromTwo), m => Assert.Equal(Ip3, m.PeerAddress));

        // Resumed on relay two: lifted on relay one too.
        var resume = await CliRun.RunAsync(["traffic", "resume", "--site", "mx.a.test", "--spool", two.Dir.Spool], [], two.Dir.Path, log);
        Assert.True(resume.ExitCode == 0, resume.ToString());
        await one.Process.WaitForOutputAsync("traffic: suspend on source ip2 to site mx.a.test lifted by the administrator on node two", TimeSpan.FromSeconds(10));
        var after = await CliRun.RunAsync(["traffic", "status", "--json", "--spool", one.Dir.Spool], [], one.Dir.Path, log);
        Assert.Empty(JsonNode.Parse(after.Stdout)!["traffic"]!["actions"]!.AsArray());
    }

    [Fact]
    public async Task An_idempotency_key_sent_to_two_relays_injects_once_and_the_second_relay_answers_with_the_first_answer()
    {
        await using var redis = await TestRedis.StartAsync();
        await using var sink = new TestSmtpSink();
        using var dir = new TempDir("nativerelay-cluster-e2e");
        string tokens = dir.File("tokens");
        var add = await RelayProcess.RunToExitAsync(["token", "add", "app", "--file", tokens], dir.Path, log);
        Assert.True(add.ExitCode == 0, add.Output);
        string token = Assert.Single(add.StdoutLines, l => l.Length > 0);

        async Task<(RelayProcess Relay, int HttpPort)> StartAsync(string node)
        {
            int smtp = FreePort.Get(), http = FreePort.Get();
            var config = new JsonObject
            {
                ["hostname"] = $"{node}.relay.test",
                ["listen"] = new JsonArray($"127.0.0.1:{smtp}"),
                ["spool"] = dir.File($"spool-{node}"),
                ["relayTo"] = sink.Endpoint,
                ["http"] = new JsonObject { ["listen"] = $"127.0.0.1:{http}", ["tokensFile"] = tokens },
            };
            string path = dir.File($"{node}.json");
            File.WriteAllText(path, config.ToJsonString());
            var relay = await RelayProcess.StartServeAsync(["--config", path, "--redis", redis.ConnectionString, "--node", node], smtp, dir.Path, log);
            await relay.WaitForOutputAsync("http API on", Waits.Exit);
            return (relay, http);
        }

        var (one, oneHttp) = await StartAsync("one");
        using var oneProcess = one;
        var (two, twoHttp) = await StartAsync("two");
        using var twoProcess = two;
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        async Task<(HttpStatusCode Status, string Body, bool Replayed)> PostAsync(int port)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, $"http://127.0.0.1:{port}/api/v1/messages")
            {
                Content = new StringContent("""{"from":"a@example.test","recipients":[{"email":"x@example.org"}],"subject":"s","text":"t","idempotency_key":"order-7"}""",
                    Encoding.UTF8, "application/json"),
            };
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            using var response = await client.SendAsync(request);
            string body = await response.Content.ReadAsStringAsync();
            log.WriteLine($"{port}: {(int)response.StatusCode} {body}");
            return (response.StatusCode, body, response.Headers.Contains("Idempotent-Replayed"));
        }

        var first = await PostAsync(oneHttp);
        Assert.Equal(HttpStatusCode.Accepted, first.Status);
        Assert.False(first.Replayed);
        var second = await PostAsync(twoHttp);
        Assert.Equal(HttpStatusCode.Accepted, second.Status);
        Assert.True(second.Replayed);
        Assert.Equal(first.Body, second.Body); // relay one's queue id, given by relay two
        await sink.WaitForCountAsync(1, Waits.Delivery);
        string queueId = (string)JsonNode.Parse(first.Body)!["accepted"]![0]!["queue_id"]!;
        await one.WaitForOutputAsync($"{queueId}: queued from=", Waits.Exit);
        // Relay two queued nothing (a replayed answer returns before the message is built).
        Assert.DoesNotContain(two.StdoutLines, l => l.Contains(": queued from=", StringComparison.Ordinal));
        Assert.Single(sink.Messages);
    }

    [Fact]
    public async Task A_recipient_suppressed_with_the_cli_on_one_relay_is_refused_at_rcpt_by_the_other_and_a_removal_lifts_it()
    {
        await using var redis = await TestRedis.StartAsync();
        await using var dns = new TestDnsServer();
        dns.Mx("dest.test", (10, "mx.dest.test")).A("mx.dest.test", "127.0.0.2");
        await using var peers = PeerGroup.Start("127.0.0.2");
        await using var one = await MxRelay.StartAsync(log, dns, peers.Port, extraFlags: ["--redis", redis.ConnectionString, "--node", "one"]);
        await using var two = await MxRelay.StartAsync(log, dns, peers.Port, extraFlags: ["--redis", redis.ConnectionString, "--node", "two"]);
        Assert.StartsWith("250", await RcptAsync(two, "complainer@dest.test"));

        var add = await CliRun.RunAsync(["suppress", "add", "Complainer@dest.test", "--reason", "complained", "--spool", one.Dir.Spool], [], one.Dir.Path, log);
        Assert.True(add.ExitCode == 0, add.ToString());
        var deadline = DateTime.UtcNow.AddSeconds(10);
        string reply;
        while (!(reply = await RcptAsync(two, "complainer@dest.test")).StartsWith("550 5.7.1", StringComparison.Ordinal) && DateTime.UtcNow < deadline)
            await Task.Delay(100);
        Assert.StartsWith("550 5.7.1", reply);
        Assert.StartsWith("250", await RcptAsync(two, "someone-else@dest.test"));
        var listed = await CliRun.RunAsync(["suppress", "list", "--spool", two.Dir.Spool], [], two.Dir.Path, log);
        Assert.Contains("complainer@dest.test", listed.Stdout);
        Assert.Contains("complained", listed.Stdout);

        // Removed through the other relay: relay one takes the recipient again.
        var remove = await CliRun.RunAsync(["suppress", "remove", "complainer@dest.test", "--spool", two.Dir.Spool], [], two.Dir.Path, log);
        Assert.True(remove.ExitCode == 0, remove.ToString());
        deadline = DateTime.UtcNow.AddSeconds(10);
        while (!(reply = await RcptAsync(one, "complainer@dest.test")).StartsWith("250", StringComparison.Ordinal) && DateTime.UtcNow < deadline)
            await Task.Delay(100);
        Assert.StartsWith("250", reply);
    }
}
