using NativeRelay.Config;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Tests.Spool;

/// <summary>
/// A damaged log on real files: a torn or corrupted tail, and a corrupted record inside the
/// committed log. The spool always opens, recovers what verifies, never replays a damaged record
/// as a message, says what it skipped, and keeps working after it.
/// </summary>
public sealed class SpoolTornTailTests : IDisposable
{
    // 64 KiB pages, so the messages of a test span several pages.
    private readonly SpoolTestKit _kit = new(new SpoolOptions { PageSizeBits = 16, MemorySizeBits = 20, SegmentSizeBits = 22 });

    public void Dispose() => _kit.Dispose();

    private async Task<Dictionary<ulong, (long Head, long First, byte[] Bytes)>> WriteAsync(SpoolLog spool, ulong from, ulong to, int size = 3000)
    {
        var written = new Dictionary<ulong, (long, long, byte[])>();
        for (ulong id = from; id <= to; id++)
        {
            var bytes = SpoolTestKit.Message(size, (int)id);
            var (head, first) = await SpoolTestKit.AppendCommittedAsync(spool, id, bytes);
            written[id] = (head, first, bytes);
        }
        return written;
    }

    /// <summary>Recovers, and checks that every recovered message reads back exactly as written.</summary>
    private static async Task<ulong[]> RecoverAndVerifyAsync(SpoolLog spool, Log log, IReadOnlyDictionary<ulong, (long Head, long First, byte[] Bytes)> written)
    {
        var recovered = SpoolRecovery.Recover(spool, new QueueIdGenerator(), log);
        foreach (var m in recovered)
        {
            var (_, body) = await spool.ReadMessageAsync(m.Id, m.HeadAddress);
            try
            {
                Assert.True(written[m.Id].Bytes.AsSpan().SequenceEqual(SpoolTestKit.Content(body)), $"message {m.Id} came back different");
            }
            finally
            {
                body.Release();
            }
        }
        return recovered.Select(m => m.Id).Order().ToArray();
    }

    private static ulong[] Ids(ulong from, ulong to) => Enumerable.Range((int)from, (int)(to - from + 1)).Select(i => (ulong)i).ToArray();

    [Fact]
    public async Task A_torn_last_record_costs_only_itself_and_the_log_goes_on_after_it()
    {
        Dictionary<ulong, (long Head, long First, byte[] Bytes)> written;
        await using (var spool = _kit.Open())
            written = await WriteAsync(spool, 1, 20);

        // Power loss while the last record was being written: its page ends in the middle of it.
        _kit.TruncateAt(written[20].Head + 100);

        await using (var spool = _kit.Open(out var log))
        {
            var ids = await RecoverAndVerifyAsync(spool, log, written);
            Assert.Equal(Ids(1, 19), ids);
            log.Flush();
            Assert.Contains($"torn or damaged record at address {written[20].Head}", _kit.LogText);
            // New mail goes where the torn record was.
            foreach (var (id, m) in await WriteAsync(spool, 21, 23))
                written[id] = m;
        }
        await using (var spool = _kit.Open(out var log))
            Assert.Equal(Ids(1, 19).Concat(Ids(21, 23)), await RecoverAndVerifyAsync(spool, log, written));
    }

    [Fact]
    public async Task Flipped_bytes_in_the_last_page_are_never_replayed_as_a_message()
    {
        Dictionary<ulong, (long Head, long First, byte[] Bytes)> written;
        await using (var spool = _kit.Open())
            written = await WriteAsync(spool, 1, 20);

        // A byte of message 18's body, in the last page: the head still parses, only the checksum knows.
        _kit.FlipPayloadByte(written[18].Head, 2000);

        await using (var spool = _kit.Open(out var log))
        {
            var ids = await RecoverAndVerifyAsync(spool, log, written);
            // Everything committed before the damage; nothing damaged. (19 and 20 lie behind the
            // damage in the uncommitted-looking tail: FasterLog's recovery stops at the bad record.)
            Assert.Equal(Ids(1, 17), ids);
            log.Flush();
            Assert.Contains($"torn or damaged record at address {written[18].Head}", _kit.LogText);
            Assert.Contains("mail acknowledged after it is lost", _kit.LogText);
            foreach (var (id, m) in await WriteAsync(spool, 21, 22))
                written[id] = m;
        }
        await using (var spool = _kit.Open(out var log))
            Assert.Equal(Ids(1, 17).Concat(Ids(21, 22)), await RecoverAndVerifyAsync(spool, log, written));
    }

    [Fact]
    public async Task A_damaged_record_inside_the_committed_log_is_skipped_and_everything_after_it_recovered()
    {
        Dictionary<ulong, (long Head, long First, byte[] Bytes)> written;
        await using (var spool = _kit.Open())
        {
            written = await WriteAsync(spool, 1, 20);
            // Message 1 is done; truncating past it makes the closing commit write the metadata
            // file, whose committed address is then past every record (recovery starts there).
            await spool.AppendStatusAsync(SpoolTestKit.Status(1, StatusFlags.Done, 1, (0, RecipientState.Delivered)));
            spool.TruncateUntil(written[2].First);
        }

        _kit.FlipPayloadByte(written[10].Head, 1500);

        await using (var spool = _kit.Open(out var log))
        {
            var ids = await RecoverAndVerifyAsync(spool, log, written);
            Assert.Equal(Ids(2, 9).Concat(Ids(11, 20)), ids);
            log.Flush();
            Assert.Contains($"unreadable log records at address {written[10].Head}", _kit.LogText);
            foreach (var (id, m) in await WriteAsync(spool, 21, 22))
                written[id] = m;
        }
        await using (var spool = _kit.Open(out var log))
            Assert.Equal(Ids(2, 9).Concat(Ids(11, 22)), await RecoverAndVerifyAsync(spool, log, written));
    }

    [Fact]
    public async Task A_large_message_with_a_damaged_chunk_is_left_out_and_the_others_kept()
    {
        Dictionary<ulong, (long Head, long First, byte[] Bytes)> written;
        await using (var spool = _kit.Open())
        {
            written = await WriteAsync(spool, 1, 3);
            foreach (var (id, m) in await WriteAsync(spool, 4, 4, size: 200_000)) // chunked: 64 KiB pages
                written[id] = m;
            foreach (var (id, m) in await WriteAsync(spool, 5, 6))
                written[id] = m;
            Assert.True(written[4].First < written[4].Head, "the large message has chunk records");
            await spool.AppendStatusAsync(SpoolTestKit.Status(1, StatusFlags.Done, 1, (0, RecipientState.Delivered)));
            spool.TruncateUntil(written[2].First);
        }

        _kit.FlipPayloadByte(written[4].First, 5000);

        await using (var spool = _kit.Open(out var log))
        {
            Assert.Equal(new ulong[] { 2, 3, 5, 6 }, await RecoverAndVerifyAsync(spool, log, written));
            log.Flush();
            Assert.Contains($"message {QueueIdGenerator.ToString(4)} (head at {written[4].Head}) is missing part of its data", _kit.LogText);
        }
    }
}
