using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// Relay policy at RCPT: accepted domains from anyone, everything else only for relay networks
/// and authenticated users (554 5.7.1), unknown local users 550 5.1.1. The test client is on
/// loopback, so these tests move the relay networks away from it to play an outside client.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class PolicyEndToEndTests(ITestOutputHelper log)
{
    private static Action<JsonObject> Outsider(Action<JsonObject>? more = null) => c =>
    {
        c["relayNetworks"] = new JsonArray("192.0.2.0/24");
        more?.Invoke(c);
    };

    [Fact]
    public async Task Client_outside_the_relay_networks_may_not_relay_but_may_send_to_accepted_domains()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Configure = Outsider(c => c["acceptedDomains"] = new JsonArray("example.test", ".hosted.test")) });
        await using var client = await h.ConnectEhloAsync();

        await client.ExpectAsync("MAIL FROM:<someone@outside.test>", 250);
        var remote = await client.CommandAsync("RCPT TO:<victim@elsewhere.test>");
        var subOfExact = await client.CommandAsync("RCPT TO:<x@sub.example.test>");
        var local = await client.CommandAsync("RCPT TO:<rcpt@example.test>");
        var sub = await client.CommandAsync("RCPT TO:<y@mail.hosted.test>");
        var postmaster = await client.CommandAsync("RCPT TO:<postmaster>");
        await client.ExpectAsync("DATA", 354);
        await client.SendRawAsync(TestSmtpClient.DotStuff(MessageText.Simple("policy@client.test")));
        var queued = await client.ReadReplyAsync();

        Assert.Equal(554, remote.Code);
        Assert.Equal("5.7.1", remote.EnhancedCode);
        Assert.Equal(554, subOfExact.Code);
        Assert.Equal(250, local.Code);
        Assert.Equal(250, sub.Code);
        Assert.Equal(250, postmaster.Code);
        Assert.Equal(250, queued.Code);
        IEnumerable<string> Delivered() => h.Sink.Messages.Where(m => m.Header("Message-ID") == "<policy@client.test>").SelectMany(m => m.Recipients);
        await h.Sink.WaitUntilAsync(() => Delivered().Count() >= 3, Waits.Delivery, "the three accepted recipients");
        Assert.Equal(["postmaster", "rcpt@example.test", "y@mail.hosted.test"], Delivered().Order());
        Assert.Equal(0, h.Sink.RcptAttempts("victim@elsewhere.test"));
    }

    [Fact]
    public async Task Relay_network_clients_may_relay_anywhere()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Configure = c => c["relayNetworks"] = new JsonArray("127.0.0.0/8") });
        await using var client = await h.ConnectEhloAsync();

        await client.SendAcceptedAsync("a@example.test", ["far@elsewhere.test"], MessageText.Simple("relayed@client.test"));

        await h.WaitForMessageIdAsync("relayed@client.test");
    }

    [Fact]
    public async Task Unknown_local_recipients_get_550_5_1_1()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new()
        {
            Configure = Outsider(c =>
            {
                c["acceptedDomains"] = new JsonArray("example.test", "catchall.test");
                c["localRecipients"] = new JsonArray("rcpt@example.test", "@catchall.test");
            }),
        });
        await using var client = await h.ConnectEhloAsync();

        await client.ExpectAsync("MAIL FROM:<someone@outside.test>", 250);
        var known = await client.CommandAsync("RCPT TO:<RCPT@Example.Test>");
        var unknown = await client.CommandAsync("RCPT TO:<mallory@example.test>");
        var catchAll = await client.CommandAsync("RCPT TO:<anyone@catchall.test>");
        var postmaster = await client.CommandAsync("RCPT TO:<postmaster@example.test>");

        Assert.Equal(250, known.Code);
        Assert.Equal(550, unknown.Code);
        Assert.Equal("5.1.1", unknown.EnhancedCode);
        Assert.Equal(250, catchAll.Code);
        Assert.Equal(250, postmaster.Code);
    }

    [Fact]
    public async Task Local_recipients_file_is_reloaded_on_sighup()
    {
        using var dir = new TempDir();
        string file = dir.File("recipients");
        File.WriteAllText(file, "# known users\nrcpt@example.test\n");
        await using var h2 = await ReceivingHarness.StartAsync(log, new()
        {
            Configure = Outsider(c =>
            {
                c["acceptedDomains"] = new JsonArray("example.test");
                c["localRecipientsFile"] = file;
                c["reloadCheckSeconds"] = 3600;
            }),
        });
        await using (var client = await h2.ConnectEhloAsync())
        {
            await client.ExpectAsync("MAIL FROM:<someone@outside.test>", 250);
            Assert.Equal(550, (await client.CommandAsync("RCPT TO:<newcomer@example.test>")).Code);
        }

        File.AppendAllText(file, "newcomer@example.test\n");
        h2.Relay.Signal(1); // SIGHUP
        await h2.Relay.WaitForOutputAsync("reloaded local recipients", TimeSpan.FromSeconds(30));

        await using var after = await h2.ConnectEhloAsync();
        await after.ExpectAsync("MAIL FROM:<someone@outside.test>", 250);
        Assert.Equal(250, (await after.CommandAsync("RCPT TO:<newcomer@example.test>")).Code);
    }
}
