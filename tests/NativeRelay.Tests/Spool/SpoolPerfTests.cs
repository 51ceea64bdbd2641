using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using NativeRelay.Tests.Support;
using Xunit.Abstractions;

namespace NativeRelay.Tests.Spool;

/// <summary>
/// The spool's load runs, for perf/RESULTS.md (perf/crash-test.sh and perf/backlog-test.sh run
/// them with NATIVERELAY_PERF=1; skipped otherwise). Sizes come from the environment so the
/// scripts can scale them; each writes a summary to the file named by *_REPORT.
/// </summary>
public sealed class SpoolPerfTests(ITestOutputHelper log)
{
    private static int Setting(string name, int fallback) =>
        int.TryParse(Environment.GetEnvironmentVariable(name), out int v) ? v : fallback;

    private static void Report(string variable, string text)
    {
        if (Environment.GetEnvironmentVariable(variable) is { Length: > 0 } path)
            File.WriteAllText(path, text);
    }

    [PerfFact]
    public async Task Crash_run_at_scale()
    {
        int messages = Setting("CRASH_MESSAGES", 100_000);
        var report = await CrashRun.RunAsync(log, messages, sessions: Setting("CRASH_SESSIONS", 16), kills: Setting("CRASH_KILLS", 10),
            size: Setting("CRASH_SIZE", 1024), seed: Setting("CRASH_SEED", 1), timeout: TimeSpan.FromMinutes(Setting("CRASH_MINUTES", 30)));
        Report("CRASH_REPORT", report + "\n");
        Assert.True(report.Missing == 0, $"acknowledged messages were lost: {report}");
    }

