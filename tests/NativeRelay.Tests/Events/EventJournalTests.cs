using System.Text;
using NativeRelay.Events;
using NativeRelay.Telemetry;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Events;

/// <summary>
/// The event journal on real files: what was made durable comes back after a reopen, in order,
/// with the same sequence numbers (so the same event ids); a torn or corrupted tail is cut and the
/// journal goes on after it; segments rotate and are released; cursors survive.
/// </summary>
public sealed class EventJournalTests : IDisposable
{
    private readonly TempDir _dir = new("nativerelay-events");
    private readonly MemoryStream _logOutput = new();
    private readonly Log _log;

    public EventJournalTests() => _log = new Log(_logOutput, LogLevel.Info, LogFormat.Text);

    public void Dispose()
    {
        _log.Dispose();
        _dir.Dispose();
    }

    private string JournalDir => _dir.File("events");

    private string LogText()
    {
        _log.Flush();
        return Encoding.UTF8.GetString(_logOutput.ToArray());
    }

    private static byte[] Json(int i) => Encoding.UTF8.GetBytes($"{{\"type\":\"delivery\",\"n\":{i}}}");

    private static async Task AppendAsync(EventJournal journal, int from, int to, string? pool = null)
    {
        for (int i = from; i < to; i++)
            journal.Append(i % 2 == 0 ? RelayEventType.Delivery : RelayEventType.Bounce, pool, Json(i));
        await journal.WaitDurableAsync();
    }

    private static List<JournalRecord> ReadAll(EventJournal journal, long from = 0)
    {
        using var reader = new EventJournalReader(journal, from);
        var all = new List<JournalRecord>();
        while (reader.TryRead(out var r))
            all.Add(r);
        return all;
    }

    /// <summary>Where the records of a segment end (the file goes on with zeros prepared ahead of the tail).</summary>
    private static long DataEnd(string segment)
    {
        var bytes = File.ReadAllBytes(segment);
        long offset = 0;
        while (offset + 16 <= bytes.Length && BitConverter.ToInt32(bytes, (int)offset) is > 0 and int length)
            offset += 16 + length;
        return offset;
    }

    private static void AssertSequence(List<JournalRecord> records, int from, int to)
    {
        Assert.Equal(Enumerable.Range(from, to - from).Select(i => (long)i), records.Select(r => r.Seq));
        foreach (var r in records)
        {
            Assert.Equal(Json((int)r.Seq), r.Json.ToArray());
            Assert.Equal(r.Seq % 2 == 0 ? RelayEventType.Delivery : RelayEventType.Bounce, r.Type);
        }
    }

    [Fact]
    public async Task Durable_events_come_back_after_a_reopen_with_the_same_sequence_numbers_and_id()
    {
        string id;
        using (var journal = EventJournal.Open(JournalDir, 1 << 20, _log))
        {
            await AppendAsync(journal, 0, 100, pool: "p1");
            Assert.Equal(100, journal.DurableEnd);
            id = journal.Id;
        }
        using (var journal = EventJournal.Open(JournalDir, 1 << 20, _log))
        {
            Assert.Equal(id, journal.Id);
            Assert.Equal(100, journal.DurableEnd);
            var all = ReadAll(journal);
            AssertSequence(all, 0, 100);
            Assert.All(all, r => Assert.Equal("p1", r.Pool));
            await AppendAsync(journal, 100, 110);
            AssertSequence(ReadAll(journal, 95), 95, 110);
        }
        Assert.DoesNotContain("torn", LogText());
    }

    [Fact]
    public async Task A_torn_last_record_is_cut_and_the_journal_goes_on_after_it()
    {
        using (var journal = EventJournal.Open(JournalDir, 1 << 20, _log))
            await AppendAsync(journal, 0, 10);
        string segment = Directory.GetFiles(JournalDir, "*.events").Single();
        long whole = DataEnd(segment);
        Assert.True(new FileInfo(segment).Length > whole, "no space prepared ahead of the tail");
        // The last record written only in part (a crash in the middle of the write): its last 5 bytes never arrived.
        using (var f = new FileStream(segment, FileMode.Open))
            f.SetLength(whole - 5);

        using (var journal = EventJournal.Open(JournalDir, 1 << 20, _log))
        {
            Assert.Equal(9, journal.DurableEnd);
            AssertSequence(ReadAll(journal), 0, 9);
            await AppendAsync(journal, 9, 20);
            AssertSequence(ReadAll(journal), 0, 20);
        }
        Assert.Contains("cut a torn tail", LogText());
    }

    [Fact]
    public async Task Garbage_after_the_last_whole_record_and_a_bad_checksum_are_cut()
    {
        using (var journal = EventJournal.Open(JournalDir, 1 << 20, _log))
            await AppendAsync(journal, 0, 10);
        string segment = Directory.GetFiles(JournalDir, "*.events").Single();
        long whole = DataEnd(segment);
        // Pages of a batch that reached the disk without the fdatasync that would have made them a commit: noise in the prepared zeros.
        using (var f = new FileStream(segment, FileMode.Open))
        {
            f.Position = whole;
            f.Write(Enumerable.Range(1, 300).Select(i => (byte)(i * 7 | 1)).ToArray());
        }
        using (var journal = EventJournal.Open(JournalDir, 1 << 20, _log))
        {
            Assert.Equal(10, journal.DurableEnd);
            AssertSequence(ReadAll(journal), 0, 10);
        }
        Assert.Equal(whole, new FileInfo(segment).Length);

        // A flipped byte inside the 8th record's JSON: that record and everything after it go.
        var bytes = File.ReadAllBytes(segment);
        long offset = 0;
        for (int i = 0; i < 7; i++)
            offset += 16 + BitConverter.ToInt32(bytes, (int)offset);
        bytes[offset + 16 + 5] ^= 0x20;
        File.WriteAllBytes(segment, bytes);
        using (var journal = EventJournal.Open(JournalDir, 1 << 20, _log))
        {
            Assert.Equal(7, journal.DurableEnd);
            AssertSequence(ReadAll(journal), 0, 7);
        }
    }

