using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// Traffic control (issue 26) against the published binary: the relay binds egress sources
/// 127.0.0.2 and 127.0.0.3 (all of 127/8 is local on Linux), sinks on other 127.0.0.x addresses
/// stand for the receivers' MX hosts (found through the test DNS responder) and record each
/// message's client address, EHLO name and arrival time. Pool weights, site rollup, a site's
/// rate limit held under a backlog, the automatic suspension after a 421 4.7.28, traffic status
/// and resume, the pool header, and a source that cannot bind.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class TrafficEndToEndTests(ITestOutputHelper log)
{
    private const string Ip2 = "127.0.0.2";
    private const string Ip3 = "127.0.0.3";

    private static JsonObject Sources(params (string Name, string Address, string Ehlo)[] sources)
    {
        var o = new JsonObject();
        foreach (var (name, address, ehlo) in sources)
            o[name] = new JsonObject { ["address"] = address, ["ehlo"] = ehlo };
        return o;
    }

    private static readonly (string, string, string)[] TwoSources = [("ip2", Ip2, "mta2.traffic.test"), ("ip3", Ip3, "mta3.traffic.test")];

    private static void Traffic(JsonObject root, JsonObject traffic) => root["traffic"] = traffic;

    private static string WriteShaping(MxRelay relay, string json)
    {
        string path = relay.Dir.File("shaping.json");
        File.WriteAllText(path, json);
        return path;
    }

    /// <summary>Sends N messages to one recipient with the binary's own load tool (8 sessions, small messages).</summary>
    private async Task BlastAsync(MxRelay relay, int messages, string rcpt, int sessions = 8)
    {
        var result = await RelayProcess.RunToExitAsync(
            ["blast", "--to", $"127.0.0.1:{relay.Port}", "--messages", messages.ToString(CultureInfo.InvariantCulture),
             "--sessions", sessions.ToString(CultureInfo.InvariantCulture), "--size", "600", "--rcpt", rcpt, "--quiet"],
            relay.Dir.Path, log, TimeSpan.FromMinutes(5));
        Assert.True(result.ExitCode == 0, $"blast exited with {result.ExitCode}\n{result.Output}\n{relay.Describe()}");
    }

    [Fact]
    public async Task Pool_weights_hold_within_ten_percent_over_ten_thousand_messages_each_with_its_source_address_and_ehlo()
    {
        await using var sinks = SinkSet.Start("127.0.0.10");
        await using var dns = new TestDnsServer();
        dns.Mx("weights.test", (10, "mx.weights.test")).A("mx.weights.test", "127.0.0.10");
        await using var relay = await MxRelay.StartAsync(log, dns, sinks.Port, root => Traffic(root, new JsonObject
        {
            ["sources"] = Sources(TwoSources),
            ["pools"] = new JsonObject { ["bulk"] = new JsonObject { ["sources"] = new JsonObject { ["ip2"] = 3, ["ip3"] = 1 } } },
            ["defaultPool"] = "bulk",
        }));

        const int N = 10_000;
        await BlastAsync(relay, N, "user@weights.test");
        var sink = sinks[0];
        await sink.WaitForCountAsync(N, TimeSpan.FromMinutes(4));

        var messages = sink.Messages;
        int from2 = messages.Count(m => m.PeerAddress == Ip2);
        int from3 = messages.Count(m => m.PeerAddress == Ip3);
        log.WriteLine($"{N} messages: {from2} from {Ip2} (weight 3), {from3} from {Ip3} (weight 1)");
        Assert.Equal(N, from2 + from3);
        Assert.InRange(from2, (int)(0.75 * N * 0.9), (int)(0.75 * N * 1.1));
        Assert.InRange(from3, (int)(0.25 * N * 0.9), (int)(0.25 * N * 1.1));
        // Each source says its own name.
        Assert.All(messages, m => Assert.Equal(m.PeerAddress == Ip2 ? "mta2.traffic.test" : "mta3.traffic.test", m.HeloName));

        // The delivery log names the source and the site of every delivery.
        await relay.WaitForEventAsync(e => (string?)e["event"] == "delivered", "a delivered event");
        var delivered = relay.DeliveryLog().Where(e => (string?)e["event"] == "delivered").Take(200).ToList();
        Assert.All(delivered, e =>
        {
            Assert.Equal("mx.weights.test", (string?)e["site"]);
            Assert.Contains((string?)e["source"], new[] { "ip2", "ip3" });
        });
    }

    [Fact]
    public async Task Domains_whose_mx_is_the_same_host_share_one_sites_limits_and_a_label_rolls_up_several_mx_sets()
    {
        await using var sinks = SinkSet.Start("127.0.0.11", "127.0.0.14", "127.0.0.15");
        await using var dns = new TestDnsServer();
        dns.Mx("alpha.test", (10, "mx.shared.test")).Mx("beta.test", (5, "mx.shared.test")).A("mx.shared.test", "127.0.0.11")
           .Mx("gamma.test", (10, "mx1.provider.test")).A("mx1.provider.test", "127.0.0.14")
           .Mx("delta.test", (10, "mx2.provider.test")).A("mx2.provider.test", "127.0.0.15");
        MxRelay? relay = null;
        relay = await MxRelay.StartAsync(log, dns, sinks.Port, root =>
        {
            string shaping = Path.Combine(Path.GetDirectoryName((string)root["spool"]!)!, "shaping.json");
            File.WriteAllText(shaping, """
                {
                  // two MX sets of one provider: one site by its label
                  "sites": { "provider": { "mxSuffixes": [".provider.test"] } },
                  "rules": [
                    { "site": "mx.shared.test", "maxConnections": 1, "messagesPerSecond": 5 },
                    { "site": "provider", "maxConnections": 1, "messagesPerSecond": 5 }
                  ]
                }
                """);
            Traffic(root, new JsonObject { ["shaping"] = shaping });
        });
        await using var _ = relay;

        // 25 + 25 to the domains of one MX host, 25 + 25 to the two MX sets of the labelled provider.
        await Task.WhenAll(BlastAsync(relay, 25, "a@alpha.test", 4), BlastAsync(relay, 25, "b@beta.test", 4),
            BlastAsync(relay, 25, "c@gamma.test", 4), BlastAsync(relay, 25, "d@delta.test", 4));
        await sinks[0].WaitForCountAsync(50, TimeSpan.FromSeconds(60));
        await sinks[1].WaitUntilAsync(() => sinks[1].Messages.Count + sinks[2].Messages.Count >= 50, TimeSpan.FromSeconds(60), "50 messages over both provider hosts");

        // One host, two domains: one connection and 5 messages a second between them, not each.
        var shared = sinks[0].Messages;
        Assert.Equal(25, shared.Count(m => m.Recipients[0].EndsWith("@alpha.test", StringComparison.Ordinal)));
        Assert.Equal(25, shared.Count(m => m.Recipients[0].EndsWith("@beta.test", StringComparison.Ordinal)));
        Assert.Equal(1, sinks[0].MaxConcurrentConnections);
        AssertRate(shared.Select(m => m.ReceivedAt), 5, "alpha.test and beta.test together");

        // Two MX sets under one label: 5 a second over both hosts together.
        var provider = sinks[1].Messages.Concat(sinks[2].Messages).ToList();
        Assert.Equal(25, sinks[1].Messages.Count);
        Assert.Equal(25, sinks[2].Messages.Count);
        AssertRate(provider.Select(m => m.ReceivedAt), 5, "gamma.test and delta.test (site provider) together");

        var sites = relay.DeliveryLog().Where(e => (string?)e["event"] == "delivered")
            .GroupBy(e => ((string)e["rcpt"]!).Split('@')[1]).ToDictionary(g => g.Key, g => g.Select(e => (string?)e["site"]).Distinct().Single());
        Assert.Equal("mx.shared.test", sites["alpha.test"]);
        Assert.Equal("mx.shared.test", sites["beta.test"]);
        Assert.Equal("provider", sites["gamma.test"]);
        Assert.Equal("provider", sites["delta.test"]);
    }

    /// <summary>
    /// The arrivals' rate, first to last, is at most 10 % over the expected one (the limit's
    /// promise) and at most 20 % under it (the limit is not stricter than set; a loaded 2-core
    /// machine delivers late: 4.49/s at a 5/s limit was seen once).
    /// </summary>
    private void AssertRate(IEnumerable<DateTime> arrivals, double expected, string what)
    {
        var times = arrivals.OrderBy(t => t).ToList();
        log.WriteLine(string.Join(" ", times.Select(t => (t - times[0]).TotalMilliseconds.ToString("0"))));
        double seconds = (times[^1] - times[0]).TotalSeconds;
        double rate = (times.Count - 1) / seconds;
        log.WriteLine($"{what}: {times.Count} arrivals over {seconds:0.00} s = {rate:0.00}/s (limit {expected}/s)");
        Assert.InRange(rate, expected * 0.8, expected * 1.1);
    }

    [Fact]
    public async Task A_sites_rate_is_held_within_ten_percent_while_there_is_a_backlog()
    {
        // 20 messages a second with 1,300 queued (65 s of backlog); the rate is read from the sink's
        // arrival times over a minute, as the issue asks (NATIVERELAY_RATE_WINDOW_SECONDS=30 for a
        // quicker look), and over each 10 s of it.
        const double N = 20;
        int window = int.TryParse(Environment.GetEnvironmentVariable("NATIVERELAY_RATE_WINDOW_SECONDS"), out int w) ? w : 60;
        int backlog = (int)(N * (window + 5));
        await using var sinks = SinkSet.Start("127.0.0.16");
        await using var dns = new TestDnsServer();
        dns.Mx("rate.test", (10, "mx.rate.test")).A("mx.rate.test", "127.0.0.16");
        await using var relay = await MxRelay.StartAsync(log, dns, sinks.Port, root =>
        {
            string shaping = Path.Combine(Path.GetDirectoryName((string)root["spool"]!)!, "shaping.json");
            File.WriteAllText(shaping, """{ "rules": [ { "site": "mx.rate.test", "messagesPerSecond": 20 } ] }""");
            Traffic(root, new JsonObject { ["shaping"] = shaping });
        });

        await BlastAsync(relay, backlog, "user@rate.test");
        var sink = sinks[0];
        // The window starts at the 20th arrival (the backlog is queued by then) and runs `window` seconds.
        await sink.WaitForCountAsync(20, TimeSpan.FromSeconds(30));
        var start = sink.Messages.OrderBy(m => m.ReceivedAt).ElementAt(19).ReceivedAt;
        var end = start.AddSeconds(window);
        while (DateTime.UtcNow < end.AddSeconds(1))
            await Task.Delay(250);
        var arrivals = sink.Messages.Select(m => m.ReceivedAt).Where(t => t >= start && t < end).OrderBy(t => t).ToList();
        Assert.True(sink.Messages.Count < backlog, $"the backlog ran out before the window closed ({sink.Messages.Count} of {backlog})");

        var logged = relay.DeliveryLog().Where(e => (string?)e["event"] == "delivered")
            .Select(e => DateTime.Parse((string)e["time"]!, CultureInfo.InvariantCulture, DateTimeStyles.AdjustToUniversal | DateTimeStyles.AssumeUniversal))
            .Where(t => t >= start && t < end).Count();
        log.WriteLine($"relay's delivery log: {logged} delivered in the window");
        double rate = arrivals.Count / (double)window;
        log.WriteLine($"{arrivals.Count} arrivals in {window} s: {rate:0.00}/s (limit {N}/s); backlog left {backlog - sink.Messages.Count}");
        Assert.InRange(rate, N * 0.9, N * 1.1);
        // And within every 10 s of it (a 5 s slice can dip 8 % and catch up in the next on a loaded host).
        for (int slice = 0; slice + 10 <= window; slice += 10)
        {
            int n = arrivals.Count(t => t >= start.AddSeconds(slice) && t < start.AddSeconds(slice + 10));
            log.WriteLine($"  {slice,2}-{slice + 10,2} s: {n} ({n / 10.0:0.0}/s)");
            Assert.InRange(n / 10.0, N * 0.9, N * 1.1);
        }
    }

    private const string Rate4728 = "421 4.7.28 [127.0.0.2] Our system has detected an unusual rate of unsolicited mail originating from your IP address. gsmtp";

    /// <summary>Two sites (mx.a.test on .12, mx.b.test on .13), sources ip2 and ip3 in equal weights, a 421 4.7.28 rule of the given duration.</summary>
    private async Task<(SinkSet Sinks, TestDnsServer Dns, MxRelay Relay)> SuspensionWorldAsync(string duration)
    {
        var sinks = SinkSet.Start("127.0.0.12", "127.0.0.13");
        var dns = new TestDnsServer();
        dns.Mx("a.test", (10, "mx.a.test")).A("mx.a.test", "127.0.0.12")
           .Mx("b.test", (10, "mx.b.test")).A("mx.b.test", "127.0.0.13");
        // Site A answers the first message from 127.0.0.2 with Gmail's rate limit.
        int refused = 0;
        sinks[0].DataReply = attempt => attempt.PeerAddress == Ip2 && Interlocked.Exchange(ref refused, 1) == 0 ? Rate4728 : "250 2.0.0 Ok";
        var relay = await MxRelay.StartAsync(log, dns, sinks.Port, root =>
        {
            string shaping = Path.Combine(Path.GetDirectoryName((string)root["spool"]!)!, "shaping.json");
            File.WriteAllText(shaping, $$"""
                { "automation": [ { "name": "gmail-rate-limited", "code": 421, "enhanced": "4.7.28", "action": "suspend", "duration": "{{duration}}" } ] }
                """);
            Traffic(root, new JsonObject { ["sources"] = Sources(TwoSources), ["shaping"] = shaping });
        });
        return (sinks, dns, relay);
    }

    private async Task SendAsync(MxRelay relay, string rcpt, int count, string tag)
    {
        for (int i = 0; i < count; i++)
            await relay.SendAsync("sender@origin.test", [rcpt], MessageText.Simple($"{tag}-{i}@traffic.test"));
    }

    [Fact]
    public async Task A_421_4_7_28_suspends_that_source_to_that_site_for_the_configured_time_and_no_other_path()
    {
        var (sinks, dns, relay) = await SuspensionWorldAsync("15s");
        await using var _s = sinks;
        await using var _d = dns;
        await using var _r = relay;
        var siteA = sinks[0];
        var siteB = sinks[1];

        // Until ip2 has tried site A once (the weights alternate the sources).
        await SendAsync(relay, "user@a.test", 4, "first");
        await relay.Process.WaitForOutputAsync("traffic: suspend on source ip2 to site mx.a.test for 15s", Waits.Delivery);
        var suspended = DateTime.UtcNow;
        var status = await StatusAsync(relay);
        var action = Assert.Single(status["actions"]!.AsArray());
        Assert.Equal("ip2", (string?)action!["source"]);
        Assert.Equal("mx.a.test", (string?)action["site"]);
        Assert.Equal("suspend", (string?)action["action"]);
        Assert.Equal(15_000, (long)action["untilUnixMs"]! - (long)action["startedUnixMs"]!);

        // While it holds: mail for site A leaves from ip3 only; site B still gets mail from both.
        await SendAsync(relay, "user@a.test", 10, "during");
        await SendAsync(relay, "user@b.test", 10, "during");
        await siteA.WaitUntilAsync(() => siteA.Messages.Count(m => m.Header("Message-ID")!.StartsWith("<during", StringComparison.Ordinal)) == 10,
            Waits.Delivery, "the 10 messages sent during the suspension");
        await siteB.WaitForCountAsync(10, Waits.Delivery);
        var window = (From: suspended.AddSeconds(0.5), To: suspended.AddSeconds(14));
        Assert.True(DateTime.UtcNow < window.To, "the messages sent during the suspension took too long to test it");
        Assert.DoesNotContain(siteA.Messages, m => m.PeerAddress == Ip2 && m.ReceivedAt > window.From);
        Assert.DoesNotContain(siteA.ConnectionsFrom, c => c.Peer == Ip2 && c.At > window.From);
        Assert.All(siteA.Messages.Where(m => m.ReceivedAt > window.From), m => Assert.Equal(Ip3, m.PeerAddress));
        Assert.Contains(siteB.Messages, m => m.PeerAddress == Ip2);
        Assert.Contains(siteB.Messages, m => m.PeerAddress == Ip3);
        // The refused message itself was deferred, not lost: it arrives (from ip3) on its retry.
        await siteA.WaitUntilAsync(() => siteA.Messages.Count(m => m.Header("Message-ID")!.StartsWith("<first", StringComparison.Ordinal)) == 4,
            Waits.Delivery, "the refused message on its retry");
        Assert.Equal(Ip3, siteA.Messages.Last(m => m.Header("Message-ID")!.StartsWith("<first", StringComparison.Ordinal)).PeerAddress);

        // It lapses by itself after the configured time, and ip2 sends to site A again.
        await relay.Process.WaitForOutputAsync("traffic: suspend on source ip2 to site mx.a.test lapsed", TimeSpan.FromSeconds(30));
        Assert.InRange((DateTime.UtcNow - suspended).TotalSeconds, 14, 25);
        Assert.Empty((await StatusAsync(relay))["actions"]!.AsArray());
        await SendAsync(relay, "user@a.test", 6, "after");
        await siteA.WaitUntilAsync(() => siteA.Messages.Any(m => m.PeerAddress == Ip2 && m.Header("Message-ID")!.StartsWith("<after", StringComparison.Ordinal)),
            Waits.Delivery, "a message from ip2 after the suspension lapsed");
    }

    [Fact]
    public async Task Traffic_status_shows_a_suspension_and_traffic_resume_lifts_it()
    {
        var (sinks, dns, relay) = await SuspensionWorldAsync("10m");
        await using var _s = sinks;
        await using var _d = dns;
        await using var _r = relay;
        var siteA = sinks[0];

        await SendAsync(relay, "user@a.test", 4, "first");
        await relay.Process.WaitForOutputAsync("traffic: suspend on source ip2 to site mx.a.test", Waits.Delivery);

        var text = await CliRun.RunAsync(["traffic", "status", "--spool", relay.Dir.Spool], [], relay.Dir.Path, log);
        Assert.True(text.ExitCode == 0, text.ToString());
        var line = Assert.Single(text.Stdout.Split('\n'), l => l.TrimStart().StartsWith("suspend ", StringComparison.Ordinal));
        Assert.Contains("ip2", line);
        Assert.Contains("mx.a.test", line);
        Assert.Contains("gmail-rate-limited", line);
        Assert.Contains("4.7.28", line);
        Assert.Contains(text.Stdout.Split('\n'), l => l.StartsWith("source   ip2: 127.0.0.2, EHLO mta2.traffic.test", StringComparison.Ordinal));

        // Nothing to lift on another site, or from the other source: exit 1.
        var none = await CliRun.RunAsync(["traffic", "resume", "--site", "mx.b.test", "--spool", relay.Dir.Spool], [], relay.Dir.Path, log);
        Assert.True(none.ExitCode == 1, none.ToString());
        none = await CliRun.RunAsync(["traffic", "resume", "--site", "mx.a.test", "--source", "ip3", "--spool", relay.Dir.Spool], [], relay.Dir.Path, log);
        Assert.True(none.ExitCode == 1, none.ToString());

        var resume = await CliRun.RunAsync(["traffic", "resume", "--site", "mx.a.test", "--source", "ip2", "--spool", relay.Dir.Spool], [], relay.Dir.Path, log);
        Assert.True(resume.ExitCode == 0, resume.ToString());
        Assert.Contains("1 action(s) lifted on site mx.a.test from source ip2", resume.Stdout);
        Assert.Empty((await StatusAsync(relay))["actions"]!.AsArray());
        await relay.Process.WaitForOutputAsync("traffic: suspend on source ip2 to site mx.a.test lifted by the administrator", Waits.Delivery);

        // Long before the ten minutes: ip2 sends to site A again.
        await SendAsync(relay, "user@a.test", 6, "resumed");
        await siteA.WaitUntilAsync(() => siteA.Messages.Any(m => m.PeerAddress == Ip2 && m.Header("Message-ID")!.StartsWith("<resumed", StringComparison.Ordinal)),
            Waits.Delivery, "a message from ip2 after resume");

        // Without a running relay: exit 3, as queue.
        using var empty = new TempDir();
        var noRelay = await CliRun.RunAsync(["traffic", "status", "--spool", empty.Path], [], empty.Path, log);
        Assert.True(noRelay.ExitCode == 3, noRelay.ToString());
    }

    private async Task<JsonObject> StatusAsync(MxRelay relay)
    {
        var result = await CliRun.RunAsync(["traffic", "status", "--json", "--spool", relay.Dir.Spool], [], relay.Dir.Path, log);
        Assert.True(result.ExitCode == 0, result.ToString());
        return (JsonNode.Parse(result.Stdout)!["traffic"] as JsonObject)!;
    }

    [Fact]
    public async Task A_pool_header_picks_the_pool_and_is_removed_before_sending()
    {
        await using var sinks = SinkSet.Start("127.0.0.17");
        await using var dns = new TestDnsServer();
        dns.Mx("pools.test", (10, "mx.pools.test")).A("mx.pools.test", "127.0.0.17");
        await using var relay = await MxRelay.StartAsync(log, dns, sinks.Port, root => Traffic(root, new JsonObject
        {
            ["sources"] = Sources(TwoSources),
            ["pools"] = new JsonObject
            {
                ["transactional"] = new JsonObject { ["sources"] = new JsonObject { ["ip2"] = 1 } },
                ["bulk"] = new JsonObject { ["sources"] = new JsonObject { ["ip3"] = 1 } },
            },
            ["defaultPool"] = "transactional",
            ["poolRules"] = new JsonArray(new JsonObject { ["header"] = "X-Pool" }),
        }));

        for (int i = 0; i < 3; i++)
        {
            await relay.SendAsync("app@origin.test", ["user@pools.test"],
                MessageText.Build("X-Pool: bulk", $"Message-ID: <bulk-{i}@traffic.test>", "Subject: bulk", "", "body"));
            await relay.SendAsync("app@origin.test", ["user@pools.test"], MessageText.Simple($"plain-{i}@traffic.test"));
        }
        var sink = sinks[0];
        await sink.WaitForCountAsync(6, Waits.Delivery);
        foreach (var m in sink.Messages)
        {
            bool bulk = m.Header("Message-ID")!.StartsWith("<bulk", StringComparison.Ordinal);
            Assert.Equal(bulk ? Ip3 : Ip2, m.PeerAddress);
            Assert.Null(m.Header("X-Pool"));
        }
        // The log is written in batches: the line may follow the delivery by a moment.
        await relay.Process.WaitForOutputAsync(" pool=bulk", Waits.Delivery);
    }

    [Fact]
    public async Task A_source_that_cannot_bind_is_an_error_at_start_and_on_reload_naming_it()
    {
        using var dir = new TempDir();
        // 192.0.2.0/24 (TEST-NET-1) is on no host.
        var start = await CliRun.RunAsync(["serve", "--listen", $"127.0.0.1:{FreePort.Get()}", "--spool", dir.Spool,
            "--relay-to", "127.0.0.1:9", "--source", "good=127.0.0.2", "--source", "ghost=192.0.2.77/mta.traffic.test"], [], dir.Path, log);
        Assert.True(start.ExitCode == 2, start.ToString());
        var error = Assert.Single(start.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("traffic.sources.ghost: cannot bind 192.0.2.77", error);

        // Running with a good source, a reload that adds one that cannot bind is refused and names it.
        await using var sinks = SinkSet.Start("127.0.0.18");
        await using var dns = new TestDnsServer();
        dns.Mx("reload.test", (10, "mx.reload.test")).A("mx.reload.test", "127.0.0.18");
        string? configPath = null;
        JsonObject? config = null;
        await using var relay = await MxRelay.StartAsync(log, dns, sinks.Port, root =>
        {
            Traffic(root, new JsonObject { ["sources"] = Sources(("ip2", Ip2, "mta2.traffic.test")) });
            config = root;
        });
        configPath = relay.Dir.File("relay.json");
        config!["traffic"]!["sources"]!["ghost"] = new JsonObject { ["address"] = "192.0.2.78" };
        File.WriteAllText(configPath, config.ToJsonString());
        relay.Process.Signal(1); // SIGHUP
        await relay.Process.WaitForOutputAsync("reload refused: traffic.sources.ghost: cannot bind 192.0.2.78", Waits.Delivery);
        Assert.False(relay.Process.HasExited);

        // The running configuration stays: mail still leaves from ip2.
        await relay.SendAsync("a@origin.test", ["user@reload.test"], MessageText.Simple("after-reload@traffic.test"));
        var m = await sinks[0].WaitForMessageAsync(x => x.Header("Message-ID") == "<after-reload@traffic.test>", Waits.Delivery);
        Assert.Equal(Ip2, m.PeerAddress);
    }

    [Fact]
    public async Task Check_config_validates_the_shipped_shaping_example_and_names_a_broken_file()
    {
        using var dir = new TempDir();
        string example = Path.Combine(CliRun.RepoRoot, "docs", "examples", "shaping.json");
        string config = dir.File("relay.json");
        File.WriteAllText(config, $$"""
            { "spool": "{{dir.Spool}}", "relayTo": "127.0.0.1:9",
              "traffic": { "sources": { "ip2": { "address": "127.0.0.2", "ehlo": "mta2.traffic.test" } }, "shaping": "{{example}}" } }
            """);
        var ok = await CliRun.RunAsync(["check-config", config], [], dir.Path, log);
        Assert.True(ok.ExitCode == 0, ok.ToString());
        Assert.Contains(ok.Stdout.Split('\n'), l => l.StartsWith("site label        gmail: MX *.google.com", StringComparison.Ordinal));
        Assert.Contains(ok.Stdout.Split('\n'), l => l.StartsWith("automation", StringComparison.Ordinal) && l.Contains("4.7.28", StringComparison.Ordinal));
        Assert.Contains(ok.Stdout.Split('\n'), l => l.StartsWith("source            ip2: 127.0.0.2", StringComparison.Ordinal));

        string broken = dir.File("broken-shaping.json");
        File.WriteAllText(broken, """{ "rules": [ { "site": "gmail", "maxConections": 3 } ] }""");
        File.WriteAllText(config, $$"""{ "spool": "{{dir.Spool}}", "relayTo": "127.0.0.1:9", "traffic": { "shaping": "{{broken}}" } }""");
        var bad = await CliRun.RunAsync(["check-config", config], [], dir.Path, log);
        Assert.True(bad.ExitCode == 2, bad.ToString());
        Assert.Contains("broken-shaping.json", bad.Stderr);
        Assert.Contains("maxConections", bad.Stderr);
    }
}
