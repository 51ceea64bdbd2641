using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Spool;
using NativeRelay.Tests.Support;

/// <summary>
/// The relay with its spool on a 16 MiB tmpfs. New mail gets 452 4.3.1 while the disk is full
/// (first the relay's own reserve, then a disk filled to the last byte from outside); the mail
/// already queued keeps flowing to its destination all the while; and the relay takes mail again,
/// by itself, once space returns.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class DiskFullTests(ITestOutputHelper log)
{
    private const string Full = "452 4.3.1";

    [RootFact]
    public async Task New_mail_gets_452_while_the_disk_is_full_queued_mail_flows_and_the_relay_recovers()
    {
        using var fs = new SmallFilesystem(16);
        using var dir = new TempDir();
        int sinkPort = FreePort.Get();
        var config = RelayConfig.For(dir, $"127.0.0.1:{sinkPort}");
        config.Spool = Path.Combine(fs.Path, "spool");
        var extra = new JsonObject
        {
            ["spoolTuning"] = new JsonObject { ["pageSizeBits"] = 16, ["memorySizeBits"] = 20, ["segmentSizeBits"] = 20, ["minFreeBytes"] = 2 << 20 },
            ["delivery"] = new JsonObject { ["logFile"] = "none" },
        };
        var acked = new List<string>();
        var delivered = new HashSet<string>();
        using var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log, extra);

        // 1. The destination is down: mail piles up until the relay's reserve is reached.
        string? refusal = null;
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(config.Port))
        {
            await client.EhloAsync();
            for (int i = 0; i < 1000 && refusal is null; i++)
            {
                string id = $"fill-{i}@full.test";
                var (code, text) = await TrySendAsync(client, id, 40_000);
                if (code == 250)
                    acked.Add(id);
                else
                    refusal = text;
            }
        }
        Assert.True(refusal is not null && refusal.StartsWith(Full, StringComparison.Ordinal), $"expected {Full}, got '{refusal}'\n{relay.Describe()}");
        Assert.True(acked.Count >= 20, $"only {acked.Count} messages were taken before the disk was full");
        Assert.StartsWith(Full, await MailReplyAsync(config.Port));

        // 2. The destination comes back: the queued mail flows although the disk is full.
        var sink = new CountingSink(sinkPort);
        try
        {
            await SpoolEndToEnd.WaitUntilAsync(() => acked.All(sink.Has), Waits.Delivery, "delivery of the queued mail", relay.Describe);

            // 3. Delivered mail is truncated away and the space comes back by itself.
            await SpoolEndToEnd.WaitUntilAsync(() => MailReplyAsync(config.Port).GetAwaiter().GetResult().StartsWith("250", StringComparison.Ordinal),
                Waits.Delivery, "mail accepted again after the drain", relay.Describe);
            await SendAcceptedAsync(config.Port, "after-drain@full.test", acked);
            await SpoolEndToEnd.WaitUntilAsync(() => sink.Has("after-drain@full.test"), Waits.Delivery, "delivery after the drain", relay.Describe);

            // 4. The destination is down again with mail queued, and something else fills the disk to the last byte.
            delivered.UnionWith(acked.Where(sink.Has));
            await sink.DisposeAsync();
            for (int i = 0; i < 5; i++)
                await SendAcceptedAsync(config.Port, $"queued-{i}@full.test", acked);
            string filler = fs.Fill();
            // The relay reads the free space at most every 100 ms: the refusal follows within moments.
            await SpoolEndToEnd.WaitUntilAsync(() => MailReplyAsync(config.Port).GetAwaiter().GetResult().StartsWith(Full, StringComparison.Ordinal),
                TimeSpan.FromSeconds(10), "452 once the disk is full", relay.Describe);

            // The destination returns while the disk is still full: the queued mail still goes out.
            sink = new CountingSink(sinkPort);
            await SpoolEndToEnd.WaitUntilAsync(() => Enumerable.Range(0, 5).All(i => sink.Has($"queued-{i}@full.test")),
                Waits.Delivery, "delivery of the mail queued before the disk filled", relay.Describe);
            Assert.StartsWith(Full, await MailReplyAsync(config.Port));

            // 5. Space returns: the relay takes mail again by itself.
            File.Delete(filler);
            await SpoolEndToEnd.WaitUntilAsync(() => MailReplyAsync(config.Port).GetAwaiter().GetResult().StartsWith("250", StringComparison.Ordinal),
                Waits.Delivery, "mail accepted again after space returned", relay.Describe);
            await SendAcceptedAsync(config.Port, "after-space@full.test", acked);
            await SpoolEndToEnd.WaitUntilAsync(() => sink.Has("after-space@full.test"), Waits.Delivery, "delivery after space returned", relay.Describe);
            delivered.UnionWith(acked.Where(sink.Has));
            Assert.All(acked, id => Assert.True(delivered.Contains(id), $"{id} was acknowledged but not delivered"));
        }
        finally
        {
            await sink.DisposeAsync();
        }
    }

    private static async Task<(int Code, string Text)> TrySendAsync(TestSmtpClient client, string id, int size)
    {
        var mail = await client.CommandAsync("MAIL FROM:<sender@example.test>");
        if (mail.Code != 250)
            return (mail.Code, mail.ToString());
        await client.ExpectAsync("RCPT TO:<rcpt@example.test>", 250);
        await client.ExpectAsync("DATA", 354);
        await client.SendRawAsync(TestSmtpClient.DotStuff(SpoolEndToEnd.Message(id, size)));
        var reply = await client.ReadReplyAsync();
        return (reply.Code, reply.ToString());
    }

    private static async Task SendAcceptedAsync(int port, string id, List<string> acked)
    {
        await using var client = await TestSmtpClient.ConnectAndGreetAsync(port);
        await client.EhloAsync();
        await client.SendAcceptedAsync("sender@example.test", ["rcpt@example.test"], SpoolEndToEnd.Message(id, 2000));
        acked.Add(id);
    }

    /// <summary>The reply to a MAIL command in a fresh session.</summary>
    private static async Task<string> MailReplyAsync(int port)
    {
        await using var client = await TestSmtpClient.ConnectAndGreetAsync(port);
        await client.EhloAsync();
        return (await client.CommandAsync("MAIL FROM:<probe@example.test>")).ToString();
    }
}