    [Fact]
    public async Task Segments_rotate_readers_cross_them_and_released_segments_are_deleted()
    {
        using var journal = EventJournal.Open(JournalDir, 4096, _log);
        for (int batch = 0; batch < 40; batch++)
            await AppendAsync(journal, batch * 10, batch * 10 + 10);
        int segments = journal.SegmentCount;
        Assert.True(segments > 3, $"only {segments} segment(s)");
        Assert.Equal(segments, Directory.GetFiles(JournalDir, "*.events").Length);
        AssertSequence(ReadAll(journal), 0, 400);
        AssertSequence(ReadAll(journal, 237), 237, 400);

        int released = journal.ReleaseBefore(250);
        Assert.True(released > 0);
        Assert.Equal(segments - released, Directory.GetFiles(JournalDir, "*.events").Length);
        Assert.True(journal.OldestSeq <= 250);
        AssertSequence(ReadAll(journal, 250), 250, 400);
        // A reader asked for a released event starts at the oldest one kept.
        Assert.Equal(journal.OldestSeq, ReadAll(journal, 0)[0].Seq);
        // The active segment always stays.
        journal.ReleaseBefore(long.MaxValue);
        Assert.Single(Directory.GetFiles(JournalDir, "*.events"));
        await AppendAsync(journal, 400, 410);
        AssertSequence(ReadAll(journal, 400), 400, 410);
    }

    [Fact]
    public async Task A_reader_that_caught_up_reads_what_is_committed_later_across_rotations()
    {
        // The reader's window holds the zeros prepared ahead of the tail; later commits fill them.
        using var journal = EventJournal.Open(JournalDir, 2048, _log);
        await AppendAsync(journal, 0, 3);
        using var reader = new EventJournalReader(journal, 0);
        var seen = new List<JournalRecord>();
        for (int round = 0; round < 30; round++)
        {
            while (reader.TryRead(out var r))
                seen.Add(r);
            Assert.Equal(journal.DurableEnd, reader.NextSeq);
            await AppendAsync(journal, 3 + round * 7, 3 + (round + 1) * 7);
        }
        while (reader.TryRead(out var r))
            seen.Add(r);
        AssertSequence(seen, 0, 3 + 30 * 7);
        Assert.True(journal.SegmentCount > 2);
    }

    [Fact]
    public async Task A_reopened_journal_after_rotation_continues_the_sequence_of_its_last_segment()
    {
        using (var journal = EventJournal.Open(JournalDir, 4096, _log))
            for (int batch = 0; batch < 20; batch++)
                await AppendAsync(journal, batch * 10, batch * 10 + 10);
        using (var journal = EventJournal.Open(JournalDir, 4096, _log))
        {
            Assert.Equal(200, journal.DurableEnd);
            await AppendAsync(journal, 200, 205);
            AssertSequence(ReadAll(journal), 0, 205);
        }
    }

    [Fact]
    public async Task Waiters_see_their_event_durable_and_many_appends_share_commits()
    {
        using var journal = EventJournal.Open(JournalDir, 1 << 20, _log);
        long commitsBefore = EventMetrics.JournalCommits.Value;
        var tasks = Enumerable.Range(0, 8).Select(t => Task.Run(async () =>
        {
            for (int i = 0; i < 200; i++)
            {
                long seq = journal.Append(RelayEventType.Reception, null, "{\"type\":\"reception\"}"u8);
                await journal.WaitDurableAsync(seq + 1);
                Assert.True(journal.DurableEnd > seq);
            }
        })).ToArray();
        await Task.WhenAll(tasks);
        Assert.Equal(1600, journal.DurableEnd);
        long commits = EventMetrics.JournalCommits.Value - commitsBefore;
        Assert.True(commits < 1600, $"{commits} commits for 1600 events: no group commit");
        Assert.Equal(1600, ReadAll(journal).Count);
    }

    [Fact]
    public void A_cursor_file_is_replaced_whole_and_read_back()
    {
        Directory.CreateDirectory(JournalDir);
        var cursor = SinkCursor.For(JournalDir, "crm");
        Assert.Null(cursor.Read());
        cursor.Write(12345);
        Assert.Equal(12345, SinkCursor.For(JournalDir, "crm").Read());
        cursor.Write(12346);
        Assert.Equal(12346, cursor.Read());
        Assert.False(File.Exists(cursor.Path + ".tmp"));
        File.WriteAllText(cursor.Path, "garbage");
        Assert.Throws<NativeRelay.Config.ConfigException>(() => cursor.Read());
    }
}
