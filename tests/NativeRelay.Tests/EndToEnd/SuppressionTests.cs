using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using NativeRelay.Control;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// Bounce classes and the suppression list with the published binary: classes in the delivery log
/// and the DSN for 550 5.1.1 / 552 5.2.2 / 554 5.7.1; a 5.1.1 puts the recipient on the list and
/// the next RCPT gets 550 5.7.1; suppress add/remove/list/import through the control socket; the
/// list after kill -9; queued mail to an address suppressed meanwhile bounces. The recipients' MX
/// is a peer on 127.0.0.2, the sender's (where DSNs arrive) one on 127.0.0.4.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class SuppressionTests(ITestOutputHelper log)
{
    private const string Sender = "alice@origin.test";

    private static TestDnsServer Dns()
    {
        var dns = new TestDnsServer();
        dns.Mx("origin.test", (10, "mx.origin.test")).A("mx.origin.test", "127.0.0.4")
           .Mx("dest.test", (10, "mx.dest.test")).A("mx.dest.test", "127.0.0.2");
        return dns;
    }

    /// <summary>The three failures of the brief, by local part; everyone else is accepted.</summary>
    private static string Replies(string to) => to.Split('@')[0] switch
    {
        "nouser" => $"550 5.1.1 <{to}>: Recipient address rejected: User unknown in virtual mailbox table",
        "full" => $"552 5.2.2 <{to}>: Mailbox full",
        "blocked" => "554 5.7.1 Service unavailable; Client host [127.0.0.1] blocked using zen.spamhaus.org",
        _ => "250 2.1.5 Ok",
    };

    private Task<CliResult> Suppress(MxRelay relay, params string[] args) =>
        CliRun.RunAsync(new[] { "suppress" }.Concat(args).Concat(["--spool", relay.Dir.Spool]), [], relay.Dir.Path, log);

    private async Task<List<ControlSuppression>> ListAsync(MxRelay relay, params string[] args)
    {
        var result = await Suppress(relay, ["list", "--json", .. args]);
        Assert.True(result.ExitCode == 0, result.ToString());
        return result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonSerializer.Deserialize(l, ControlJsonContext.Default.ControlResponse)!.Suppression!)
            .ToList();
    }

    private static async Task<string> RcptAsync(MxRelay relay, string to)
    {
        await using var client = await TestSmtpClient.ConnectAndGreetAsync(relay.Port);
        await client.EhloAsync();
        await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
        var reply = await client.CommandAsync($"RCPT TO:<{to}>");
        return reply.ToString();
    }

    [Fact]
    public async Task Each_failure_gets_its_class_in_the_delivery_log_and_the_dsn()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        peers[0].RcptReply = Replies;
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        string id = await relay.SendAsync(Sender, ["nouser@dest.test", "full@dest.test", "blocked@dest.test", "fine@dest.test"],
            MessageText.Simple("classes@test", "classes"));

        var bounce = await peers[1].WaitForMessageAsync(m => m.MailFrom == "" && m.DataText.Contains("classes@test", StringComparison.Ordinal), "the DSN");
        var dsn = DsnMessage.Parse(bounce.Data);
        foreach (var (rcpt, status, cls) in new[]
                 {
                     ("nouser@dest.test", "5.1.1", "invalid-recipient"),
                     ("full@dest.test", "5.2.2", "mailbox-full"),
                     ("blocked@dest.test", "5.7.1", "policy-block"),
                 })
        {
            var r = dsn.Recipient(rcpt);
            Assert.Equal("failed", r["action"]);
            Assert.Equal(status, r["status"]);
            Assert.Equal(cls, r["x-nativerelay-bounce-class"]);
            Assert.Contains($"<{rcpt}>: delivery failed", dsn.Text);
            Assert.Contains($"(class: {cls})", dsn.Text);
            var failed = await relay.WaitForEventAsync(id, "failed", rcpt);
            Assert.Equal(cls, (string?)failed["class"]);
            Assert.Contains(status, (string?)failed["reply"]);
        }
        var delivered = await relay.WaitForEventAsync(id, "delivered", "fine@dest.test");
        Assert.Null(delivered["class"]);
        Assert.Equal(3, dsn.PerRecipient.Count);
    }

    [Fact]
    public async Task A_5_1_1_puts_the_recipient_on_the_list_and_the_next_rcpt_is_refused_with_550_5_7_1()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        peers[0].RcptReply = Replies;
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);
        Assert.StartsWith("250", await RcptAsync(relay, "nouser@dest.test"));

        string id = await relay.SendAsync(Sender, ["nouser@dest.test", "full@dest.test"], MessageText.Simple("auto@test"));
        await relay.WaitForEventAsync(id, "failed", "nouser@dest.test");
        await relay.WaitForEventAsync(id, "failed", "full@dest.test");

        // Added by the hard bounce (any case of the address); a full mailbox is not.
        Assert.StartsWith("550 5.7.1", await RcptAsync(relay, "NoUser@Dest.Test"));
        Assert.StartsWith("250", await RcptAsync(relay, "full@dest.test"));
        Assert.StartsWith("250", await RcptAsync(relay, "other@dest.test"));
        var entry = Assert.Single(await ListAsync(relay));
        Assert.Equal("nouser@dest.test", entry.Address);
        Assert.Equal("global", entry.Scope);
        Assert.StartsWith("invalid-recipient: 550 5.1.1", entry.Reason);
        Assert.Equal(1, peers[0].RcptAttempts("nouser@dest.test"));
    }

    [Fact]
    public async Task Suppress_add_remove_list_and_import_round_trip_and_the_rcpt_check_follows()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        var add = await Suppress(relay, "add", "a@dest.test", "B@dest.test", "--reason", "complained");
        Assert.True(add.ExitCode == 0, add.ToString());
        Assert.Contains("2 address(es) added, 0 already on the list", add.Stdout);
        var again = await Suppress(relay, "add", "a@dest.test");
        Assert.Contains("0 address(es) added, 1 already on the list", again.Stdout);
        Assert.StartsWith("550 5.7.1", await RcptAsync(relay, "a@dest.test"));
        Assert.StartsWith("550 5.7.1", await RcptAsync(relay, "b@dest.test"));

        var pool = await Suppress(relay, "add", "p@dest.test", "--scope", "pool:bulk");
        Assert.True(pool.ExitCode == 0, pool.ToString());
        Assert.StartsWith("250", await RcptAsync(relay, "p@dest.test")); // mail of no pool: a pool entry does not apply
        var domain = await Suppress(relay, "add", "d@dest.test", "--scope", "domain:origin.test");
        Assert.True(domain.ExitCode == 0, domain.ToString());
        Assert.StartsWith("550 5.7.1", await RcptAsync(relay, "d@dest.test")); // from alice@origin.test

        string file = relay.Dir.File("import.txt");
        File.WriteAllText(file, "# bounced last month\nc@dest.test\nd@dest.test, unsubscribed\n\nnot an address\nA@dest.test\ne@dest.test\t2024-01-01\n");
        var import = await Suppress(relay, "import", file);
        Assert.True(import.ExitCode == 0, import.ToString());
        Assert.Contains("3 address(es) added, 2 already on the list or not addresses", import.Stdout);
        Assert.Contains("line 5: 'not' is not an address", import.Stderr);

        var entries = await ListAsync(relay);
        Assert.Equal(["a@dest.test", "b@dest.test", "p@dest.test", "d@dest.test", "c@dest.test", "d@dest.test", "e@dest.test"],
            entries.Select(e => e.Address));
        Assert.Equal(["global", "global", "pool:bulk", "domain:origin.test", "global", "global", "global"], entries.Select(e => e.Scope));
        Assert.Equal("complained", entries[0].Reason);
        Assert.Equal(["p@dest.test"], (await ListAsync(relay, "--scope", "pool:bulk")).Select(e => e.Address));

        var remove = await Suppress(relay, "remove", "a@dest.test", "zz@dest.test");
        Assert.True(remove.ExitCode == 0, remove.ToString());
        Assert.Contains("1 address(es) removed, 1 not on the list", remove.Stdout);
        Assert.StartsWith("250", await RcptAsync(relay, "a@dest.test"));
        Assert.DoesNotContain("a@dest.test", (await ListAsync(relay)).Select(e => e.Address));

        var text = await Suppress(relay, "list");
        Assert.Contains("b@dest.test\tglobal\t", text.Stdout);
        Assert.Contains("-- 6 entries", text.Stderr);

        // More addresses than one control request holds (4 KiB) go in several.
        var many = await Suppress(relay, ["add", .. Enumerable.Range(0, 400).Select(i => $"bulk{i}@dest.test")]);
        Assert.True(many.ExitCode == 0, many.ToString());
        Assert.Contains("400 address(es) added, 0 already on the list", many.Stdout);
        Assert.Equal(406, (await ListAsync(relay)).Count);
        Assert.StartsWith("550 5.7.1", await RcptAsync(relay, "bulk399@dest.test"));

        var wrong = await Suppress(relay, "add", "not-an-address");
        Assert.Equal(1, wrong.ExitCode);
        Assert.Contains("'not-an-address' is not an address", wrong.Stderr);
        var badScope = await Suppress(relay, "list", "--scope", "site:x");
        Assert.Equal(2, badScope.ExitCode);
    }

    [Fact]
    public async Task A_pool_entry_refuses_at_rcpt_the_mail_the_pool_rules_put_in_that_pool()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        // Mail from origin.test is in pool "bulk" by a sender-domain rule (known at RCPT); other mail is in the default pool.
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, root => root["traffic"] = new JsonObject
        {
            ["pools"] = new JsonObject { ["bulk"] = new JsonObject { ["sources"] = new JsonObject { ["default"] = 1 } } },
            ["poolRules"] = new JsonArray(new JsonObject { ["senderDomain"] = "origin.test", ["pool"] = "bulk" }),
        });
        var add = await Suppress(relay, "add", "p@dest.test", "--scope", "pool:bulk");
        Assert.True(add.ExitCode == 0, add.ToString());
        Assert.StartsWith("550 5.7.1", await RcptAsync(relay, "p@dest.test")); // alice@origin.test: pool bulk

        await using var client = await TestSmtpClient.ConnectAndGreetAsync(relay.Port);
        await client.EhloAsync();
        await client.ExpectAsync("MAIL FROM:<bob@elsewhere.test>", 250);
        Assert.StartsWith("250", (await client.CommandAsync("RCPT TO:<p@dest.test>")).ToString()); // the default pool
    }

    [Fact]
    public async Task The_list_survives_kill_9()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        peers[0].RcptReply = Replies;
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port);

        Assert.Equal(0, (await Suppress(relay, "add", "added@dest.test", "removed@dest.test")).ExitCode);
        Assert.Equal(0, (await Suppress(relay, "remove", "removed@dest.test")).ExitCode);
        string file = relay.Dir.File("import.txt");
        File.WriteAllLines(file, Enumerable.Range(0, 1000).Select(i => $"user{i}@dest.test"));
        Assert.Equal(0, (await Suppress(relay, "import", file)).ExitCode);
        string id = await relay.SendAsync(Sender, ["nouser@dest.test"], MessageText.Simple("kill@test"));
        await relay.WaitForEventAsync(id, "failed", "nouser@dest.test");
        // A listing commits first: once it shows the automatic entry, that entry is on disk.
        Assert.Contains("nouser@dest.test", (await ListAsync(relay)).Select(e => e.Address));

        await relay.RestartAsync(log); // SIGKILL, then the same spool and config

        var entries = await ListAsync(relay);
        Assert.Equal(1002, entries.Count);
        Assert.Equal("added@dest.test", entries[0].Address);
        Assert.DoesNotContain("removed@dest.test", entries.Select(e => e.Address));
        Assert.StartsWith("550 5.7.1", await RcptAsync(relay, "added@dest.test"));
        Assert.StartsWith("550 5.7.1", await RcptAsync(relay, "user999@dest.test"));
        Assert.StartsWith("550 5.7.1", await RcptAsync(relay, "nouser@dest.test"));
        Assert.StartsWith("250", await RcptAsync(relay, "removed@dest.test"));
        await relay.Process.WaitForOutputAsync("suppression list: 1002 entries", Waits.Delivery);
    }

    [Fact]
    public async Task An_operator_rules_file_is_checked_by_check_config_and_read_again_on_sighup()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        peers[0].RcptReply = to => $"550 5.7.1 <{to}>: rejected by policy ACME-7";
        using var dir = new TempDir();
        string rules = dir.File("bounce-rules.json");
        File.WriteAllText(rules, """{ "rules": [ { "class": "rate-limited", "text": "ACME-\\d+", "comment": "ACME's throttle code" } ] }""");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, config =>
            config["bounces"] = new JsonObject { ["classRules"] = rules });

        var check = await CliRun.RunAsync(["check-config", relay.Dir.File("relay.json")], null, relay.Dir.Path, log);
        Assert.True(check.ExitCode == 0, check.ToString());
        Assert.Contains($"1 rule(s) from {rules}, then the", check.Stdout);
        Assert.Contains("hard bounces of invalid-recipient, bad-domain added (global)", check.Stdout);

        string first = await relay.SendAsync(Sender, ["one@dest.test"], MessageText.Simple("rules1@test"));
        Assert.Equal("rate-limited", (string?)(await relay.WaitForEventAsync(first, "failed", "one@dest.test"))["class"]);

        // A broken file: check-config names the rule, and a SIGHUP keeps the rules in force.
        File.WriteAllText(rules, """{ "rules": [ { "class": "throttled", "text": "ACME" } ] }""");
        var broken = await CliRun.RunAsync(["check-config", relay.Dir.File("relay.json")], null, relay.Dir.Path, log);
        Assert.Equal(2, broken.ExitCode);
        Assert.Contains($"bounce rules {rules}: rule 1: class 'throttled' is not one of", broken.Stderr);
        relay.Process.Signal(1);
        await relay.Process.WaitForOutputAsync("reload refused: bounce rules", Waits.Delivery);
        string second = await relay.SendAsync(Sender, ["two@dest.test"], MessageText.Simple("rules2@test"));
        Assert.Equal("rate-limited", (string?)(await relay.WaitForEventAsync(second, "failed", "two@dest.test"))["class"]);

        // A good one is in force for the next failure.
        File.WriteAllText(rules, """{ "rules": [ { "class": "content-block", "code": ["550"], "text": "ACME-7" } ] }""");
        relay.Process.Signal(1);
        await relay.Process.WaitForOutputAsync("configuration reloaded", Waits.Delivery);
        string third = await relay.SendAsync(Sender, ["three@dest.test"], MessageText.Simple("rules3@test"));
        Assert.Equal("content-block", (string?)(await relay.WaitForEventAsync(third, "failed", "three@dest.test"))["class"]);
    }

    [Fact]
    public async Task Queued_mail_to_an_address_suppressed_meanwhile_fails_with_a_dsn_and_is_not_sent()
    {
        await using var dns = Dns();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.4");
        int attempts = 0;
        peers[0].RcptReply = to => Interlocked.Increment(ref attempts) == 1 ? "450 4.2.1 try again later" : "250 2.1.5 Ok";
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, config =>
        {
            config["delivery"]!["retryInitialSeconds"] = 3600; // the retry comes from the flush below
            config["delivery"]!["retryMaxSeconds"] = 3600;
        });

        string id = await relay.SendAsync(Sender, ["later@dest.test"], MessageText.Simple("queued@test"));
        var deferred = await relay.WaitForEventAsync(id, "deferred", "later@dest.test");
        Assert.Equal("rate-limited", (string?)deferred["class"]);
        Assert.Equal(0, (await Suppress(relay, "add", "later@dest.test")).ExitCode);
        var flush = await CliRun.RunAsync(["queue", "flush", id, "--spool", relay.Dir.Spool], [], relay.Dir.Path, log);
        Assert.True(flush.ExitCode == 0, flush.ToString());

        var bounce = await peers[1].WaitForMessageAsync(m => m.MailFrom == "" && m.DataText.Contains("queued@test", StringComparison.Ordinal), "the DSN");
        var r = DsnMessage.Parse(bounce.Data).Recipient("later@dest.test");
        Assert.Equal("5.7.1", r["status"]);
        Assert.Contains("suppression list", r["diagnostic-code"]);
        var failed = await relay.WaitForEventAsync(id, "failed", "later@dest.test");
        Assert.Contains("suppression list", (string?)failed["reply"]);
        Assert.Equal(1, peers[0].RcptAttempts("later@dest.test"));
        Assert.Empty(peers[0].Messages);
    }
}
