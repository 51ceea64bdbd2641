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
