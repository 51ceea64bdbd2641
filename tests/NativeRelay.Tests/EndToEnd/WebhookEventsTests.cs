using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// Events and webhooks against the published binary: a webhook receiver run by the test (an
/// HttpListener that checks every signature with its own HMAC), a test SMTP sink as the next hop.
/// Events arrive in order and signed; a receiver that is down, then back, gets every event; a
/// relay killed with SIGKILL and started again loses none (duplicates share their id); filters;
/// the backlog bound drops the oldest with a metric and a warning while mail flows on.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class WebhookEventsTests(ITestOutputHelper log)
{
    private const string Secret = "whsec_e2e_0123456789";
    private const string Sender = "sender@example.test";
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(60);

    private static string SecretFile(TempDir dir)
    {
        string path = dir.File("webhook.secret");
        File.WriteAllText(path, Secret + "\n");
        return path;
    }

    /// <summary>A config file with the webhooks given (each a JSON object), relaying to the sink.</summary>
    private static string WriteConfig(TempDir dir, int port, string relayTo, int metricsPort, params JsonObject[] webhooks)
    {
        var root = new JsonObject
        {
            ["hostname"] = "relay.test",
            ["listen"] = new JsonArray($"127.0.0.1:{port}"),
            ["spool"] = dir.Spool,
            ["relayTo"] = relayTo,
            ["delivery"] = new JsonObject { ["retryInitialSeconds"] = 1, ["retryMaxSeconds"] = 2 },
            ["metrics"] = new JsonObject { ["listen"] = $"127.0.0.1:{metricsPort}" },
            ["events"] = new JsonObject { ["webhooks"] = new JsonArray(webhooks.Select(w => (JsonNode)w).ToArray()) },
        };
        string path = dir.File("relay.json");
        File.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
        return path;
    }

    private static JsonObject Hook(string name, WebhookReceiver receiver, string secretFile) => new()
    {
        ["name"] = name, ["url"] = receiver.Url, ["secretFile"] = secretFile,
        ["batchMilliseconds"] = 100, ["maxRetrySeconds"] = 1,
    };

    private static async Task<PrometheusText> ScrapeAsync(int metricsPort)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        return PrometheusText.Parse(await http.GetStringAsync($"http://127.0.0.1:{metricsPort}/metrics"));
    }

    private static double Sample(PrometheusText p, string series) => p.Samples.TryGetValue(series, out var v) ? v : 0;

    private static async Task WaitUntilAsync(Func<Task<bool>> condition, string what, Func<string> describe)
    {
        var deadline = DateTime.UtcNow + Wait;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
                throw new Xunit.Sdk.XunitException($"{what}: not within {Wait.TotalSeconds:0} s\n{describe()}");
            await Task.Delay(100);
        }
    }

    private static IEnumerable<JsonElement> Of(IEnumerable<JsonElement> events, string type, string queueId) =>
        events.Where(e => e.Type() == type && e.Str("queue_id") == queueId);

    [Fact]
    public async Task Events_arrive_in_order_with_valid_signatures_and_every_field_the_relay_knows()
    {
        using var dir = new TempDir();
        await using var sink = new TestSmtpSink();
        sink.RcptReply = to => to.StartsWith("bad", StringComparison.Ordinal) ? $"550 5.1.1 <{to}>: no such user" : "250 2.1.5 Ok";
        using var receiver = new WebhookReceiver(Secret).Start();
        int port = FreePort.Get();
        using var relay = await RelayProcess.StartServeAsync(
            ["--listen", $"127.0.0.1:{port}", "--spool", dir.Spool, "--hostname", "relay.test", "--relay-to", sink.Endpoint,
             "--webhook", receiver.Url, "--webhook-secret-file", SecretFile(dir)], port, dir.Path, log);
        Assert.DoesNotContain(Secret, relay.Output);

        var ids = new List<string>();
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
        {
            await client.EhloAsync();
            for (int i = 0; i < 3; i++)
                ids.Add(await client.SendAcceptedAsync(Sender, [$"good{i}@example.org", $"bad{i}@example.org"], MessageText.Simple($"ev-{i}@client.test")));
        }
        // Per message: 2 receptions, a delivery, a bounce, the DSN; the DSNs themselves are delivered too.
        var events = await receiver.WaitForAsync(
            e => ids.All(id => Of(e, "reception", id).Count() == 2 && Of(e, "delivery", id).Any() && Of(e, "bounce", id).Any() && Of(e, "dsn_sent", id).Any()),
            Wait, "reception, delivery, bounce and dsn_sent of every message");

        Assert.All(receiver.Posts, p => Assert.True(p.SignatureValid, $"signature {p.Signature} does not verify"));
        Assert.All(receiver.Posts, p => Assert.InRange(p.Timestamp, DateTimeOffset.UtcNow.AddMinutes(-5).ToUnixTimeSeconds(), DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 5));
        // In order: event ids grow with the journal's sequence, and none repeats.
        var eventIds = events.Select(e => e.Id()).ToList();
        Assert.Equal(eventIds.Distinct().Count(), eventIds.Count);
        Assert.Equal(eventIds.Order(StringComparer.Ordinal), eventIds);
        for (int i = 0; i < 3; i++)
        {
            string id = ids[i];
            var reception = Of(events, "reception", id).ToList();
            Assert.Equal([$"good{i}@example.org", $"bad{i}@example.org"], reception.Select(e => e.Str("recipient")));
            Assert.All(reception, e => Assert.Equal($"<ev-{i}@client.test>", e.Str("message_id")));
            Assert.All(reception, e => Assert.Equal(Sender, e.Str("sender")));
            var delivery = Of(events, "delivery", id).Single();
            Assert.Equal($"good{i}@example.org", delivery.Str("recipient"));
            Assert.StartsWith("250", delivery.Str("reply"));
            Assert.Equal($"<ev-{i}@client.test>", delivery.Str("message_id"));
            Assert.Equal(1, delivery.GetProperty("attempt").GetInt32());
            Assert.Equal("127.0.0.1", delivery.Str("host"));
            var bounce = Of(events, "bounce", id).Single();
            Assert.Equal($"bad{i}@example.org", bounce.Str("recipient"));
            Assert.StartsWith("550 5.1.1", bounce.Str("reply"));
            var dsn = Of(events, "dsn_sent", id).Single();
            Assert.Matches("^[0-9A-F]{16}$", dsn.Str("dsn_queue_id"));
            int at(JsonElement e) => eventIds.IndexOf(e.Id());
            Assert.True(reception.Max(at) < at(delivery) && reception.Max(at) < at(bounce) && at(bounce) < at(dsn), "events of a message out of order");
            Assert.All(events.Where(e => e.Str("queue_id") == id), e => Assert.Matches(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", e.Str("time")));
        }
        // The journal lives in the spool; a cursor per webhook.
        Assert.Single(Directory.GetFiles(Path.Combine(dir.Spool, "events"), "cursor.*"), f => !f.EndsWith(".tmp"));
        Assert.DoesNotContain(Secret, relay.Output);
    }

    [Fact]
    public async Task Transient_failures_expiry_and_admin_actions_are_events()
    {
        using var dir = new TempDir();
        await using var sink = new TestSmtpSink();
        sink.RcptReply = to => to.StartsWith("later", StringComparison.Ordinal) ? "451 4.2.1 try again later" : "250 2.1.5 Ok";
        using var receiver = new WebhookReceiver(Secret).Start();
        int port = FreePort.Get(), metricsPort = FreePort.Get();
        string config = WriteConfig(dir, port, sink.Endpoint, metricsPort, Hook("ops", receiver, SecretFile(dir)));
        // A message gives up after 3.6 seconds in the queue.
        var root = JsonNode.Parse(File.ReadAllText(config))!;
        root["delivery"]!["maxLifetimeHours"] = 0.001;
        File.WriteAllText(config, root.ToJsonString());
        using var relay = await RelayProcess.StartServeAsync(["--config", config], port, dir.Path, log);

        string expiring, held;
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
        {
            await client.EhloAsync();
            held = await client.SendAcceptedAsync(Sender, ["later-held@example.org"], MessageText.Simple("held@client.test"));
            expiring = await client.SendAcceptedAsync(Sender, ["later@example.org"], MessageText.Simple("expiring@client.test"));
        }
        async Task<CliResult> Queue(params string[] args) => await CliRun.RunAsync(new[] { "queue" }.Concat(args).Append("--spool").Append(dir.Spool), [], dir.Path, log);
        Assert.Contains("1 message(s) held", (await Queue("hold", held)).Stdout);

        var events = await receiver.WaitForAsync(e => Of(e, "expiry", expiring).Any() && Of(e, "dsn_sent", expiring).Any() && Of(e, "admin_action", held).Any(),
            Wait, "expiry, its DSN and the hold");
        var transient = Of(events, "transient_failure", expiring).First();
        Assert.Equal("later@example.org", transient.Str("recipient"));
        Assert.StartsWith("451 4.2.1", transient.Str("reply"));
        Assert.Equal("<expiring@client.test>", transient.Str("message_id"));
        var expiry = Of(events, "expiry", expiring).Single();
        Assert.Equal("later@example.org", expiry.Str("recipient"));
        Assert.StartsWith("451", expiry.Str("reply"));
        Assert.Equal("held", Of(events, "admin_action", held).Single().Str("action"));

        Assert.Contains("1 message(s) returned to sender", (await Queue("bounce", held)).Stdout);
        events = await receiver.WaitForAsync(e => Of(e, "admin_action", held).Any(x => x.Str("action") == "returned") && Of(e, "dsn_sent", held).Any(),
            Wait, "the return to the sender");
        var returned = Of(events, "admin_action", held).Single(x => x.Str("action") == "returned");
        Assert.Equal("later-held@example.org", returned.Str("recipient"));
        Assert.Equal(Of(events, "dsn_sent", held).Single().Str("dsn_queue_id"), returned.Str("dsn_queue_id"));
        Assert.DoesNotContain(events, e => e.Type() == "expiry" && e.Str("queue_id") == held);
    }

    [Fact]
    public async Task A_message_from_the_maildrop_has_its_reception_and_delivery_events()
    {
        using var dir = new TempDir();
        await using var sink = new TestSmtpSink();
        using var receiver = new WebhookReceiver(Secret).Start();
        int port = FreePort.Get();
        string config = WriteConfig(dir, port, sink.Endpoint, FreePort.Get(), Hook("drop", receiver, SecretFile(dir)));
        // Nothing listens yet: sendmail leaves the message in the spool's maildrop.
        var result = await CliRun.RunAsync(["sendmail", "--config", config, "-f", "cron@app.test", "ops@example.test"],
            CliRun.Latin1("Subject: nightly\nMessage-ID: <drop-1@app.test>\n\nall good\n"), dir.Path, log);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Single(Directory.GetFiles(Path.Combine(dir.Spool, "maildrop")));

        using var relay = await RelayProcess.StartServeAsync(["--config", config], port, dir.Path, log);
        var events = await receiver.WaitForAsync(e => e.Any(x => x.Type() == "reception") && e.Any(x => x.Type() == "delivery"),
            Wait, "the maildrop message's reception and delivery");
        var reception = events.Single(e => e.Type() == "reception");
        Assert.Equal("ops@example.test", reception.Str("recipient"));
        Assert.Equal("cron@app.test", reception.Str("sender"));
        Assert.Equal("<drop-1@app.test>", reception.Str("message_id"));
        Assert.Equal(reception.Str("queue_id"), events.Single(e => e.Type() == "delivery").Str("queue_id"));
    }

    [Fact]
    public async Task A_webhook_without_a_readable_secret_is_refused_in_one_line_and_check_config_describes_webhooks()
    {
        using var dir = new TempDir();
        int port = FreePort.Get();
        var noSecret = await RelayProcess.RunToExitAsync(
            ["serve", "--listen", $"127.0.0.1:{port}", "--spool", dir.Spool, "--webhook", "http://127.0.0.1:9/hook"], dir.Path, log);
        Assert.NotEqual(0, noSecret.ExitCode);
        Assert.Contains("--webhook-secret-file", noSecret.Output);
        var missing = await RelayProcess.RunToExitAsync(
            ["serve", "--listen", $"127.0.0.1:{port}", "--spool", dir.Spool, "--webhook", "http://127.0.0.1:9/hook",
             "--webhook-secret-file", dir.File("nope.secret")], dir.Path, log);
        Assert.NotEqual(0, missing.ExitCode);
        Assert.Contains("nope.secret", missing.Output);

        using var receiver = new WebhookReceiver(Secret);
        var hook = Hook("crm", receiver, SecretFile(dir));
        hook["types"] = new JsonArray("bounce", "delivery");
        string config = WriteConfig(dir, port, "127.0.0.1:9", FreePort.Get(), hook);
        var check = await RelayProcess.RunToExitAsync(["check-config", config], dir.Path, log);
        Assert.Equal(0, check.ExitCode);
        Assert.Contains($"crm: POST to {receiver.Url} signed with the secret in {dir.File("webhook.secret")}; delivery, bounce", check.Output);
        Assert.DoesNotContain(Secret, check.Output);
    }

    [Fact]
    public async Task A_receiver_down_for_a_while_gets_every_event_once_it_is_back()
    {
        using var dir = new TempDir();
        await using var sink = new TestSmtpSink();
        using var receiver = new WebhookReceiver(Secret); // not started: connections refused
        int port = FreePort.Get(), metricsPort = FreePort.Get();
        string config = WriteConfig(dir, port, sink.Endpoint, metricsPort, Hook("crm", receiver, SecretFile(dir)));
        using var relay = await RelayProcess.StartServeAsync(["--config", config], port, dir.Path, log);

        var ids = new List<string>();
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
        {
            await client.EhloAsync();
            for (int i = 0; i < 10; i++)
                ids.Add(await client.SendAcceptedAsync(Sender, [$"user{i}@example.org"], MessageText.Simple($"down-{i}@client.test")));
        }
        // Mail flows while the webhook is down, and the relay has been refused a few times.
        await sink.WaitForMessageAsync(m => m.Data.Length > 0 && Encoding.Latin1.GetString(m.Data).Contains("down-9@client.test"), Wait, "the last message");
        await WaitUntilAsync(async () => Sample(await ScrapeAsync(metricsPort), "nativerelay_webhook_posts_failed_total{webhook=\"crm\"}") >= 3,
            "three failed POSTs", relay.Describe);
        Assert.True(Sample(await ScrapeAsync(metricsPort), "nativerelay_webhook_backlog_events{webhook=\"crm\"}") >= 20);

        receiver.Start();
        var events = await receiver.WaitForAsync(e => ids.All(id => Of(e, "reception", id).Any() && Of(e, "delivery", id).Any()),
            Wait, "every reception and delivery after the receiver came back");
        Assert.All(receiver.Posts, p => Assert.True(p.SignatureValid));
        Assert.Equal(events.Select(e => e.Id()).Order(StringComparer.Ordinal), events.Select(e => e.Id()));
        await WaitUntilAsync(async () => Sample(await ScrapeAsync(metricsPort), "nativerelay_webhook_backlog_events{webhook=\"crm\"}") == 0,
            "an empty backlog", relay.Describe);
        Assert.True(Sample(await ScrapeAsync(metricsPort), "nativerelay_webhook_events_sent_total{webhook=\"crm\"}") >= 20);
        await relay.WaitForOutputAsync("webhook crm: delivering again after", Wait);
    }

    [Fact]
    public async Task A_relay_killed_with_sigkill_mid_way_loses_no_event_after_its_restart()
    {
        using var dir = new TempDir();
        await using var sink = new TestSmtpSink();
        using var receiver = new WebhookReceiver(Secret).Start();
        int port = FreePort.Get(), metricsPort = FreePort.Get();
        string config = WriteConfig(dir, port, sink.Endpoint, metricsPort, Hook("crash", receiver, SecretFile(dir)));
        var relay = await RelayProcess.StartServeAsync(["--config", config], port, dir.Path, log);
        var acknowledged = new List<string>();
        try
        {
            // Sessions keep sending until the kill cuts them off; every 250 is an acknowledged message.
            using var stop = new CancellationTokenSource();
            var senders = Enumerable.Range(0, 3).Select(s => Task.Run(async () =>
            {
                try
                {
                    await using var client = await TestSmtpClient.ConnectAndGreetAsync(port);
                    await client.EhloAsync();
                    for (int i = 0; i < 200 && !stop.IsCancellationRequested; i++)
                    {
                        var reply = await client.SendMessageAsync(Sender, [$"u{s}-{i}@example.org"], MessageText.Simple($"kill-{s}-{i}@client.test"));
                        if (reply.Code == 250)
                            lock (acknowledged)
                                acknowledged.Add(reply.LastWord);
                    }
                }
                catch (Exception e) when (e is IOException or SocketException or Xunit.Sdk.XunitException or TimeoutException or InvalidOperationException)
                {
                    // the kill
                }
            })).ToArray();
            await receiver.WaitForAsync(e => e.Count >= 40, Wait, "some events before the kill");
            relay.Kill();
            await relay.WaitForExitAsync(Waits.Exit);
            stop.Cancel();
            await Task.WhenAll(senders);
        }
        finally
        {
            relay.Dispose();
        }
        Assert.True(acknowledged.Count >= 5, $"only {acknowledged.Count} message(s) acknowledged before the kill");
        int beforeRestart = receiver.Accepted.Count;

        using var restarted = await RelayProcess.StartServeAsync(["--config", config], port, dir.Path, log);
        List<string> ids;
        lock (acknowledged)
            ids = acknowledged.ToList();
        var events = await receiver.WaitForAsync(e => ids.All(id => Of(e, "reception", id).Any() && Of(e, "delivery", id).Any()),
            Wait, $"reception and delivery of all {ids.Count} acknowledged messages");
        // Duplicates (sent before the kill, acknowledged after it) carry the same id and the same content.
        var byId = events.GroupBy(e => e.Id()).ToList();
        Assert.All(byId, g => Assert.Single(g.Select(e => e.GetRawText()).Distinct()));
        int duplicates = events.Count - byId.Count;
        log.WriteLine($"{ids.Count} acknowledged; {events.Count} events received ({beforeRestart} before the restart), {byId.Count} distinct, {duplicates} duplicate(s)");
        Assert.All(receiver.Posts, p => Assert.True(p.SignatureValid));
    }

    [Fact]
    public async Task Webhooks_get_only_the_event_types_and_pools_they_filter_for()
    {
        using var dir = new TempDir();
        await using var sink = new TestSmtpSink();
        sink.RcptReply = to => to.StartsWith("bad", StringComparison.Ordinal) ? $"550 5.1.1 <{to}>: no such user" : "250 2.1.5 Ok";
        using var all = new WebhookReceiver(Secret).Start();
        using var bounces = new WebhookReceiver(Secret).Start();
        using var otherPool = new WebhookReceiver(Secret).Start();
        using var defaultPool = new WebhookReceiver(Secret).Start();
        string secret = SecretFile(dir);
        var bounceHook = Hook("bounces", bounces, secret);
        bounceHook["types"] = new JsonArray("bounce", "expiry");
        var otherHook = Hook("other", otherPool, secret);
        otherHook["pools"] = new JsonArray("other");
        var defaultHook = Hook("default-pool", defaultPool, secret);
        defaultHook["pools"] = new JsonArray("default");
        defaultHook["types"] = new JsonArray("reception");
        int port = FreePort.Get(), metricsPort = FreePort.Get();
        string config = WriteConfig(dir, port, sink.Endpoint, metricsPort, Hook("all", all, secret), bounceHook, otherHook, defaultHook);
        using var relay = await RelayProcess.StartServeAsync(["--config", config], port, dir.Path, log);

        string id;
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
        {
            await client.EhloAsync();
            id = await client.SendAcceptedAsync(Sender, ["good@example.org", "bad@example.org"], MessageText.Simple("filter@client.test"));
        }
        await all.WaitForAsync(e => Of(e, "delivery", id).Any() && Of(e, "dsn_sent", id).Any(), Wait, "every event at the unfiltered webhook");
        // Each filtered webhook has gone past every event (its backlog is empty) before its share is checked.
        await WaitUntilAsync(async () =>
        {
            var m = await ScrapeAsync(metricsPort);
            return new[] { "all", "bounces", "other", "default-pool" }.All(n => Sample(m, $"nativerelay_webhook_backlog_events{{webhook=\"{n}\"}}") == 0);
        }, "every backlog empty", relay.Describe);
        Assert.Equal(["bounce"], bounces.Accepted.Select(e => e.Type()));
        Assert.Equal("bad@example.org", bounces.Accepted[0].Str("recipient"));
        Assert.Empty(otherPool.Accepted);
        Assert.Empty(otherPool.Posts);
        Assert.Equal(["reception", "reception"], defaultPool.Accepted.Where(e => e.Str("queue_id") == id).Select(e => e.Type()));
        Assert.Contains(all.Accepted, e => e.Type() == "delivery");
    }

    [Fact]
    public async Task Over_the_backlog_bound_the_oldest_events_are_dropped_with_a_metric_and_a_warning_and_mail_flows()
    {
        using var dir = new TempDir();
        await using var sink = new TestSmtpSink();
        using var receiver = new WebhookReceiver(Secret); // down
        var hook = Hook("bounded", receiver, SecretFile(dir));
        hook["maxBacklog"] = 5;
        int port = FreePort.Get(), metricsPort = FreePort.Get();
        string config = WriteConfig(dir, port, sink.Endpoint, metricsPort, hook);
        using var relay = await RelayProcess.StartServeAsync(["--config", config], port, dir.Path, log);

        var ids = new List<string>();
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
        {
            await client.EhloAsync();
            for (int i = 0; i < 10; i++)
                ids.Add(await client.SendAcceptedAsync(Sender, [$"user{i}@example.org"], MessageText.Simple($"bound-{i}@client.test")));
        }
        // Every message is delivered although the webhook is down and its backlog overflows.
        await WaitUntilAsync(async () => Sample(await ScrapeAsync(metricsPort), "nativerelay_delivered_total") >= 10, "10 deliveries", relay.Describe);
        await WaitUntilAsync(async () => Sample(await ScrapeAsync(metricsPort), "nativerelay_webhook_events_dropped_total{webhook=\"bounded\"}") >= 15,
            "15 of the 20 events dropped", relay.Describe);
        Assert.True(Sample(await ScrapeAsync(metricsPort), "nativerelay_webhook_backlog_events{webhook=\"bounded\"}") <= 5);
        await relay.WaitForOutputAsync("webhook bounded: backlog over maxBacklog 5: dropped the oldest", Wait);

        receiver.Start();
        var events = await receiver.WaitForAsync(e => Of(e, "delivery", ids[^1]).Any(), Wait, "the newest event");
        await WaitUntilAsync(async () => Sample(await ScrapeAsync(metricsPort), "nativerelay_webhook_backlog_events{webhook=\"bounded\"}") == 0,
            "an empty backlog", relay.Describe);
        Assert.Equal(5, receiver.Accepted.Count);
        Assert.DoesNotContain(receiver.Accepted, e => e.Str("queue_id") == ids[0]);
    }
}
