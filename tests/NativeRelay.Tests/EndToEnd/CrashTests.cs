using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Spool;

/// <summary>
/// The spool's first promise, tried the hard way: messages are sent over several sessions while the
/// relay is killed with SIGKILL at random moments and started again on the same spool, several
/// times; every message that got a 250 must reach the sink at least once. Duplicates (a delivery
/// whose status record did not survive the kill, a message resent after a lost 250) are counted
/// and reported, not failed. perf/crash-test.sh runs the same with 100,000 messages.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class CrashTests(ITestOutputHelper log)
{
    [Fact]
    public async Task Every_acknowledged_message_arrives_although_the_relay_is_killed_three_times_under_load()
    {
        const int kills = 3;
        var report = await CrashRun.RunAsync(log, messages: 800, sessions: 4, kills: kills, size: 1000,
            seed: Environment.TickCount, timeout: TimeSpan.FromMinutes(2));
        Assert.Equal(kills, report.Kills);
        Assert.True(report.Acknowledged > 700, $"too few messages were acknowledged for the run to mean much: {report}");
        Assert.True(report.Missing == 0, $"acknowledged messages were lost: {report}");
    }
}
