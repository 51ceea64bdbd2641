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
            var restart = Stopwatch.StartNew();
            relay = await SpoolEndToEnd.StartRelayAsync(config, dir, null, extra);
            double greet = restart.Elapsed.TotalSeconds;
            await SpoolEndToEnd.WaitUntilAsync(() => sink.Total > 0, TimeSpan.FromMinutes(5), "the first delivery after the restart");
            double first = restart.Elapsed.TotalSeconds;
            string recovered = relay.StdoutLines.FirstOrDefault(l => l.Contains("spool: recovered", StringComparison.Ordinal)) ?? "";
            Note($"restart: greeting after {greet:0.00} s, first delivery after {first:0.00} s; {recovered}");
            Note($"after_restart_rss={SpoolEndToEnd.Memory(relay.Pid).Rss}");

            await SpoolEndToEnd.WaitUntilAsync(() => sink.Distinct >= messages, TimeSpan.FromMinutes(Setting("BACKLOG_DRAIN_MINUTES", 60)),
                "the drain", () => $"{sink.Distinct} delivered");
            Note($"drained {sink.Distinct} in {restart.Elapsed.TotalSeconds - first:0.0} s after the first delivery, duplicates={sink.Duplicates}");
            long spoolAfter = 0;
            await SpoolEndToEnd.WaitUntilAsync(() => (spoolAfter = SpoolEndToEnd.SpoolSize(dir.Spool)) < spoolBefore / 10, TimeSpan.FromMinutes(2), "the spool shrinking",
                () => $"{spoolAfter} bytes");
            Note($"spool_on_disk before_drain={spoolBefore} after_drain={spoolAfter}");
        }
        finally
        {
            relay.Dispose();
        }
    }
}