    /// <summary>
    /// A backlog with the destination down: memory per queued message, then a restart with the
    /// backlog (time to recover, to greet, to the first delivery), then the drain (spool size
    /// before and after).
    /// </summary>
    [PerfFact]
    public async Task Backlog_memory_recovery_and_drain()
    {
        int messages = Setting("BACKLOG_MESSAGES", 1_000_000);
        int sessions = Setting("BACKLOG_SESSIONS", 16);
        int size = Setting("BACKLOG_SIZE", 512);
        var text = new StringBuilder();
        void Note(string line)
        {
            log.WriteLine(line);
            text.AppendLine(line);
            Report("BACKLOG_REPORT", text.ToString());
        }

        using var dir = new TempDir("nativerelay-backlog");
        int sinkPort = FreePort.Get(); // the destination: nothing listens until the drain
        var config = RelayConfig.For(dir, $"127.0.0.1:{sinkPort}", retryInitialSeconds: 3600, retryMaxSeconds: 3600);
        var extra = new JsonObject { ["delivery"] = new JsonObject { ["loops"] = 2 } };
        var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, null, extra);
        try
        {
            await Task.Delay(2000);
            var (idleRss, _) = SpoolEndToEnd.Memory(relay.Pid);
            Note($"messages={messages} size={size} sessions={sessions} idle_rss={idleRss}");

            var load = new LoadClient("backlog", messages, sessions, size) { Port = config.Port };
            var clock = Stopwatch.StartNew();
            await load.RunAsync(TimeSpan.FromMinutes(Setting("BACKLOG_LOAD_MINUTES", 60)));
            Note($"queued={load.Acknowledged} in {clock.Elapsed.TotalSeconds:0.0} s ({load.Acknowledged / clock.Elapsed.TotalSeconds:0} msg/s), refusals={load.Refusals}");
            Assert.Equal(messages, load.Acknowledged);

            // Let the first (failed) attempts settle, then read the resident size.
            long rss = 0;
            for (int i = 0; i < 6; i++)
            {
                await Task.Delay(5000);
                rss = SpoolEndToEnd.Memory(relay.Pid).Rss;
            }
            long spoolBefore = SpoolEndToEnd.SpoolSize(dir.Spool);
            Note($"backlog_rss={rss} rss_per_message={(double)(rss - idleRss) / messages:0} bytes spool_on_disk={spoolBefore}");

            relay.Terminate();
            await relay.WaitForExitAsync(TimeSpan.FromMinutes(2));
            relay.Dispose();

            await using var sink = new CountingSink(sinkPort);
            config.Listen = [$"127.0.0.1:{FreePort.Get()}"];
            var restarted = DateTime.UtcNow;
            var restart = Stopwatch.StartNew();
            relay = await SpoolEndToEnd.StartRelayAsync(config, dir, null, extra);
            double greet = restart.Elapsed.TotalSeconds;
            await SpoolEndToEnd.WaitUntilAsync(() => sink.FirstDelivery is not null, TimeSpan.FromMinutes(5), "the first delivery after the restart");
            double first = (sink.FirstDelivery!.Value - restarted).TotalSeconds;
            Note($"restart: greeting after {greet:0.00} s, first delivery after {first:0.00} s (both from the process start)");
            await SpoolEndToEnd.WaitUntilAsync(() => relay.StdoutLines.Any(l => l.Contains("recovered queue handed to delivery", StringComparison.Ordinal)),
                TimeSpan.FromMinutes(5), "the recovered queue handed to delivery");
            foreach (var line in relay.StdoutLines.Where(l => l.Contains("spool: recovered", StringComparison.Ordinal) || l.Contains("recovered queue handed", StringComparison.Ordinal)))
                Note("  " + line);
            Note($"after_restart_rss={SpoolEndToEnd.Memory(relay.Pid).Rss}");
            await Task.Delay(10_000);
            Note($"rss_10s_into_drain={SpoolEndToEnd.Memory(relay.Pid).Rss} delivered_by_then={sink.Distinct}");

            await SpoolEndToEnd.WaitUntilAsync(() => sink.Distinct >= messages, TimeSpan.FromMinutes(Setting("BACKLOG_DRAIN_MINUTES", 60)),
                "the drain", () => $"{sink.Distinct} delivered");
            Note($"drained {sink.Distinct} in {restart.Elapsed.TotalSeconds - first:0.0} s after the first delivery, duplicates={sink.Duplicates}; "
                 + $"peak_rss_since_restart={SpoolEndToEnd.Memory(relay.Pid).Peak}");
            long spoolAfter = 0;
            await SpoolEndToEnd.WaitUntilAsync(() => (spoolAfter = SpoolEndToEnd.SpoolSize(dir.Spool)) < spoolBefore / 10, TimeSpan.FromMinutes(2), "the spool shrinking",
                () => $"{spoolAfter} bytes");
            // Truncation, segment deletion and hole punching follow the housekeeping passes: let it settle.
            var settle = Stopwatch.StartNew();
            for (long last = -1; settle.Elapsed < TimeSpan.FromMinutes(2) && spoolAfter != last;)
            {
                last = spoolAfter;
                await Task.Delay(10_000);
                spoolAfter = SpoolEndToEnd.SpoolSize(dir.Spool);
            }
            Note($"spool_on_disk before_drain={spoolBefore} after_drain={spoolAfter} (settled after {settle.Elapsed.TotalSeconds:0} s); rss_after_drain={SpoolEndToEnd.Memory(relay.Pid).Rss}");
        }
        finally
        {
            relay.Dispose();
        }
    }

    /// <summary>
    /// Peak resident memory (VmHWM) of a fresh relay for one big message: received and delivered
    /// live; received with the next hop down; delivered from the spool by a restarted relay.
    /// </summary>
    [PerfFact]
    public async Task Big_message_peak_memory()
    {
        int size = Setting("BIG_MIB", 50) * 1024 * 1024;
        var extra = new JsonObject { ["limits"] = new JsonObject { ["maxMessageSize"] = 2L * size } };
        var message = SpoolEndToEnd.Message("big@perf.test", size, 1);
        var text = new StringBuilder();
        void Note(string line)
        {
            log.WriteLine(line);
            text.AppendLine(line);
            Report("BIG_REPORT", text.ToString());
        }
        async Task SendAsync(int port)
        {
            await using var client = await TestSmtpClient.ConnectAndGreetAsync(port);
            client.ReplyTimeout = TimeSpan.FromMinutes(2);
            await client.EhloAsync();
            await client.SendAcceptedAsync("s@perf.test", ["r@perf.test"], message);
        }

        using (var dir = new TempDir("nativerelay-big"))
        {
            await using var sink = new CountingSink();
            var config = RelayConfig.For(dir, sink.Endpoint);
            using var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, null, extra);
            long idle = SpoolEndToEnd.Memory(relay.Pid).Peak;
            await SendAsync(config.Port);
            await SpoolEndToEnd.WaitUntilAsync(() => sink.Has("big@perf.test"), TimeSpan.FromMinutes(2), "delivery");
            Note($"{size >> 20} MiB message: idle peak {idle >> 20} MiB; received and delivered live: peak {SpoolEndToEnd.Memory(relay.Pid).Peak >> 20} MiB");
        }
        using (var dir = new TempDir("nativerelay-big"))
        {
            int sinkPort = FreePort.Get();
            var config = RelayConfig.For(dir, $"127.0.0.1:{sinkPort}");
            using (var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, null, extra))
            {
                await SendAsync(config.Port);
                Note($"received with the next hop down: peak {SpoolEndToEnd.Memory(relay.Pid).Peak >> 20} MiB");
                relay.Kill();
                await relay.WaitForExitAsync(Waits.Exit);
            }
            await using var sink = new CountingSink(sinkPort);
            config.Listen = [$"127.0.0.1:{FreePort.Get()}"];
            using var second = await SpoolEndToEnd.StartRelayAsync(config, dir, null, extra);
            await SpoolEndToEnd.WaitUntilAsync(() => sink.Has("big@perf.test"), TimeSpan.FromMinutes(2), "delivery");
            Note($"delivered from the spool by a restarted relay: peak {SpoolEndToEnd.Memory(second.Pid).Peak >> 20} MiB");
        }
    }

    /// <summary>
    /// The managed bytes per queued message of the structures a deferred (cold) message keeps:
    /// the spool's index slot (which holds the delivery side's due time and last error id too)
    /// and its retry heap entry. Measured after full GCs.
    /// </summary>
    [PerfFact]
    public void Memory_breakdown_per_queued_message()
    {
        const int n = 1_000_000;
        static long Heap()
        {
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            return GC.GetTotalMemory(forceFullCollection: true);
        }
        long start = Heap();
        // A cold (deferred) message: its spool index slot with the delivery side's due time and
        // last error, and a 16-byte retry heap entry. No object per message.
        var index = new NativeRelay.Spool.SpoolIndex();
        for (int i = 0; i < n; i++)
        {
            ulong id = (ulong)(i + 1) << 16;
            index.Add(id, i * 1000L, i * 1000L, 700, 1);
            index.TakeIntake(id);
            index.Cool(id, 1_800_000_000, "421 4.4.1 connect to 127.0.0.1:25 failed: ConnectionRefused", "smtp:127.0.0.1");
        }
        long afterIndex = Heap();
        var heap = new NativeRelay.Delivery.DeferredQueue();
        for (int i = 0; i < n; i++)
            heap.Schedule((ulong)(i + 1) << 16, 1_800_000_000);
        long afterHeap = Heap();
        string text = $"spool index slot (with due time and error ids) {(afterIndex - start) / (double)n:0} B; retry heap entry {(afterHeap - afterIndex) / (double)n:0} B (per cold message, {n} messages)";
        log.WriteLine(text);
        Report("BREAKDOWN_REPORT", text + "\n");
        GC.KeepAlive(index);
        GC.KeepAlive(heap);
    }
}
