using System.Net.Sockets;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

// Inside the namespace, so these test helpers win over any same-named type brought in by a global using.
using NativeRelay.Tests.Support;

/// <summary>What the spool promises across kill -9, SIGTERM and restarts.</summary>
[Trait("Category", "EndToEnd")]
public sealed class DurabilityTests(ITestOutputHelper log)
{
    private const string Sender = "sender@example.test";

    [Fact]
    public async Task Accepted_messages_survive_kill_9_and_are_delivered_after_restart()
    {
        const int count = 5;
        using var dir = new TempDir();
        int sinkPort = FreePort.Get(); // nothing listens here until after the kill
        var config = RelayConfig.For(dir, $"127.0.0.1:{sinkPort}");
        var ids = Enumerable.Range(0, count).Select(i => $"<durable-{i}@client.test>").ToList();

        using (var first = await RelayProcess.StartWithConfigAsync(config, dir, log))
        {
            await using (var client = await TestSmtpClient.ConnectAndGreetAsync(config.Port))
            {
                await client.EhloAsync();
                for (int i = 0; i < count; i++)
                {
                    await client.SendAcceptedAsync(Sender, ["rcpt@example.test"], MessageText.Simple($"durable-{i}@client.test"));
                }
            }

            first.Kill();
            await first.WaitForExitAsync(Waits.Exit);
        }

        await using var sink = new TestSmtpSink(sinkPort);
        config.Listen = [$"127.0.0.1:{FreePort.Get()}"];
        using var second = await RelayProcess.StartWithConfigAsync(config, dir, log, "relay-restart.json");

        await WaitForAllAsync(sink, ids, second);
    }

    [Fact]
    public async Task Restart_after_sigterm_does_not_deliver_again()
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using (var client = await h.ConnectEhloAsync())
        {
            for (int i = 0; i < 3; i++)
            {
                await client.SendAcceptedAsync(Sender, ["rcpt@example.test"], MessageText.Simple($"once-{i}@client.test"));
            }
        }

        await h.Sink.WaitForCountAsync(3, Waits.Delivery);
        h.Relay.Terminate();
        int exitCode = await h.Relay.WaitForExitAsync(Waits.Exit);
        Assert.True(exitCode == 0, $"SIGTERM exit code {exitCode}, expected 0.\n{h.Relay.Describe()}");

        await h.RestartAsync(log);
        // A new message proves the restarted relay's delivery runs; then watch a few retry periods.
        await using (var client = await h.ConnectEhloAsync())
        {
            await client.SendAcceptedAsync(Sender, ["rcpt@example.test"], MessageText.Simple("after-restart@client.test"));
        }

        await h.WaitForMessageIdAsync("after-restart@client.test");
        await h.Sink.AssertStaysTrueAsync(
            () => h.Sink.Messages.Count(m => m.Header("Message-ID")?.StartsWith("<once-", StringComparison.Ordinal) == true) == 3,
            TimeSpan.FromSeconds(3), "exactly 3 deliveries of the messages sent before the restart");
        Assert.Equal(4, h.Sink.Messages.Count);
    }

    [Fact]
    public async Task Sigterm_finishes_a_transaction_in_flight_and_the_message_is_delivered()
    {
        await using var h = await RelayHarness.StartAsync(log);
        var message = MessageText.Simple("in-flight@client.test");
        var stuffed = TestSmtpClient.DotStuff(message);
        int half = stuffed.Length / 2;

        await using (var client = await h.ConnectEhloAsync())
        {
            await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
            await client.ExpectAsync("RCPT TO:<rcpt@example.test>", 250);
            await client.ExpectAsync("DATA", 354);
            await client.SendRawAsync(stuffed[..half]);

            h.Relay.Terminate();
            await WaitUntilNotAcceptingAsync(h);

            await client.SendRawAsync(stuffed[half..]);
            var reply = await client.ReadReplyAsync();
            Assert.True(reply.Code == 250, $"The transaction in flight at SIGTERM must complete with 250, got {reply}.\n{client.Transcript}\n{h.Relay.Describe()}");
            try
            {
                await client.SendRawAsync("QUIT\r\n");
                await client.ReadUntilClosedAsync(Waits.Exit);
            }
            catch (IOException)
            {
                // The relay may close the session itself once the transaction is done.
            }
        }

        int exitCode = await h.Relay.WaitForExitAsync(Waits.Exit);
        Assert.True(exitCode == 0, $"SIGTERM exit code {exitCode}, expected 0.\n{h.Relay.Describe()}");

        // Delivered before the exit, or from the spool after a restart.
        if (!h.Sink.Messages.Any(m => m.Header("Message-ID") == "<in-flight@client.test>"))
        {
            await h.RestartAsync(log);
        }

        await h.WaitForMessageIdAsync("in-flight@client.test");
    }

    /// <summary>Waits (bounded) until the relay no longer greets new connections; fails if it exits first.</summary>
    private static async Task WaitUntilNotAcceptingAsync(RelayHarness h)
    {
        var deadline = DateTime.UtcNow + Waits.Exit;
        while (DateTime.UtcNow < deadline)
        {
            Assert.False(h.Relay.HasExited, $"The relay exited while a transaction was in flight.\n{h.Relay.Describe()}");
            try
            {
                await using var probe = await TestSmtpClient.ConnectAsync(h.Port, TimeSpan.FromSeconds(5));
                probe.ReplyTimeout = TimeSpan.FromSeconds(2);
                var greeting = await probe.TryReadReplyAsync();
                if (greeting?.Code != 220)
                {
                    return; // closed, or 421: not accepting sessions any more
                }
            }
            catch (SocketException)
            {
                return; // refused: the listener is closed
            }
            catch (TimeoutException)
            {
                return; // connected to a backlog nobody accepts from
            }

            await Task.Delay(100);
        }

        Assert.Fail($"The relay still greeted new connections {Waits.Exit.TotalSeconds:0} s after SIGTERM.\n{h.Relay.Describe()}");
    }

    private static async Task WaitForAllAsync(TestSmtpSink sink, IReadOnlyList<string> ids, RelayProcess relay)
    {
        try
        {
            await sink.WaitUntilAsync(
                () => ids.All(id => sink.Messages.Any(m => m.Header("Message-ID") == id)),
                Waits.Delivery, $"all {ids.Count} messages");
        }
        catch (TimeoutException ex)
        {
            var got = sink.Messages.Select(m => m.Header("Message-ID") ?? "").ToList();
            var missing = ids.Where(id => !got.Contains(id)).ToList();
            int duplicates = got.Count - got.Distinct().Count();
            Assert.Fail($"Lost {missing.Count} of {ids.Count} acknowledged messages ({string.Join(", ", missing)}); " +
                        $"{got.Count} deliveries, {duplicates} duplicates.\n{ex.Message}\n{relay.Describe()}");
        }
    }
}
