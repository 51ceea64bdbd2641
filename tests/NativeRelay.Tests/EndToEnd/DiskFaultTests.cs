using NativeRelay.Tests.Spool;
using NativeRelay.Tests.Support;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

/// <summary>
/// The disk fails under a loaded relay: the faultfs preload (Support/FaultFs) makes a share of the
/// spool's writes, syncs or allocations fail with EIO or ENOSPC at pseudo-random points, in bursts,
/// while four sessions send mail and retry what is refused. The relay must answer 451/452 for
/// every message whose commit failed (never 250), reopen its log from the last commit and take
/// mail again once the disk heals, deliver every message it acknowledged, and recover all of them
/// after a kill -9 that follows more faults. Duplicates (a delivery whose status record was lost
/// to a fault) are the at-least-once window and are counted, not failed.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class DiskFaultTests(ITestOutputHelper log)
{
    [Theory]
    [InlineData("write EIO", 11)]
    [InlineData("write ENOSPC", 12)]
    [InlineData("sync EIO", 13)]
    [InlineData("all EIO", 14)]
    public async Task Spool_faults_at_random_points_never_cost_an_acknowledged_message(string fault, int seed)
    {
        const int messages = 400;
        using var dir = new TempDir("nativerelay-faults");
        var sink = new CountingSink();
        int sinkPort = sink.Port;
        var config = RelayConfig.For(dir, sink.Endpoint);
        config.Spool = dir.Spool;
        var faults = new FaultFs(dir, dir.Spool);
        var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log, environment: faults.Environment);
        try
        {
            // 1. Bursts of faults while the load runs: each burst lasts until a few faults were
            //    injected (or a second passed), then the disk heals for a while.
            var load = new LoadClient("fault", messages, 4, 3000) { Port = config.Port };
            var running = load.RunAsync(TimeSpan.FromMinutes(3));
            for (int burst = 0; burst < 6 && !running.IsCompleted; burst++)
            {
                int before = load.Acknowledged;
                await WaitForAsync(() => load.Acknowledged >= before + 30 || running.IsCompleted, TimeSpan.FromSeconds(30));
                int injected = faults.Injected.Count;
                faults.Set($"{fault} 0.3 {seed * 100 + burst}");
                await WaitForAsync(() => faults.Injected.Count >= injected + 3, TimeSpan.FromSeconds(1));
                faults.Clear();
            }
            await running;
            Assert.True(load.Acknowledged == messages,
                $"only {load.Acknowledged} of {messages} messages were taken after the disk healed ({load.Refusals} refusals)\n{relay.Describe()}");
            Assert.True(faults.Injected.Count > 0, $"no fault was injected for '{fault}'\n{relay.Describe()}");
            log.WriteLine($"{fault}: {faults.Injected.Count} faults injected, {load.Refusals} refusals; first faults:\n{string.Join('\n', faults.Injected.Take(5))}");

            // A failed write or allocation of the log fails its commit: the client was told 4xx
            // and the log was reopened; a failed sync can only hit the commit metadata, which the
            // log does not need (its commits are in the log itself), so nothing is refused then.
            if (fault != "sync EIO")
            {
                Assert.True(load.Refusals > 0, $"faults were injected but no message was refused\n{relay.Describe()}");
                // The log is written in batches and read through a pipe: wait for the lines, bounded.
                await relay.WaitForOutputAsync("commit failed", Waits.Delivery);
                await relay.WaitForOutputAsync("log reopened", Waits.Delivery);
            }

            await SpoolEndToEnd.WaitUntilAsync(() => load.AcknowledgedIds.All(sink.Has), Waits.Delivery,
                "delivery of every acknowledged message", () => $"missing {load.AcknowledgedIds.Count(id => !sink.Has(id))}\n{relay.Describe()}");
            log.WriteLine($"{fault}: delivered {sink.Distinct} distinct, {sink.Duplicates} duplicate deliveries");

            // 2. The next hop goes away, mail is queued through more faults, and the relay is
            //    killed: a restart on a healed disk recovers and delivers every message acknowledged.
            await sink.DisposeAsync();
            faults.Set($"{fault} 0.3 {seed * 100 + 99}");
            var queued = new LoadClient("queued", 40, 2, 3000) { Port = config.Port };
            await queued.RunAsync(TimeSpan.FromMinutes(1));
            faults.Clear();
            Assert.True(queued.Acknowledged == 40, $"only {queued.Acknowledged} of 40 queued messages were taken\n{relay.Describe()}");
            relay.Kill();
            await relay.WaitForExitAsync(Waits.Exit);
            string outputBeforeKill = relay.Output;
            relay.Dispose();

            sink = new CountingSink(sinkPort);
            relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log);
            await SpoolEndToEnd.WaitUntilAsync(() => queued.AcknowledgedIds.All(sink.Has), Waits.Delivery,
                "delivery after the restart of every message acknowledged through the faults",
                () => $"missing {queued.AcknowledgedIds.Count(id => !sink.Has(id))}\n--- before the kill ---\n{outputBeforeKill}\n--- after ---\n{relay.Describe()}");
        }
        finally
        {
            relay.Dispose();
            await sink.DisposeAsync();
        }
    }

    private static async Task WaitForAsync(Func<bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition() && DateTime.UtcNow < deadline)
            await Task.Delay(20);
    }
}
