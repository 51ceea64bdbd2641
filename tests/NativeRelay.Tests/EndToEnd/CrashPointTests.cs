using System.Net.Sockets;
using System.Text;
using System.Text.Json.Nodes;
using NativeRelay.Hosting;
using NativeRelay.Tests.Spool;
using NativeRelay.Tests.Support;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

/// <summary>
/// kill -9 at the worst instants, aimed with the relay's crash points (<see cref="CrashPoints"/>,
/// armed through the environment): in the middle of compaction (chunks copied forward but not
/// the head; the head committed but the index not moved), in the middle of recovery, between
/// two messages of an admin command, and while a SIGHUP reload swaps the new configuration in.
/// Each time the relay is started again unarmed on the same spool, and every message it
/// acknowledged arrives unchanged; what an admin command finished stays finished, and the rest
/// of its selection is untouched.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class CrashPointTests(ITestOutputHelper log)
{
    private const string Sender = "sender@example.test";
    private static readonly TimeSpan UntilTheCrash = TimeSpan.FromSeconds(90);

    private static IReadOnlyDictionary<string, string> Armed(string point) =>
        new Dictionary<string, string> { [CrashPoints.EnvironmentVariable] = point };

    private static JsonObject SmallSegments() => new()
    {
        ["spoolTuning"] = new JsonObject { ["pageSizeBits"] = 16, ["memorySizeBits"] = 20, ["segmentSizeBits"] = 20 },
    };

    private async Task ExpectCrashAsync(RelayProcess relay, string point)
    {
        int code = await relay.WaitForExitAsync(UntilTheCrash);
        Assert.True(relay.Output.Contains($"crash point {point.Split(':')[0]} reached", StringComparison.Ordinal),
            $"the relay exited ({code}) without reaching {point}\n{relay.Describe()}");
        Assert.Equal(137, code); // 128 + SIGKILL
    }

    [Theory]
    [InlineData(CrashPoints.CompactionChunksCopied)]
    [InlineData(CrashPoints.CompactionHeadCopied)]
    public async Task Killed_in_the_middle_of_compaction_the_relay_keeps_the_message_it_was_moving(string point)
    {
        using var dir = new TempDir();
        bool stuck = true;
        await using var sink = new CountingSink { Keep = id => id.StartsWith("deferred", StringComparison.Ordinal) };
        sink.RcptReply = address => stuck && address.StartsWith("slow@", StringComparison.Ordinal) ? "451 4.2.0 try again later" : null;
        var config = RelayConfig.For(dir, sink.Endpoint);
        var deferred = SpoolEndToEnd.Message("deferred@client.test", 20_000, 99);
        var acked = new List<string>();

        // The deferred message at the head of the log, then enough traffic behind it (4 MB in
        // 1 MiB segments) that compaction moves it forward; the relay dies there.
        using (var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log, SmallSegments(), Armed(point)))
        {
            try
            {
                await using var client = await TestSmtpClient.ConnectAndGreetAsync(config.Port);
                await client.EhloAsync();
                await client.SendAcceptedAsync(Sender, ["slow@example.test"], deferred);
                acked.Add("deferred@client.test");
                for (int i = 0; i < 400 && !relay.HasExited; i++)
                {
                    string id = $"pass-{i}@client.test";
                    if ((await client.SendMessageAsync(Sender, ["fast@example.test"], SpoolEndToEnd.Message(id, 10_000, i))).Code == 250)
                        acked.Add(id);
                }
            }
            catch (Exception e) when (e is IOException or SocketException or SmtpConnectionClosedException or Xunit.Sdk.XunitException)
            {
                // The crash came while a message was being sent: it was not acknowledged (and
                // ExpectCrashAsync says so if the connection broke for any other reason).
            }
            await ExpectCrashAsync(relay, point);
        }

        stuck = false;
        config.Listen = [$"127.0.0.1:{FreePort.Get()}"];
        using (var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log, SmallSegments()))
        {
            await SpoolEndToEnd.WaitUntilAsync(() => acked.All(sink.Has), Waits.Delivery, "every acknowledged message after the crash",
                () => $"missing {string.Join(", ", acked.Where(id => !sink.Has(id)).Take(5))}\n{relay.Describe()}");
            Assert.True(sink.Kept("deferred@client.test")!.AsSpan().EndsWith(deferred), "the message being moved arrived changed");
        }
    }

    [Fact]
    public async Task Killed_in_the_middle_of_recovery_the_next_start_recovers_everything()
    {
        using var dir = new TempDir();
        bool stuck = true;
        await using var sink = new CountingSink();
        sink.RcptReply = _ => stuck ? "451 4.2.0 try again later" : null;
        var config = RelayConfig.For(dir, sink.Endpoint);
        var acked = new List<string>();
        using (var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log))
        {
            await using (var client = await TestSmtpClient.ConnectAndGreetAsync(config.Port))
            {
                await client.EhloAsync();
                for (int i = 0; i < 60; i++)
                {
                    string id = $"queued-{i}@client.test";
                    await client.SendAcceptedAsync(Sender, ["rcpt@example.test"], SpoolEndToEnd.Message(id, 3_000, i));
                    acked.Add(id);
                }
            }
            relay.Kill();
            await relay.WaitForExitAsync(Waits.Exit);
        }

        // Dies at the 40th record it replays (60 heads and their status records lie in the log).
        const string point = CrashPoints.RecoveryRecord + ":40";
        using (var relay = RelayProcess.Start(["serve", "--config", config.WriteTo(dir.File("relay.json"))], dir.Path, log, Armed(point)))
            await ExpectCrashAsync(relay, point);

        stuck = false;
        using (var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log))
        {
            await SpoolEndToEnd.WaitUntilAsync(() => acked.All(sink.Has), Waits.Delivery, "every queued message after the interrupted recovery",
                () => $"missing {acked.Count(id => !sink.Has(id))}\n{relay.Describe()}");
            await relay.WaitForOutputAsync("recovered 60 queued message(s)", Waits.Delivery);
        }
    }

    [Fact]
    public async Task Killed_between_two_messages_of_a_delete_the_finished_ones_stay_deleted_and_the_rest_are_delivered()
    {
        using var dir = new TempDir();
        bool stuck = true;
        await using var sink = new CountingSink();
        sink.RcptReply = _ => stuck ? "451 4.2.0 try again later" : null;
        var config = RelayConfig.For(dir, sink.Endpoint);
        var ids = Enumerable.Range(0, 6).Select(i => $"doomed-{i}@client.test").ToArray();
        const string point = CrashPoints.AdminMessageDone + ":2";
        using (var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log, environment: Armed(point)))
        {
            await using (var client = await TestSmtpClient.ConnectAndGreetAsync(config.Port))
            {
                await client.EhloAsync();
                for (int i = 0; i < ids.Length; i++)
                    await client.SendAcceptedAsync(Sender, ["rcpt@doomed.test"], SpoolEndToEnd.Message(ids[i], 2_000, i));
            }
            var delete = await CliRun.RunAsync(["queue", "delete", "--domain", "doomed.test", "--yes", "--spool", dir.Spool], [], dir.Path, log);
            Assert.NotEqual(0, delete.ExitCode); // the relay died under it
            await ExpectCrashAsync(relay, point);
        }

        stuck = false;
        config.Listen = [$"127.0.0.1:{FreePort.Get()}"];
        using (var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log))
        {
            await SpoolEndToEnd.WaitUntilAsync(() => sink.Distinct >= 4, Waits.Delivery, "the four messages the delete did not reach", relay.Describe);
            // Nothing is left to deliver: the two deleted before the crash stay deleted.
            await SpoolEndToEnd.WaitUntilAsync(() => QueueIsEmpty(dir), Waits.Delivery, "an empty queue", relay.Describe);
            Assert.Equal(4, ids.Count(sink.Has));
            Assert.Equal(4, sink.Distinct);
        }
    }

    [Fact]
    public async Task Killed_while_a_reload_swaps_the_configuration_in_the_queue_is_intact_under_the_new_one()
    {
        using var dir = new TempDir();
        bool stuck = true;
        await using var sink = new CountingSink();
        sink.RcptReply = _ => stuck ? "451 4.2.0 try again later" : null;
        var config = RelayConfig.For(dir, sink.Endpoint);
        string file = config.WriteTo(dir.File("relay.json"));
        var acked = new List<string>();
        using (var relay = RelayProcess.Start(["serve", "--config", file], dir.Path, log, Armed(CrashPoints.ReloadSwapping)))
        {
            await relay.WaitUntilGreetingAsync(config.Port, TimeSpan.FromSeconds(60));
            await using (var client = await TestSmtpClient.ConnectAndGreetAsync(config.Port))
            {
                await client.EhloAsync();
                for (int i = 0; i < 20; i++)
                {
                    string id = $"reload-{i}@client.test";
                    await client.SendAcceptedAsync(Sender, ["rcpt@example.test"], SpoolEndToEnd.Message(id, 2_000, i));
                    acked.Add(id);
                }
            }
            config.Hostname = "reloaded.example.test";
            config.WriteTo(file);
            relay.Signal(1); // SIGHUP
            await ExpectCrashAsync(relay, CrashPoints.ReloadSwapping);
        }

        stuck = false;
        using (var relay = RelayProcess.Start(["serve", "--config", file], dir.Path, log))
        {
            await relay.WaitUntilGreetingAsync(config.Port, TimeSpan.FromSeconds(60));
            await SpoolEndToEnd.WaitUntilAsync(() => acked.All(sink.Has), Waits.Delivery, "every queued message under the new configuration", relay.Describe);
            Assert.Contains("reloaded.example.test", relay.Output);
        }
    }

    private bool QueueIsEmpty(TempDir dir)
    {
        var stats = CliRun.RunAsync(["queue", "list", "--json", "--spool", dir.Spool], [], dir.Path, log).GetAwaiter().GetResult();
        return stats.ExitCode == 0 && stats.Stdout.Trim().Length == 0;
    }
}
