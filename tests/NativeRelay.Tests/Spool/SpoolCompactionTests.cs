using NativeRelay.Config;
using NativeRelay.Spool;

namespace NativeRelay.Tests.Spool;

/// <summary>
/// Compaction on real files: a message deferred for a long time at the head of the log is copied
/// forward with its delivery state, the log's oldest segments are truncated away, and the message
/// survives (same bytes, same state) through reads and a restart.
/// </summary>
public sealed class SpoolCompactionTests : IDisposable
{
    // 128 KiB segments: a few hundred small messages make several of them.
    private readonly SpoolTestKit _kit = new(new SpoolOptions { PageSizeBits = 16, MemorySizeBits = 18, SegmentSizeBits = 17, MinFreeBytes = 0 });

    public void Dispose() => _kit.Dispose();

    private static async Task DeliveredTrafficAsync(SpoolLog spool, ulong from, int count)
    {
        for (ulong id = from; id < from + (ulong)count; id++)
        {
            await SpoolTestKit.AppendCommittedAsync(spool, id, SpoolTestKit.Message(3000, (int)id));
            await spool.AppendStatusAsync(SpoolTestKit.Status(id, StatusFlags.Done, 1, (0, RecipientState.Delivered)));
        }
    }

    private async Task WaitForSizeAsync(Func<long, bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!condition(_kit.SizeOnDisk()))
        {
            Assert.True(DateTime.UtcNow < deadline, $"the log files did not become {what} ({_kit.SizeOnDisk()} bytes)\n{_kit.LogText}");
            await Task.Delay(50);
        }
    }

    [Theory]
    [InlineData(5_000)]     // one record
    [InlineData(200_000)]   // chunk records and a head
    public async Task A_long_deferred_message_is_copied_forward_and_the_log_shrinks_behind_it(int size)
    {
        var bytes = SpoolTestKit.Message(size, 7);
        long oldHead, oldFirst, peak;
        await using (var spool = _kit.Open())
        {
            (oldHead, oldFirst) = await SpoolTestKit.AppendCommittedAsync(spool, 1, bytes, recipients: 2);
            // One recipient delivered, the other deferred again and again.
            await spool.AppendStatusAsync(SpoolTestKit.Status(1, StatusFlags.None, 3, (0, RecipientState.Delivered)));
            // ... and an administrator held it.
            await spool.AppendStatusAsync(SpoolTestKit.Status(1, StatusFlags.Held, 3));
            Assert.Equal(StatusFlags.Held, spool.Index.Snapshot(1).Flags);
            await DeliveredTrafficAsync(spool, 100, 300);
            await spool.WaitForCommitAsync(spool.TailAddress - 1);
            peak = _kit.SizeOnDisk();
            Assert.True(peak > 5 * (1L << 17), $"the history should span several segments ({peak} bytes)");

            await spool.MaintainAsync(compactNow: true); // truncates to message 1, then copies it forward
            await spool.MaintainAsync(compactNow: true); // truncates past the old copy
            Assert.True(spool.BeginAddress > oldFirst, $"begin {spool.BeginAddress} should have passed the old copy at {oldFirst}");
            await WaitForSizeAsync(s => s <= 3 * (1L << 17), "smaller");

            // Still there, by the id and the address it was appended at.
            var (_, body) = await spool.ReadMessageAsync(1, oldHead);
            Assert.True(bytes.AsSpan().SequenceEqual(SpoolTestKit.Content(body)));
            body.Release();
            // A status after the copy still counts.
            await spool.AppendStatusAsync(SpoolTestKit.Status(1, StatusFlags.None, 4));
        }
        Assert.Contains("compaction copied 1 live message(s)", _kit.LogText);

        await using (var spool = _kit.Open(out var log))
        {
            var recovered = Assert.Single(SpoolRecovery.Recover(spool, new QueueIdGenerator(), log));
            Assert.Equal(1UL, recovered.Id);
            Assert.Equal(new[] { RecipientState.Delivered, RecipientState.Pending }, recovered.Recipients);
            Assert.Equal(4, recovered.Attempts);
            Assert.True(recovered.Held, "the hold travels with the copy");
            Assert.True(recovered.FirstAddress > oldFirst);
            var (_, body) = await spool.ReadMessageAsync(recovered.Id, recovered.HeadAddress);
            Assert.True(bytes.AsSpan().SequenceEqual(SpoolTestKit.Content(body)));
            body.Release();
        }
    }

    [Fact]
    public async Task A_finished_message_is_not_copied_and_not_brought_back()
    {
        long oldFirst;
        await using (var spool = _kit.Open())
        {
            (_, oldFirst) = await SpoolTestKit.AppendCommittedAsync(spool, 1, SpoolTestKit.Message(5000, 1));
            await SpoolTestKit.AppendCommittedAsync(spool, 2, SpoolTestKit.Message(5000, 2));
            await DeliveredTrafficAsync(spool, 100, 300);
            await spool.AppendStatusAsync(SpoolTestKit.Status(1, StatusFlags.Done, 1, (0, RecipientState.Delivered)));
            await spool.MaintainAsync(compactNow: true);
            await spool.MaintainAsync(compactNow: true);
            Assert.True(spool.BeginAddress > oldFirst);
        }
        Assert.Contains("compaction copied 1 live message(s)", _kit.LogText);
        await using (var spool = _kit.Open(out var log))
            Assert.Equal(2UL, Assert.Single(SpoolRecovery.Recover(spool, new QueueIdGenerator(), log)).Id);
    }

    [Fact]
    public async Task A_drained_log_gives_its_space_back_inside_a_segment_too()
    {
        // 16 MiB segments: the whole history fits in the first one, so only a hole can free it.
        using var kit = new SpoolTestKit(new SpoolOptions { PageSizeBits = 16, MemorySizeBits = 20, SegmentSizeBits = 24, MinFreeBytes = 0 });
        await using var spool = kit.Open();
        await DeliveredTrafficAsync(spool, 1, 1500);
        await spool.WaitForCommitAsync(spool.TailAddress - 1);
        long before = SpoolEndToEnd.SpoolSize(kit.Directory);
        Assert.True(before > 4_000_000, $"{before} bytes");
        long after = before;
        await SpoolEndToEnd.WaitUntilAsync(() =>
        {
            spool.MaintainAsync().GetAwaiter().GetResult();
            // What stays: the live tail, and the blocks the log device keeps prepared past it.
            return (after = SpoolEndToEnd.SpoolSize(kit.Directory)) < 1_500_000 + LogFileDevice.PrepareWindow;
        }, TimeSpan.FromSeconds(30), "the drained log's blocks coming back", () => $"{after} bytes of {before}");
        Assert.Single(Directory.GetFiles(kit.Directory, "queue.log.*"));
    }

    [Fact]
    public async Task While_compaction_finds_messages_to_move_it_runs_at_every_housekeeping_tick_not_once_an_interval()
    {
        await using var spool = _kit.Open();
        // Four deferred messages, each followed by more than a segment of finished traffic: each
        // pins its own segment, so each takes a compaction run of its own.
        for (ulong deferred = 1; deferred <= 4; deferred++)
        {
            await SpoolTestKit.AppendCommittedAsync(spool, deferred, SpoolTestKit.Message(3000, (int)deferred));
            await DeliveredTrafficAsync(spool, 100 * deferred, 60);
        }
        await DeliveredTrafficAsync(spool, 1000, 200);
        await spool.WaitForCommitAsync(spool.TailAddress - 1);

        // The host's one-second ticks, called back to back (well inside CompactionInterval): the
        // first run moves message 1, and since it moved something the next tick runs again.
        for (int tick = 0; tick < 6; tick++)
            await spool.MaintainAsync();
        int runs = _kit.LogText.Split("compaction copied").Length - 1;
        Assert.True(runs >= 4, $"{runs} compaction run(s) moved messages in six ticks; expected one per deferred message\n{_kit.LogText}");
        for (ulong deferred = 1; deferred <= 4; deferred++)
            Assert.True(spool.Index.TryGet(deferred, out _), $"message {deferred} is still queued after its move");
    }

    [Fact]
    public async Task A_log_that_is_mostly_live_is_left_alone()
    {
        await using var spool = _kit.Open();
        for (ulong id = 1; id <= 200; id++)
            await SpoolTestKit.AppendCommittedAsync(spool, id, SpoolTestKit.Message(3000, (int)id));
        long begin = spool.BeginAddress;
        await spool.MaintainAsync(compactNow: true);
        Assert.Equal(begin, spool.BeginAddress);
        Assert.DoesNotContain("compaction copied", _kit.LogText);
    }
}
