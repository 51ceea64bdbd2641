using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Spool;
using NativeRelay.Tests.Support;

/// <summary>
/// One message deferred for the whole test sits at the head of the log while thousands of others
/// pass through: compaction copies it forward, the log's size on disk falls back to a few segments
/// instead of following the history, and the deferred message survives a SIGKILL and is finally
/// delivered unchanged.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class CompactionTests(ITestOutputHelper log)
{
    private const long Segment = 1L << 20;

    [Fact]
    public async Task A_long_deferred_message_is_kept_while_the_log_shrinks()
    {
        using var dir = new TempDir();
        bool stuck = true;
        await using var sink = new CountingSink { Keep = id => id.StartsWith("deferred", StringComparison.Ordinal) };
        sink.RcptReply = address => stuck && address.StartsWith("slow@", StringComparison.Ordinal) ? "451 4.2.0 try again later" : null;
        var config = RelayConfig.For(dir, sink.Endpoint);
        var extra = new JsonObject
        {
            ["spoolTuning"] = new JsonObject { ["pageSizeBits"] = 16, ["memorySizeBits"] = 20, ["segmentSizeBits"] = 20 },
        };
        var deferred = SpoolEndToEnd.Message("deferred@client.test", 20_000, 99);

        using (var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log, extra))
        {
            await using (var client = await TestSmtpClient.ConnectAndGreetAsync(config.Port))
            {
                await client.EhloAsync();
                await client.SendAcceptedAsync("sender@example.test", ["slow@example.test"], deferred);
                for (int i = 0; i < 800; i++)
                    await client.SendAcceptedAsync("sender@example.test", ["fast@example.test"], SpoolEndToEnd.Message($"pass-{i}@client.test", 10_000, i));
            }
            await SpoolEndToEnd.WaitUntilAsync(() => sink.Distinct >= 800, Waits.Delivery, "the traffic", relay.Describe);
            // The history is large by construction (800 x 10 kB, over seven segments); compaction
            // runs every few seconds, so on a fast machine the log has already shrunk by now and
            // its size here says nothing: what must hold is that it ends small.
            const long history = 800L * 10_000;
            Assert.True(history > 5 * Segment);
            long size = SpoolEndToEnd.SpoolSize(dir.Spool);
            log.WriteLine($"log on disk after the traffic: {size} bytes for {history} bytes of messages");
            // Small means a few segments: compaction leaves up to two segments of history beside
            // the live bytes, a span that can reach into four segment files, and each of those is
            // whole on disk (the older ones written, the newest prepared to its end by the log's
            // device), so four segments at most.
            await SpoolEndToEnd.WaitUntilAsync(() => (size = SpoolEndToEnd.SpoolSize(dir.Spool)) <= 4 * Segment, TimeSpan.FromSeconds(60),
                "the log shrinking", () => $"{size} bytes on disk\n{relay.Describe()}");
            log.WriteLine($"log on disk after compaction: {size} bytes");
            await relay.WaitForOutputAsync("compaction copied", Waits.Delivery); // the log line may trail the shrink a moment
            Assert.False(sink.Has("deferred@client.test"));
            int attempts = sink.RcptAttempts("slow@example.test");
            await SpoolEndToEnd.WaitUntilAsync(() => sink.RcptAttempts("slow@example.test") > attempts, Waits.Delivery, "another retry of the deferred message");

            relay.Kill();
            await relay.WaitForExitAsync(Waits.Exit);
        }

        stuck = false;
        config.Listen = [$"127.0.0.1:{FreePort.Get()}"];
        using (var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log, extra))
        {
            await SpoolEndToEnd.WaitUntilAsync(() => sink.Has("deferred@client.test"), Waits.Delivery, "the deferred message", relay.Describe);
            var got = sink.Kept("deferred@client.test")!;
            Assert.True(got.AsSpan().EndsWith(deferred), "the deferred message arrived changed");
        }
    }
}
