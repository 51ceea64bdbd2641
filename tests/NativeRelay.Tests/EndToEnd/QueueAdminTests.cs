using System.Text;
using System.Text.Json;
using NativeRelay.Control;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Spool;
using NativeRelay.Tests.Support;

/// <summary>
/// Every <c>nativerelay queue</c> verb against a running relay, over its control socket: list
/// (with its filters), show, hold and release (surviving a SIGKILL), stats, delete (with and
/// without confirmation), bounce, flush; finding the relay through --spool and --config; a clear
/// answer when no relay runs; and the socket closed to other users.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class QueueAdminTests(ITestOutputHelper log)
{
    private const string Sender = "sender@example.test";

    private Task<CliResult> QueueWithInput(TempDir dir, string stdin, params string[] args) =>
        CliRun.RunAsync(new[] { "queue" }.Concat(args), Encoding.ASCII.GetBytes(stdin), dir.Path, log);

    private Task<CliResult> Queue(TempDir dir, params string[] args) => QueueWithInput(dir, "", args);

    private static List<ControlEntry> Entries(CliResult result) =>
        result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => JsonSerializer.Deserialize(l, ControlJsonContext.Default.ControlResponse)!.Entry!)
            .ToList();

    [Fact]
    public async Task Every_queue_verb_works_against_a_running_relay()
    {
        using var dir = new TempDir();
        int sinkPort = FreePort.Get(); // down until the flush
        var config = RelayConfig.For(dir, $"127.0.0.1:{sinkPort}", retryInitialSeconds: 3600, retryMaxSeconds: 3600);
        var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log);
        try
        {
            var ids = new List<string>();
            await using (var client = await TestSmtpClient.ConnectAndGreetAsync(config.Port))
            {
                await client.EhloAsync();
                for (int i = 0; i < 5; i++)
                {
                    string rcpt = i < 3 ? $"user{i}@alpha.test" : $"user{i}@beta.test";
                    ids.Add(await client.SendAcceptedAsync(Sender, [rcpt], MessageText.Simple($"admin-{i}@client.test")));
                }
            }
            string spool = dir.Spool;
            await SpoolEndToEnd.WaitUntilAsync(() => Entries(Queue(dir, "list", "--json", "--spool", spool).GetAwaiter().GetResult()).All(e => e.Attempts > 0),
                Waits.Delivery, "the first (failed) attempts", relay.Describe);

            // list, its filters, show
            var all = await Queue(dir, "list", "--json", "--spool", spool);
            Assert.Equal(0, all.ExitCode);
            var entries = Entries(all);
            Assert.Equal(ids.Order(), entries.Select(e => e.Id).Order());
            Assert.All(entries, e => Assert.Equal(Sender, e.Sender));
            Assert.Contains(entries, e => e.Recipients.SequenceEqual(["user0@alpha.test"]));
            var table = await Queue(dir, "list", "--spool", spool);
            Assert.Contains(ids[0], table.Stdout);
            Assert.Contains("-- 5 message(s)", table.Stdout);
            Assert.Contains("last error", table.Stdout);
            Assert.Equal(3, Entries(await Queue(dir, "list", "--json", "--domain", "alpha.test", "--spool", spool)).Count);
            Assert.Empty(Entries(await Queue(dir, "list", "--json", "--older-than", "1h", "--spool", spool)));
            var show = await Queue(dir, "show", ids[3], "--spool", spool);
            Assert.Equal(0, show.ExitCode);
            Assert.Contains($"id:           {ids[3]}", show.Stdout);
            Assert.Contains("recipient:    user3@beta.test", show.Stdout);
            Assert.Equal(1, (await Queue(dir, "show", "0123456789ABCDEF", "--spool", spool)).ExitCode);

            // the config file finds the same relay
            string configFile = dir.File("queue-config.json");
            File.WriteAllText(configFile, $"{{\"spool\": \"{spool}\"}}");
            Assert.Equal(5, Entries(await Queue(dir, "list", "--json", "--config", configFile)).Count);

            // hold and release; a hold survives a crash
            Assert.Contains("1 message(s) held", (await Queue(dir, "hold", ids[0], "--spool", spool)).Stdout);
            Assert.True(Entries(await Queue(dir, "list", "--json", "--spool", spool)).Single(e => e.Id == ids[0]).Held);
            var stats = await Queue(dir, "stats", "--json", "--spool", spool);
            var final = JsonSerializer.Deserialize(stats.Stdout.Trim(), ControlJsonContext.Default.ControlResponse)!;
            Assert.Equal(1, final.Stats!.Held);
            Assert.Equal(5, final.Spool!.LiveMessages);
            Assert.Contains("held:     1", (await Queue(dir, "stats", "--spool", spool)).Stdout);
            relay.Kill();
            await relay.WaitForExitAsync(Waits.Exit);
            relay.Dispose();
            config.Listen = [$"127.0.0.1:{FreePort.Get()}"];
            relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log);
            Assert.True(Entries(await Queue(dir, "list", "--json", "--spool", spool)).Single(e => e.Id == ids[0]).Held, "the hold survives a SIGKILL");
            Assert.Contains("1 message(s) released", (await Queue(dir, "release", ids[0], "--spool", spool)).Stdout);
            Assert.False(Entries(await Queue(dir, "list", "--json", "--spool", spool)).Single(e => e.Id == ids[0]).Held);

            // delete asks first
            var declined = await QueueWithInput(dir, "n\n", "delete", ids[1], "--spool", spool);
            Assert.Equal(1, declined.ExitCode);
            Assert.Contains("not deleted", declined.Stderr);
            Assert.Contains(ids[1], Entries(await Queue(dir, "list", "--json", "--spool", spool)).Select(e => e.Id));
            var confirmed = await QueueWithInput(dir, "y\n", "delete", ids[1], "--spool", spool);
            Assert.Equal(0, confirmed.ExitCode);
            Assert.Contains("1 message(s) deleted", confirmed.Stdout);
            Assert.Equal(2, Entries(await Queue(dir, "list", "--json", "--domain", "beta.test", "--spool", spool)).Count);
            Assert.Contains("2 message(s) deleted", (await Queue(dir, "delete", "--domain", "beta.test", "--yes", "--spool", spool)).Stdout);

            // bounce: the message goes, a DSN to its sender takes its place in the queue
            Assert.Contains("1 message(s) returned to sender", (await Queue(dir, "bounce", ids[2], "--spool", spool)).Stdout);
            var left = Entries(await Queue(dir, "list", "--json", "--spool", spool));
            Assert.DoesNotContain(ids[2], left.Select(e => e.Id));
            Assert.Contains(left, e => e.Sender is "" or "<>" && e.Recipients.SequenceEqual([Sender]));

            // flush: with the retry an hour away, only a flush delivers now
            await using var sink = new CountingSink(sinkPort);
            Assert.Contains("1 message(s) scheduled for immediate delivery", (await Queue(dir, "flush", ids[0], "--spool", spool)).Stdout);
            await SpoolEndToEnd.WaitUntilAsync(() => sink.Has("admin-0@client.test"), Waits.Delivery, "the flushed message", relay.Describe);
            Assert.False(sink.Has("admin-1@client.test"));
        }
        finally
        {
            relay.Dispose();
        }
    }

    [Fact]
    public async Task Flush_without_an_id_or_domain_attempts_every_deferred_message_but_the_held_ones()
    {
        using var dir = new TempDir();
        int sinkPort = FreePort.Get(); // down until the flush
        var config = RelayConfig.For(dir, $"127.0.0.1:{sinkPort}", retryInitialSeconds: 3600, retryMaxSeconds: 3600);
        using var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log);
        var ids = new List<string>();
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(config.Port))
        {
            await client.EhloAsync();
            for (int i = 0; i < 12; i++)
                ids.Add(await client.SendAcceptedAsync(Sender, [$"user{i}@domain{i % 3}.test"], MessageText.Simple($"flush-all-{i}@client.test")));
        }
        string spool = dir.Spool;
        await SpoolEndToEnd.WaitUntilAsync(() => Entries(Queue(dir, "list", "--json", "--spool", spool).GetAwaiter().GetResult()).All(e => e.Attempts > 0),
            Waits.Delivery, "the first (failed) attempts", relay.Describe);
        Assert.Contains("1 message(s) held", (await Queue(dir, "hold", ids[5], "--spool", spool)).Stdout);

        await using var sink = new CountingSink(sinkPort);
        var flush = await Queue(dir, "flush", "--spool", spool);

        Assert.Equal(0, flush.ExitCode);
        Assert.Contains("11 message(s) scheduled for immediate delivery", flush.Stdout);
        await SpoolEndToEnd.WaitUntilAsync(() => Enumerable.Range(0, 12).Where(i => i != 5).All(i => sink.Has($"flush-all-{i}@client.test")),
            Waits.Delivery, "every flushed message", relay.Describe);
        Assert.False(sink.Has("flush-all-5@client.test"), "a held message stays held");
        var left = Entries(await Queue(dir, "list", "--json", "--spool", spool));
        Assert.Equal([ids[5]], left.Select(e => e.Id));
        Assert.Contains("0 message(s) scheduled", (await Queue(dir, "flush", "--spool", spool)).Stdout);
    }

    [Fact]
    public async Task Verbs_that_need_a_target_say_so_and_list_and_stats_work_without_one()
    {
        using var dir = new TempDir();
        var config = RelayConfig.For(dir, $"127.0.0.1:{FreePort.Get()}");
        using var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log);
        foreach (var verb in new[] { "delete", "bounce", "hold", "release" })
        {
            var result = await Queue(dir, verb, "--spool", dir.Spool);
            Assert.Equal(2, result.ExitCode);
            Assert.Contains($"queue {verb}: needs a queue id or --domain D", result.Stderr);
        }
        var show = await Queue(dir, "show", "--spool", dir.Spool);
        Assert.Equal(2, show.ExitCode);
        Assert.Contains("queue show: ID is missing", show.Stderr);
        Assert.Equal(0, (await Queue(dir, "list", "--spool", dir.Spool)).ExitCode);
        Assert.Contains("the queue is empty", (await Queue(dir, "list", "--spool", dir.Spool)).Stdout);
        Assert.Equal(0, (await Queue(dir, "stats", "--spool", dir.Spool)).ExitCode);
        var none = await Queue(dir, "--spool", dir.Spool);
        Assert.Equal(2, none.ExitCode);
        Assert.Contains("queue: which command?", none.Stderr);
    }

    [Fact]
    public async Task Queue_commands_say_clearly_when_no_relay_is_running()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir.Spool);
        var result = await Queue(dir, "list", "--spool", dir.Spool);
        Assert.Equal(3, result.ExitCode);
        Assert.Contains("no relay is running", result.Stderr);

        // A socket left by a relay that was killed: nothing answers on it.
        var config = RelayConfig.For(dir, $"127.0.0.1:{FreePort.Get()}");
        using (var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log))
        {
            relay.Kill();
            await relay.WaitForExitAsync(Waits.Exit);
        }
        Assert.True(File.Exists(Path.Combine(dir.Spool, "control.sock")));
        result = await Queue(dir, "stats", "--spool", dir.Spool);
        Assert.Equal(3, result.ExitCode);
        Assert.Contains("no relay is running", result.Stderr);

        var usage = await Queue(dir, "delete", "--spool", dir.Spool);
        Assert.Equal(2, usage.ExitCode);
        Assert.Contains("needs a queue id or --domain", usage.Stderr);
    }

    [RootFact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public async Task The_control_socket_keeps_other_users_out()
    {
        using var dir = new TempDir();
        var config = RelayConfig.For(dir, $"127.0.0.1:{FreePort.Get()}");
        using var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log);
        string socket = Path.Combine(dir.Spool, "control.sock");
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(socket));

        // The same command as user "nobody" is refused; as root it works.
        var other = await CliRun.RunAsync(["--reuid=65534", "--regid=65534", "--clear-groups", RelayBinary.Path, "queue", "list", "--spool", dir.Spool],
            null, dir.Path, log, executable: "setpriv");
        Assert.NotEqual(0, other.ExitCode);
        Assert.Contains("permission denied", other.Stderr, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(0, (await Queue(dir, "list", "--spool", dir.Spool)).ExitCode);
    }
}
