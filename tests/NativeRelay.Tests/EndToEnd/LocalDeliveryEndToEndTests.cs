using System.Text;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>Mail for a local domain goes through the whole relay into a Maildir (issue 7's wiring).</summary>
[Trait("Category", "EndToEnd")]
public sealed class LocalDeliveryEndToEndTests(ITestOutputHelper log)
{
    [Fact]
    public async Task A_message_for_a_local_domain_lands_in_the_users_maildir_with_return_path_and_delivered_to()
    {
        using var dir = new TempDir();
        string maildirs = dir.File("mail");
        int port = FreePort.Get();
        using var relay = await RelayProcess.StartServeAsync(
            ["--listen", $"127.0.0.1:{port}", "--spool", dir.Spool, "--hostname", "relay.test",
             "--local-domain", "local.test", "--maildir-root", maildirs],
            port, dir.Path, log);

        string id = $"local-{Guid.NewGuid():N}@client.test";
        var data = Encoding.ASCII.GetBytes($"From: a@example.com\r\nTo: jane@local.test\r\nMessage-ID: <{id}>\r\nSubject: local\r\n\r\nhello jane\r\n");
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
        {
            await client.ExpectAsync("EHLO client.test", 250);
            var reply = await client.SendMessageAsync("a@example.com", ["jane@local.test"], data);
            Assert.True(reply.Code == 250, reply + "\n" + relay.Describe());
        }

        // The file appears in new/ only once complete (written in tmp/, then renamed).
        string newDir = Path.Combine(maildirs, "jane", "new");
        string? file = null;
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < until && file is null)
        {
            if (Directory.Exists(newDir))
                file = Directory.GetFiles(newDir).FirstOrDefault();
            if (file is null)
                await Task.Delay(100);
        }
        Assert.True(file is not null, "no file in " + newDir + "\n" + relay.Describe());
        string text = File.ReadAllText(file!);
        Assert.StartsWith("Return-Path: <a@example.com>", text);
        Assert.Contains("Delivered-To: jane@local.test", text);
        Assert.Contains("by relay.test", text);           // our Received header
        Assert.Contains($"Message-ID: <{id}>", text);
        Assert.EndsWith("hello jane\n", text);            // Maildir stores LF line ends
        Assert.Empty(Directory.GetFiles(Path.Combine(maildirs, "jane", "tmp")));
    }

    [Fact]
    public async Task Unknown_users_of_local_domains_are_refused_at_rcpt_and_known_users_aliases_and_catch_alls_accepted()
    {
        string? maildirs = null;
        string? aliases = null;
        await using var h = await ReceivingHarness.StartAsync(log, new()
        {
            Configure = c =>
            {
                // An outside client: local domains take mail from anyone, but relaying is not allowed.
                c["relayNetworks"] = new JsonArray("192.0.2.0/24");
                maildirs = Path.Combine(Path.GetDirectoryName(c["spool"]!.GetValue<string>())!, "mail");
                aliases = Path.Combine(Path.GetDirectoryName(c["spool"]!.GetValue<string>())!, "aliases");
                File.WriteAllText(aliases, "info: alice\n");
                c["reloadCheckSeconds"] = 3600; // only SIGHUP reloads here
                c["localDomains"] = new JsonArray(
                    new JsonObject { ["domain"] = "local.test", ["maildirRoot"] = maildirs, ["users"] = new JsonArray("alice"), ["aliases"] = aliases },
                    new JsonObject { ["domain"] = "catch.test", ["maildirRoot"] = Path.Combine(maildirs, "catch"), ["catchAll"] = "alice@local.test" });
            },
        });

        string id = $"rcpt-{Guid.NewGuid():N}@client.test";
        await using (var client = await h.ConnectEhloAsync())
        {
            await client.ExpectAsync("MAIL FROM:<someone@outside.test>", 250);
            var unknown = await client.CommandAsync("RCPT TO:<bob@local.test>");
            var known = await client.CommandAsync("RCPT TO:<alice@local.test>");
            var alias = await client.CommandAsync("RCPT TO:<info@local.test>");
            var catchAll = await client.CommandAsync("RCPT TO:<whoever@catch.test>");
            var elsewhere = await client.CommandAsync("RCPT TO:<bob@elsewhere.test>");

            Assert.Equal(550, unknown.Code);
            Assert.Equal("5.1.1", unknown.EnhancedCode);
            Assert.Contains("<bob@local.test>: Recipient address rejected: User unknown in local recipient table", unknown.ToString());
            Assert.Equal(250, known.Code);
            Assert.Equal(250, alias.Code);
            Assert.Equal(250, catchAll.Code);
            Assert.Equal(554, elsewhere.Code);

            await client.ExpectAsync("DATA", 354);
            await client.SendRawAsync(TestSmtpClient.DotStuff(MessageText.Simple(id)));
            var queued = await client.ReadReplyAsync();
            Assert.True(queued.Code == 250, queued + "\n" + h.Relay.Describe());
        }

        // The known user's mail lands in its Maildir (the alias and the catch-all lead there too).
        string newDir = Path.Combine(maildirs!, "alice", "new");
        string? file = null;
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (DateTime.UtcNow < until && file is null)
        {
            if (Directory.Exists(newDir))
                file = Directory.GetFiles(newDir).FirstOrDefault(f => File.ReadAllText(f).Contains($"<{id}>"));
            if (file is null)
                await Task.Delay(100);
        }
        Assert.True(file is not null, "no file in " + newDir + "\n" + h.Relay.Describe());
        Assert.Contains("Delivered-To: alice@local.test", File.ReadAllText(file!));
        Assert.False(Directory.Exists(Path.Combine(maildirs!, "bob")));
        Assert.Empty(h.Sink.Messages); // nothing for the local domains went out by SMTP

        // SIGHUP re-reads the aliases: bob becomes an alias of alice and is accepted.
        File.WriteAllText(aliases!, "info: alice\nbob: alice\n");
        h.Relay.Signal(1); // SIGHUP
        await h.Relay.WaitForOutputAsync("reloaded local aliases", TimeSpan.FromSeconds(30));
        await using var after = await h.ConnectEhloAsync();
        await after.ExpectAsync("MAIL FROM:<someone@outside.test>", 250);
        Assert.Equal(250, (await after.CommandAsync("RCPT TO:<bob@local.test>")).Code);
        Assert.Equal(550, (await after.CommandAsync("RCPT TO:<carol@local.test>")).Code);
    }
}
