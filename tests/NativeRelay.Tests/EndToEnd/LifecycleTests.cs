using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using NativeRelay.Hosting;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// Running it for real (issue 7): SIGHUP reloads the whole configuration or refuses a broken one,
/// SIGTERM drains within shutdown.drainSeconds, JSON log lines, and the drop to an unprivileged user.
/// The client is on loopback, so relayNetworks is moved away from it: which domains it may send
/// to is then decided by acceptedDomains alone, which a reload can change.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class LifecycleTests(ITestOutputHelper log)
{
    private const int SIGHUP = 1;

    private static Action<JsonObject> Outsider(params string[] acceptedDomains) => c =>
    {
        c["relayNetworks"] = new JsonArray("192.0.2.0/24");
        c["acceptedDomains"] = new JsonArray(acceptedDomains.Select(d => (JsonNode?)JsonValue.Create(d)).ToArray());
    };

    private static void Write(ReceivingHarness h, JsonObject config) =>
        File.WriteAllText(h.ConfigPath, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));

    private static JsonObject Copy(JsonObject config) => (JsonObject)JsonNode.Parse(config.ToJsonString())!;

    private static int Count(RelayProcess relay, string text) =>
        relay.StdoutLines.Concat(relay.StderrLines).Count(l => l.Contains(text, StringComparison.Ordinal));

    private static async Task WaitForCountAsync(RelayProcess relay, string text, int count)
    {
        var deadline = DateTime.UtcNow + Waits.Delivery;
        while (Count(relay, text) < count)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new Xunit.Sdk.XunitException($"'{text}' was not printed {count} time(s).\n{relay.Describe()}");
            }

            await Task.Delay(50);
        }
    }

    private static async Task<SmtpReply> RcptAsync(ReceivingHarness h, string recipient)
    {
        await using var client = await h.ConnectEhloAsync();
        await client.ExpectAsync("MAIL FROM:<someone@outside.test>", 250);
        return await client.CommandAsync($"RCPT TO:<{recipient}>");
    }

    [Fact]
    public async Task Sighup_with_a_broken_config_keeps_the_old_one()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Configure = Outsider("old.test") });
        Assert.Equal(554, (await RcptAsync(h, "bob@new.test")).Code);

        // 1. Not JSON at all. 2. Valid JSON with a bad value (and a change that must not take effect).
        // 3. A certificate that cannot be read.
        var broken = new List<string> { "{ \"listen\": [ \"127.0.0.1:1\", " };
        var badValue = Copy(h.Config);
        badValue["acceptedDomains"] = new JsonArray("old.test", "new.test");
        ReceivingHarness.Limits(badValue)["maxRecipients"] = 0;
        broken.Add(badValue.ToJsonString());
        var badCertificate = Copy(h.Config);
        badCertificate["acceptedDomains"] = new JsonArray("old.test", "new.test");
        File.WriteAllText(h.Dir.File("broken.pem"), "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
        badCertificate["tls"] = new JsonObject { ["certificate"] = h.Dir.File("broken.pem"), ["key"] = h.Dir.File("broken.pem") };
        broken.Add(badCertificate.ToJsonString());

        for (int i = 0; i < broken.Count; i++)
        {
            File.WriteAllText(h.ConfigPath, broken[i]);
            h.Relay.Signal(SIGHUP);
            await WaitForCountAsync(h.Relay, "reload refused: ", i + 1);
            Assert.False(h.Relay.HasExited, "a refused reload must not stop the relay");

            // The old policy still holds, and mail still flows under it.
            Assert.Equal(554, (await RcptAsync(h, "bob@new.test")).Code);
            await using var client = await h.ConnectEhloAsync();
            await client.SendAcceptedAsync("someone@outside.test", ["alice@old.test"], MessageText.Simple($"after-refusal-{i}@client.test"));
            await h.WaitForMessageIdAsync($"after-refusal-{i}@client.test");
        }

        var refusals = h.Relay.StdoutLines.Where(l => l.Contains("reload refused: ", StringComparison.Ordinal)).ToList();
        Assert.All(refusals, l => Assert.EndsWith("; keeping the running configuration", l));
        Assert.Contains("limits.maxRecipients", refusals[1]);
        Assert.Contains("broken.pem", refusals[2]);
        Assert.Equal(0, Count(h.Relay, "configuration reloaded"));
    }

    [Fact]
    public async Task Sighup_with_a_good_config_applies_to_new_sessions_and_keeps_open_ones()
    {
        await using var other = new TestSmtpSink();
        await using var h = await ReceivingHarness.StartAsync(log, new() { Configure = Outsider("old.test") });

        // A session in the middle of a transaction when the reload happens.
        await using var before = await h.ConnectEhloAsync();
        await before.ExpectAsync("MAIL FROM:<someone@outside.test>", 250);
        await before.ExpectAsync("RCPT TO:<alice@old.test>", 250);

        var changed = Copy(h.Config);
        changed["acceptedDomains"] = new JsonArray("old.test", "new.test");
        changed["relayTo"] = other.Endpoint; // a changed route
        changed["listen"] = new JsonArray($"127.0.0.1:{FreePort.Get()}"); // needs a restart
        Write(h, changed);
        h.Relay.Signal(SIGHUP);
        await h.Relay.WaitForOutputAsync("configuration reloaded: ", Waits.Delivery);

        var reloaded = h.Relay.StdoutLines.Single(l => l.Contains("configuration reloaded: ", StringComparison.Ordinal));
        Assert.Contains("acceptedDomains", reloaded);
        Assert.Contains("relayTo", reloaded);
        Assert.Contains(h.Relay.StdoutLines, l => l.Contains("needs a restart: listen", StringComparison.Ordinal));

        // A new session gets the new policy (on the old port: listen needs a restart)...
        await using (var after = await h.ConnectEhloAsync())
        {
            await after.SendAcceptedAsync("someone@outside.test", ["bob@new.test"], MessageText.Simple("new-session@client.test"));
        }

        // ...and its mail takes the new route.
        await other.WaitForMessageAsync(m => m.Header("Message-ID") == "<new-session@client.test>", Waits.Delivery, "the message on the new route");

        // The session opened before the reload was not dropped, and still runs under the old policy.
        Assert.Equal(554, (await before.CommandAsync("RCPT TO:<bob@new.test>")).Code);
        await before.ExpectAsync("DATA", 354);
        await before.SendRawAsync(TestSmtpClient.DotStuff(MessageText.Simple("old-session@client.test")));
        Assert.Equal(250, (await before.ReadReplyAsync()).Code);
        await before.ExpectAsync("QUIT", 221);
        await other.WaitForMessageAsync(m => m.Header("Message-ID") == "<old-session@client.test>", Waits.Delivery, "the old session's message");
    }

    [Fact]
    public async Task Sighup_reloads_local_domains_and_aliases_and_refuses_a_broken_aliases_file()
    {
        string aliases = Path.Combine(Path.GetTempPath(), $"nativerelay-aliases-{Guid.NewGuid():N}");
        File.WriteAllText(aliases, "info: jane\n");
        try
        {
            string? maildirs = null;
            await using var h = await ReceivingHarness.StartAsync(log, new()
            {
                Configure = c =>
                {
                    maildirs = Path.Combine(Path.GetDirectoryName((string)c["spool"]!)!, "mail");
                    c["relayNetworks"] = new JsonArray("192.0.2.0/24");
                    c["localDomains"] = new JsonArray(new JsonObject { ["domain"] = "local.test", ["maildirRoot"] = maildirs, ["aliases"] = aliases });
                },
            });
            await SendAsync(h, "info@local.test", "before@client.test");
            await WaitForMaildirAsync(h, maildirs!, "jane", "before@client.test");
            Assert.Equal(554, (await RcptAsync(h, "x@second.test")).Code);

            // A changed aliases file and a second local domain.
            File.WriteAllText(aliases, "info: joe\n");
            var changed = Copy(h.Config);
            ((JsonArray)changed["localDomains"]!).Add(new JsonObject { ["domain"] = "second.test", ["maildirRoot"] = maildirs });
            Write(h, changed);
            h.Relay.Signal(SIGHUP);
            await h.Relay.WaitForOutputAsync("configuration reloaded: localDomains changed", Waits.Delivery);

            await SendAsync(h, "info@local.test", "after@client.test");
            await WaitForMaildirAsync(h, maildirs!, "joe", "after@client.test");
            await SendAsync(h, "x@second.test", "second@client.test");
            await WaitForMaildirAsync(h, maildirs!, "x", "second@client.test");

            // A broken aliases file refuses the reload: the aliases loaded before stay in force.
            File.WriteAllText(aliases, "info: |/bin/sh -c evil\n");
            h.Relay.Signal(SIGHUP);
            await h.Relay.WaitForOutputAsync("reload refused: ", Waits.Delivery);
            await SendAsync(h, "info@local.test", "after-refusal@client.test");
            await WaitForMaildirAsync(h, maildirs!, "joe", "after-refusal@client.test");
        }
        finally
        {
            File.Delete(aliases);
        }
    }

    private static async Task SendAsync(ReceivingHarness h, string recipient, string messageId)
    {
        await using var client = await h.ConnectEhloAsync();
        await client.SendAcceptedAsync("someone@outside.test", [recipient], MessageText.Simple(messageId));
    }

    private static async Task WaitForMaildirAsync(ReceivingHarness h, string root, string user, string messageId)
    {
        string dir = Path.Combine(root, user, "new");
        var deadline = DateTime.UtcNow + Waits.Delivery;
        while (!(Directory.Exists(dir) && Directory.GetFiles(dir).Any(f => File.ReadAllText(f).Contains($"<{messageId}>", StringComparison.Ordinal))))
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new Xunit.Sdk.XunitException($"<{messageId}> did not reach {dir}.\n{h.Relay.Describe()}");
            }

            await Task.Delay(50);
        }
    }

    [Fact]
    public async Task Json_log_format_writes_one_json_object_per_line()
    {
        using var dir = new TempDir();
        await using var sink = new TestSmtpSink();
        int port = FreePort.Get();
        using var relay = await RelayProcess.StartServeAsync(
            ["--listen", $"127.0.0.1:{port}", "--spool", dir.Spool, "--hostname", "relay.test", "--relay-to", sink.Endpoint, "--log-format", "json", "--log-level", "debug"],
            port, dir.Path, log);
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
        {
            await client.EhloAsync();
            await client.SendAcceptedAsync("a@client.test", ["b@example.test"], MessageText.Simple("json-log@client.test"));
        }

        await sink.WaitForMessageAsync(m => m.Header("Message-ID") == "<json-log@client.test>", Waits.Delivery);
        relay.Terminate();
        Assert.Equal(0, await relay.WaitForExitAsync(Waits.Exit));

        Assert.True(relay.StdoutLines.Count >= 3, relay.Describe());
        var levels = new HashSet<string>();
        foreach (var line in relay.StdoutLines)
        {
            using var doc = JsonDocument.Parse(line); // throws on anything that is not one JSON object
            var root = doc.RootElement;
            Assert.Equal(JsonValueKind.Object, root.ValueKind);
            Assert.True(DateTime.TryParse(root.GetProperty("time").GetString(), out _), line);
            levels.Add(root.GetProperty("level").GetString()!);
            Assert.False(string.IsNullOrEmpty(root.GetProperty("message").GetString()), line);
        }

        Assert.Contains("info", levels);
        Assert.Contains("debug", levels);
        Assert.Contains(relay.StdoutLines, l => l.Contains("\"message\":\"stopped\"", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Sigterm_lets_a_transaction_in_progress_finish_and_refuses_new_connections()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Configure = c => c["shutdown"] = new JsonObject { ["drainSeconds"] = 120 } });
        await using var idle = await h.ConnectEhloAsync();
        await using var busy = await h.ConnectEhloAsync();
        await busy.ExpectAsync("MAIL FROM:<a@client.test>", 250);
        await busy.ExpectAsync("RCPT TO:<b@example.test>", 250);
        await busy.ExpectAsync("DATA", 354);
        var message = TestSmtpClient.DotStuff(MessageText.Simple("drained@client.test"));
        int half = message.Length / 2;
        await busy.SendRawAsync(message[..half]);

        h.Relay.Terminate();
        await h.Relay.WaitForOutputAsync("stopping: no new connections", Waits.Exit);
        Assert.Contains("up to 120 s", h.Relay.StdoutLines.Single(l => l.Contains("stopping: ", StringComparison.Ordinal)));

        // The idle session is told the service is closing; nobody new gets in.
        var idleReplies = await idle.ReadUntilClosedAsync(Waits.Exit);
        Assert.Contains(idleReplies, r => r.Code == 421);
        await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await using var late = await TestSmtpClient.ConnectAndGreetAsync(h.Port);
        });
        Assert.False(h.Relay.HasExited, "the relay must wait for the transaction in progress");

        // The transaction in progress completes: its message is committed and acknowledged.
        await busy.SendRawAsync(message[half..]);
        var queued = await busy.ReadReplyAsync();
        Assert.Equal(250, queued.Code);
        await busy.ReadUntilClosedAsync(Waits.Exit);

        Assert.Equal(0, await h.Relay.WaitForExitAsync(Waits.Exit));
        Assert.Equal(0, Count(h.Relay, "drain time (120 s) is over"));
    }

    [Fact]
    public async Task Sigterm_closes_sessions_still_running_when_the_drain_time_is_over()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Configure = c => c["shutdown"] = new JsonObject { ["drainSeconds"] = 1 } });
        await using var busy = await h.ConnectEhloAsync();
        await busy.ExpectAsync("MAIL FROM:<a@client.test>", 250);
        await busy.ExpectAsync("RCPT TO:<b@example.test>", 250);
        await busy.ExpectAsync("DATA", 354);
        await busy.SendRawAsync("Subject: never finished\r\n");

        h.Relay.Terminate();

        Assert.Equal(0, await h.Relay.WaitForExitAsync(Waits.Exit));
        Assert.Contains(h.Relay.StdoutLines, l => l.Contains("drain time (1 s) is over: closing 1 session(s)", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Drops_privileges_to_the_configured_user_after_binding()
    {
        if (PrivilegeDrop.CurrentUid != 0)
        {
            log.WriteLine("not running as root: the privilege drop cannot be tested here");
            return;
        }

        var nobody = PrivilegeDrop.Lookup("nobody");
        using var dir = new TempDir();
        await using var sink = new TestSmtpSink();
        int port = FreePort.Get();
        using var relay = await RelayProcess.StartServeAsync(
            ["--listen", $"127.0.0.1:{port}", "--spool", dir.Spool, "--hostname", "relay.test", "--relay-to", sink.Endpoint, "--user", "nobody"],
            port, dir.Path, log);

        var status = File.ReadAllLines($"/proc/{relay.Pid}/status");
        // Uid: real, effective, saved, filesystem; the same for Gid. None of them may be root.
        Assert.Equal($"Uid:\t{nobody.Uid}\t{nobody.Uid}\t{nobody.Uid}\t{nobody.Uid}", status.Single(l => l.StartsWith("Uid:", StringComparison.Ordinal)));
        Assert.Equal($"Gid:\t{nobody.Gid}\t{nobody.Gid}\t{nobody.Gid}\t{nobody.Gid}", status.Single(l => l.StartsWith("Gid:", StringComparison.Ordinal)));
        // Printed before the listener opens, but read from the pipe on its own: wait for it.
        await relay.WaitForOutputAsync($"running as user nobody (uid {nobody.Uid}", Waits.Delivery);

        // Mail still flows: the spool (made by root, handed to the user) is written by the user.
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
        {
            await client.EhloAsync();
            await client.SendAcceptedAsync("a@client.test", ["b@example.test"], MessageText.Simple("unprivileged@client.test"));
        }

        await sink.WaitForMessageAsync(m => m.Header("Message-ID") == "<unprivileged@client.test>", Waits.Delivery);
        Assert.Equal(nobody.Uid.ToString(), Stat("%u", dir.Spool));
        // The relay keeps writing its spool (commit files come and go), so a file listed here may
        // be gone when stat looks at it; every file still there must be the user's.
        var owners = Directory.GetFiles(dir.Spool, "*", SearchOption.AllDirectories)
            .Select(f => (File: f, Owner: Stat("%u", f)))
            .Where(o => o.Owner.Length > 0 || File.Exists(o.File))
            .ToList();
        Assert.Contains(owners, o => Path.GetFileName(o.File).StartsWith("queue.log", StringComparison.Ordinal));
        Assert.All(owners, o => Assert.Equal(nobody.Uid.ToString(), o.Owner));

        relay.Terminate();
        Assert.Equal(0, await relay.WaitForExitAsync(Waits.Exit));
    }

    [Fact]
    public async Task An_unknown_user_stops_the_relay_with_a_clear_error()
    {
        using var dir = new TempDir();
        var result = await RelayProcess.RunToExitAsync(
            ["serve", "--listen", $"127.0.0.1:{FreePort.Get()}", "--spool", dir.Spool, "--user", "no-such-user-nr7"], dir.Path, log);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains(result.StderrLines, l => l.Contains("no user named 'no-such-user-nr7'", StringComparison.Ordinal));
        Assert.False(Directory.Exists(dir.Spool), "nothing is written before the user is known");
    }

    [Fact]
    public async Task Runs_one_socket_event_thread_per_core_and_mail_flows_through_them()
    {
        // Inline socket completions (SocketEngineTuning): the runtime then starts one epoll thread
        // per core instead of one for the whole process, and sessions run on them.
        using var dir = new TempDir();
        await using var sink = new TestSmtpSink();
        int port = FreePort.Get();
        using var relay = await RelayProcess.StartServeAsync(
            ["--listen", $"127.0.0.1:{port}", "--spool", dir.Spool, "--hostname", "relay.test", "--relay-to", sink.Endpoint],
            port, dir.Path, log);

        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
        {
            await client.EhloAsync();
            for (int i = 0; i < 3; i++)
                await client.SendAcceptedAsync("a@client.test", ["b@example.test"], MessageText.Simple($"inline-{i}@client.test"));
        }
        for (int i = 0; i < 3; i++)
            await sink.WaitForMessageAsync(m => m.Header("Message-ID") == $"<inline-{i}@client.test>", Waits.Delivery);

        int eventThreads = Directory.GetDirectories($"/proc/{relay.Pid}/task")
            .Count(task => File.ReadAllText(Path.Combine(task, "comm")).Trim() == ".NET Sockets");
        Assert.Equal(Environment.ProcessorCount, eventThreads);

        relay.Terminate();
        Assert.Equal(0, await relay.WaitForExitAsync(Waits.Exit));
    }

    private static string Stat(string format, string path)
    {
        using var stat = Process.Start(new ProcessStartInfo("stat", ["-c", format, path]) { RedirectStandardOutput = true, UseShellExecute = false })!;
        string output = stat.StandardOutput.ReadToEnd().Trim();
        stat.WaitForExit();
        return output;
    }
}
