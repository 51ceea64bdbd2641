using System.Text.Json.Nodes;
using NativeRelay.Tests.Support;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

/// <summary>
/// Inflow control with the published binary: while more new mail waits for its first delivery
/// attempt than delivery.inFlowBacklog, the relay holds a client's 250 after the data, and gives
/// it as soon as delivery catches up.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class InFlowControlTests(ITestOutputHelper log)
{
    private const string Sender = "alice@origin.test";

    [Fact]
    public async Task A_client_waits_for_its_250_while_delivery_is_behind_and_gets_it_when_delivery_catches_up()
    {
        using var dir = new TempDir();
        await using var sink = new TestSmtpSink();
        using var release = new ManualResetEventSlim();
        // The next hop holds every transaction until the test lets it go (bounded).
        sink.DataReply = _ => release.Wait(TimeSpan.FromSeconds(90)) ? "250 2.0.0 Ok" : "451 4.3.0 the test gave up";
        var config = JsonNode.Parse(RelayConfig.For(dir, sink.Endpoint).ToJson())!.AsObject();
        config["delivery"]!["inFlowBacklog"] = 2;
        config["delivery"]!["inFlowDelaySeconds"] = 60;
        int port = int.Parse(((string)config["listen"]![0]!).Split(':')[1]);
        string path = dir.File("relay.json");
        await File.WriteAllTextAsync(path, config.ToJsonString());
        using var relay = await RelayProcess.StartServeAsync(["--config", path], port, dir.Path, log);
        try
        {
            // Three messages taken at once: the backlog (3) is now over the limit (2).
            for (int i = 0; i < 3; i++)
            {
                await using var client = await TestSmtpClient.ConnectAndGreetAsync(port);
                await client.EhloAsync();
                await client.SendAcceptedAsync(Sender, ["r@dest.test"], MessageText.Simple($"early{i}@test"));
            }

            await sink.WaitUntilAsync(() => sink.DataAttemptCount >= 3, TimeSpan.FromSeconds(30), "three transactions held by the next hop");

            // The fourth gets no reply to its data while the next hop holds the three.
            await using var fourth = await TestSmtpClient.ConnectAndGreetAsync(port);
            fourth.ReplyTimeout = TimeSpan.FromSeconds(45);
            await fourth.EhloAsync();
            await fourth.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
            await fourth.ExpectAsync("RCPT TO:<r@dest.test>", 250);
            await fourth.ExpectAsync("DATA", 354);
            await fourth.SendRawAsync(TestSmtpClient.DotStuff(MessageText.Simple("late@test")));
            var reply = fourth.ReadReplyAsync();
            await sink.AssertStaysTrueAsync(() => !reply.IsCompleted, TimeSpan.FromSeconds(2), "no 250 while the backlog is over the limit");

            // Delivery catches up: the 250 comes, well within the 60 s the pause could last, and all four arrive.
            release.Set();
            var answer = await reply;
            Assert.Equal(250, answer.Code);
            await sink.WaitForCountAsync(4, TimeSpan.FromSeconds(30));
        }
        finally
        {
            release.Set();
        }
    }
}
