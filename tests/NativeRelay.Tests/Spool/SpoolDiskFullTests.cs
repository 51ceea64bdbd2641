using NativeRelay.Config;
using NativeRelay.Spool;

namespace NativeRelay.Tests.Spool;

/// <summary>
/// The spool on a small filesystem (an 8 MiB tmpfs): new mail is refused before the disk is
/// full, the mail already queued can still record its outcomes, space comes back as finished mail
/// is truncated away, and a commit that fails because the disk filled from outside stops new mail
/// until the log is reopened, without losing anything acknowledged.
/// </summary>
public sealed class SpoolDiskFullTests
{
    private static SpoolOptions Options(long minFree) =>
        new() { PageSizeBits = 16, MemorySizeBits = 18, SegmentSizeBits = 18, MinFreeBytes = minFree };

    private static async Task WaitUntilAsync(Func<bool> condition, string what, SpoolTestKit kit)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, $"{what} did not happen within 30 s\n{kit.LogText}");
            await Task.Delay(50);
        }
    }

    [RootFact]
    public async Task New_mail_is_refused_at_the_reserve_queued_mail_still_finishes_and_space_comes_back()
    {
        using var fs = new SmallFilesystem(8);
        using var kit = new SpoolTestKit(Options(minFree: 2 << 20), Path.Combine(fs.Path, "spool"));
        await using var spool = kit.Open();

        var accepted = new List<ulong>();
        SpoolFullException? refused = null;
        for (ulong id = 1; id <= 2000 && refused is null; id++)
        {
            try
            {
                await SpoolTestKit.AppendCommittedAsync(spool, id, SpoolTestKit.Message(20_000, (int)id));
                accepted.Add(id);
            }
            catch (SpoolFullException e)
            {
                refused = e;
            }
        }
        Assert.NotNull(refused);
        Assert.True(accepted.Count > 50, $"only {accepted.Count} messages fit before the refusal");
        Assert.True(spool.IsFull, $"the spool says it is full (MAIL gets 452); refused after {accepted.Count}: {refused.Message}; {fs.Free} free");
        Assert.True(fs.Free >= 1 << 20, $"the reserve is kept: {fs.Free} bytes free after {accepted.Count} messages; files: "
            + string.Join(", ", new DirectoryInfo(kit.Directory).EnumerateFiles("*", SearchOption.AllDirectories).Select(f => $"{f.Name}={f.Length}")) + $"; {refused.Message}");

        // Delivery goes on: every queued message records its outcome in the reserve.
        foreach (ulong id in accepted)
            await spool.AppendStatusAsync(SpoolTestKit.Status(id, StatusFlags.Done, 1, (0, RecipientState.Delivered)));
        await spool.WaitForCommitAsync(spool.TailAddress - 1);
        Assert.Null(spool.Problem is { } p && p.Contains("commit failed") ? p : null);

        // Truncation gives the space back, and mail is taken again.
        await WaitUntilAsync(() =>
        {
            spool.MaintainAsync().GetAwaiter().GetResult();
            return !spool.IsFull;
        }, "the spool accepting mail again", kit);
        await SpoolTestKit.AppendCommittedAsync(spool, 5000, SpoolTestKit.Message(20_000, 5000));
    }

    [RootFact]
    public async Task A_commit_that_fails_on_a_full_disk_stops_new_mail_until_space_returns_and_loses_nothing_acknowledged()
    {
        using var fs = new SmallFilesystem(8);
        using var kit = new SpoolTestKit(Options(minFree: 1 << 20), Path.Combine(fs.Path, "spool"));
        var acknowledged = new Dictionary<ulong, byte[]>();
        ulong refusedId = 0;
        await using (var spool = kit.Open())
        {
            for (ulong id = 1; id <= 40; id++)
            {
                var bytes = SpoolTestKit.Message(10_000, (int)id);
                await SpoolTestKit.AppendCommittedAsync(spool, id, bytes);
                acknowledged[id] = bytes;
            }

            // Something else fills the disk to the last byte. The log's blocks prepared ahead of
            // its tail may still take a message or two (acknowledged, so they must survive); then
            // new mail is refused.
            string filler = fs.Fill();
            for (ulong id = 100; id < 200 && refusedId == 0; id++)
            {
                var bytes = SpoolTestKit.Message(10_000, (int)id);
                try
                {
                    await SpoolTestKit.AppendCommittedAsync(spool, id, bytes);
                    acknowledged[id] = bytes;
                }
                catch (SpoolFullException)
                {
                    refusedId = id;
                }
            }
            Assert.True(refusedId != 0, "new mail is refused once the disk is full");

            // Delivery records outcomes; once they outgrow the prepared blocks their commit cannot
            // be written, and the log stops.
            for (int round = 0; round < 20_000 && spool.Problem?.Contains("storage") != true; round++)
            {
                try
                {
                    await spool.AppendStatusAsync(SpoolTestKit.Status((ulong)(round % 5 + 1), StatusFlags.Done, 1, (0, RecipientState.Delivered)));
                }
                catch (IOException)
                {
                    // once the failure is known, outcomes are kept in memory only
                }
                if (round % 100 == 99)
                    await Task.Delay(10); // the commit fails on the committer's thread
            }
            await WaitUntilAsync(() => spool.Problem?.Contains("storage") == true, "the commit failure", kit);
            Assert.True(spool.IsFull);
            var e = await Assert.ThrowsAnyAsync<IOException>(() => SpoolTestKit.AppendCommittedAsync(spool, 300, SpoolTestKit.Message(1000, 300)));
            Assert.IsType<SpoolFullException>(e);

            // Still full: the log is not reopened.
            await spool.MaintainAsync();
            Assert.True(spool.IsFull);

            File.Delete(filler);
            await WaitUntilAsync(() =>
            {
                spool.MaintainAsync().GetAwaiter().GetResult();
                return !spool.IsFull;
            }, "the log reopened", kit);
            Assert.Contains("log reopened", kit.LogText);
            var late = SpoolTestKit.Message(10_000, 200);
            await SpoolTestKit.AppendCommittedAsync(spool, 200, late);
            acknowledged[200] = late;
        }

        await using (var spool = kit.Open(out var log))
        {
            var recovered = SpoolRecovery.Recover(spool, new QueueIdGenerator(), log).ToDictionary(m => m.Id);
            // Outcomes that never reached the disk only mean a message may be tried again.
            foreach (var (id, bytes) in acknowledged.Where(a => a.Key > 5))
            {
                Assert.True(recovered.TryGetValue(id, out var m), $"acknowledged message {id} is missing\n{kit.LogText}");
                var (_, body) = await spool.ReadMessageAsync(m.Id, m.HeadAddress);
                Assert.True(bytes.AsSpan().SequenceEqual(SpoolTestKit.Content(body)));
                body.Release();
            }
            Assert.DoesNotContain(refusedId, recovered.Keys);
            Assert.DoesNotContain(300UL, recovered.Keys);
        }
    }
}
