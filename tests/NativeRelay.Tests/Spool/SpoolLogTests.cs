using System.Text;
using NativeRelay.Config;
using NativeRelay.Message;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Tests.Spool;

/// <summary>The spool against real FasterLog files in a temporary directory.</summary>
public sealed class SpoolLogTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "nr-spool-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (DirectoryNotFoundException) { }
    }

    private SpoolLog Open(SpoolOptions? options = null) => SpoolLog.Open(_dir, options ?? new SpoolOptions(), Log.Null);

    private static Envelope MakeEnvelope(int recipients = 2) => new()
    {
        Sender = "alice@example.com"u8.ToArray(),
        Recipients = Enumerable.Range(0, recipients).Select(i => Encoding.ASCII.GetBytes($"rcpt{i}@example.org")).ToArray(),
        ClientAddress = "127.0.0.1",
        HeloName = "client.example",
        ArrivalUnixMs = 1_700_000_000_000,
        Flags = EnvelopeFlags.EightBitMime,
    };

    private static MessageBuffer MakeBody(byte[] bytes)
    {
        var body = MessageBuffer.Rent();
        body.Write(bytes);
        return body;
    }

    private static byte[] RandomMessage(int size, int seed)
    {
        var random = new Random(seed);
        var bytes = new byte[size];
        for (int i = 0; i < size; i++)
            bytes[i] = (byte)('A' + random.Next(26));
        for (int i = 76; i < size; i += 78)
        {
            bytes[i] = (byte)'\r';
            if (i + 1 < size) bytes[i + 1] = (byte)'\n';
        }
        return bytes;
    }

    private static byte[] Content(MessageBuffer body)
    {
        var copy = new byte[body.ContentLength];
        body.CopyTo(0, copy);
        return copy;
    }

    [Fact]
    public async Task A_committed_message_reads_back_identical_with_its_envelope()
    {
        var bytes = RandomMessage(5000, 1);
        await using (var spool = Open())
        {
            var body = MakeBody(bytes);
            var (head, first) = await spool.AppendMessageAsync(42, MakeEnvelope(), body);
            await spool.WaitForCommitAsync(head);
            Assert.True(spool.CommittedUntilAddress > head);
            Assert.Equal(head, first); // a small message is a single record

            var (envelope, read) = await spool.ReadMessageAsync(head);
            Assert.Equal(bytes, Content(read));
            Assert.Equal("alice@example.com", envelope.SenderText);
            Assert.Equal(2, envelope.Recipients.Length);
            Assert.Equal("rcpt1@example.org", envelope.RecipientText(1));
            Assert.Equal(EnvelopeFlags.EightBitMime, envelope.Flags);
            Assert.Equal("client.example", envelope.HeloName);
            read.Release();
            body.Release();
        }
    }

    [Fact]
    public async Task A_message_larger_than_a_page_is_split_into_chunks_and_reassembled()
    {
        // 64 KiB pages: a 1 MiB message needs many chunk records.
        var options = new SpoolOptions { PageSizeBits = 16, MemorySizeBits = 20, SegmentSizeBits = 22 };
        var bytes = RandomMessage(1024 * 1024 + 333, 2);
        long head, first;
        await using (var spool = Open(options))
        {
            var body = MakeBody(bytes);
            (head, first) = await spool.AppendMessageAsync(7, MakeEnvelope(1), body);
            await spool.WaitForCommitAsync(head);
            body.Release();
            Assert.True(first < head, "chunks are written before the head");
        }
        // Read it back after a reopen, from disk.
        await using (var spool = Open(options))
        {
            var (_, read) = await spool.ReadMessageAsync(head);
            Assert.Equal(bytes.Length, read.ContentLength);
            Assert.True(bytes.AsSpan().SequenceEqual(Content(read)));
            read.Release();
        }
    }

    [Theory]
    [InlineData(20, 24, 14)] // the default ring of 16 pages: the head lags by 14, not FASTER's 15
    [InlineData(16, 18, 2)]  // the smallest ring it applies to, 4 pages
    [InlineData(16, 17, 1)]  // 2 pages: left as FASTER has it (PageTurnHeadroom.MinRingPages)
    public async Task The_log_closes_its_oldest_page_one_turn_early(int pageBits, int memoryBits, long lagPages)
    {
        await using var spool = Open(new SpoolOptions { PageSizeBits = pageBits, MemorySizeBits = memoryBits, SegmentSizeBits = 22 });
        Assert.Equal(lagPages, spool.HeadLagPages);
    }

    [Fact]
    public async Task Messages_written_across_many_page_turns_of_a_small_ring_read_back_before_and_after_a_reopen()
    {
        // A ring of 4 pages of 64 KiB and three appenders at once: 120 messages of 20-30 KiB turn
        // the page about 50 times, each turn closing a page one turn early (PageTurnHeadroom).
        // Every message is then read back (from the segment files, as the spool reads committed
        // records), and again after a reopen, whose recovery must find all 120.
        var options = new SpoolOptions { PageSizeBits = 16, MemorySizeBits = 18, SegmentSizeBits = 22 };
        var written = new System.Collections.Concurrent.ConcurrentDictionary<ulong, (long Head, byte[] Bytes)>();
        await using (var spool = Open(options))
        {
            Assert.Equal(2, spool.HeadLagPages);
            await Task.WhenAll(Enumerable.Range(0, 3).Select(writer => Task.Run(async () =>
            {
                for (int i = 0; i < 40; i++)
                {
                    ulong id = (ulong)(writer * 1000 + i + 1);
                    var bytes = RandomMessage(20_000 + (int)(id * 97 % 10_000), (int)id);
                    var body = MakeBody(bytes);
                    var (head, _) = await spool.AppendMessageAsync(id, MakeEnvelope(1), body);
                    await spool.WaitForCommitAsync(head);
                    body.Release();
                    written[id] = (head, bytes);
                }
            })));
            Assert.Equal(120, written.Count);
            foreach (var (head, bytes) in written.Values)
            {
                var (_, read) = await spool.ReadMessageAsync(head);
                Assert.True(bytes.AsSpan().SequenceEqual(Content(read)));
                read.Release();
            }
        }

        await using (var spool = Open(options))
        {
            var recovered = SpoolRecovery.Recover(spool, new QueueIdGenerator(), Log.Null);
            Assert.Equal(written.Keys.Order().ToArray(), recovered.Select(m => m.Id).Order().ToArray());
            foreach (var (head, bytes) in written.Values)
            {
                var (_, read) = await spool.ReadMessageAsync(head);
                Assert.True(bytes.AsSpan().SequenceEqual(Content(read)));
                read.Release();
            }
        }
    }

    [Fact]
    public async Task Recovery_keeps_pending_messages_and_drops_finished_ones()
    {
        await using (var spool = Open())
        {
            for (ulong id = 1; id <= 3; id++)
            {
                var body = MakeBody(RandomMessage(300, (int)id));
                var (head, _) = await spool.AppendMessageAsync(id, MakeEnvelope(2), body);
                await spool.WaitForCommitAsync(head);
                body.Release();
            }
            // 1: done. 2: one recipient delivered, one pending, deferred. 3: untouched.
            await spool.AppendStatusAsync(Status(1, StatusFlags.Done, 1, (0, RecipientState.Delivered), (1, RecipientState.Failed)));
            await spool.AppendStatusAsync(Status(2, StatusFlags.None, 3, (0, RecipientState.Delivered)));
        }

        await using (var spool = Open())
        {
            var ids = new QueueIdGenerator();
            var recovered = SpoolRecovery.Recover(spool, ids, Log.Null);
            Assert.Equal(new ulong[] { 2, 3 }, recovered.Select(m => m.Id).ToArray());
            var two = recovered[0];
            Assert.Equal(RecipientState.Delivered, two.Recipients[0]);
            Assert.Equal(RecipientState.Pending, two.Recipients[1]);
            Assert.Equal(3, two.Attempts);
            Assert.All(recovered[1].Recipients, s => Assert.Equal(RecipientState.Pending, s));
            // New ids never collide with recovered ones.
            Assert.True(ids.Next() > 3);
        }
    }

    [Fact]
    public async Task Concurrent_appenders_share_commits()
    {
        await using var spool = Open();
        const int writers = 32;
        var tasks = Enumerable.Range(0, writers).Select(async i =>
        {
            var body = MakeBody(RandomMessage(1000, i));
            var (head, _) = await spool.AppendMessageAsync((ulong)(i + 1), MakeEnvelope(1), body);
            await spool.WaitForCommitAsync(head);
            body.Release();
            return head;
        }).ToArray();
        var heads = await Task.WhenAll(tasks);
        Assert.All(heads, h => Assert.True(spool.CommittedUntilAddress > h));
        Assert.Equal(writers, spool.CommittedWaiters);
        // Group commit: fewer commits than writers (they overlap); never more than one per writer.
        Assert.InRange(spool.Commits, 1, writers);
    }

    [Fact]
    public async Task A_second_relay_cannot_open_a_spool_in_use()
    {
        await using var spool = Open();
        var e = Assert.Throws<ConfigException>(() => Open());
        Assert.Contains("in use", e.Message);
    }

    [Fact]
    public async Task Truncation_releases_the_log_before_the_oldest_live_record()
    {
        var options = new SpoolOptions { PageSizeBits = 16, MemorySizeBits = 20, SegmentSizeBits = 17 };
        long keepHead;
        await using (var spool = Open(options))
        {
            long lastHead = 0;
            for (ulong id = 1; id <= 100; id++)
            {
                var body = MakeBody(RandomMessage(2000, (int)id));
                (lastHead, _) = await spool.AppendMessageAsync(id, MakeEnvelope(1), body);
                body.Release();
                if (id < 100)
                    await spool.AppendStatusAsync(Status(id, StatusFlags.Done, 1, (0, RecipientState.Delivered)));
            }
            await spool.WaitForCommitAsync(lastHead);
            keepHead = lastHead;
            spool.TruncateUntil(keepHead);
            Assert.Equal(keepHead, spool.BeginAddress);
            await spool.WaitForCommitAsync(spool.TailAddress - 1);
        }
        await using (var spool = Open(options))
        {
            Assert.True(spool.BeginAddress >= keepHead, $"begin {spool.BeginAddress} should have moved to {keepHead}");
            var recovered = SpoolRecovery.Recover(spool, new QueueIdGenerator(), Log.Null);
            Assert.Equal(100UL, Assert.Single(recovered).Id);
        }
    }

    private static StatusRecord Status(ulong id, StatusFlags flags, int attempts, params (ushort, RecipientState)[] changes) => new()
    {
        Id = id,
        TimeUnixMs = 1_700_000_000_000,
        Flags = flags,
        Attempts = attempts,
        NextAttemptUnixMs = 1_700_000_060_000,
        Changes = changes,
    };
}

public sealed class SpoolDsnFieldsTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "nr-spool-dsn-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        try { Directory.Delete(_dir, recursive: true); } catch (DirectoryNotFoundException) { }
    }

    [Fact]
    public async Task Dsn_parameters_and_the_authenticated_user_survive_the_spool()
    {
        var envelope = new Envelope
        {
            Sender = "a@example.com"u8.ToArray(),
            Recipients = ["b@example.org"u8.ToArray(), "c@example.org"u8.ToArray()],
            ClientAddress = "::1",
            HeloName = "h",
            ArrivalUnixMs = 1,
            Flags = EnvelopeFlags.ReturnHeadersOnly | EnvelopeFlags.Authenticated,
            EnvelopeId = "env-42"u8.ToArray(),
            AuthenticatedUser = "alice",
            Notify = [DsnNotify.Failure | DsnNotify.Delay, DsnNotify.Never],
            OriginalRecipients = ["rfc822;B@example.org"u8.ToArray(), null],
        };
        long head;
        await using (var spool = SpoolLog.Open(_dir, new NativeRelay.Config.SpoolOptions(), NativeRelay.Telemetry.Log.Null))
        {
            var body = NativeRelay.Message.MessageBuffer.Rent();
            body.Write("Subject: x\r\n\r\nbody\r\n"u8);
            (head, _) = await spool.AppendMessageAsync(9, envelope, body);
            await spool.WaitForCommitAsync(head);
            body.Release();
        }
        await using (var spool = SpoolLog.Open(_dir, new NativeRelay.Config.SpoolOptions(), NativeRelay.Telemetry.Log.Null))
        {
            var recovered = Assert.Single(SpoolRecovery.Recover(spool, new QueueIdGenerator(), NativeRelay.Telemetry.Log.Null));
            // Recovery does not hold envelopes (a big backlog would cost them all in memory); the head has them.
            Assert.Null(recovered.Envelope);
            var e = await spool.ReadEnvelopeAsync(recovered.Id, recovered.HeadAddress);
            Assert.Equal(envelope.Flags, e.Flags);
            Assert.Equal("env-42"u8.ToArray(), e.EnvelopeId);
            Assert.Equal("alice", e.AuthenticatedUser);
            Assert.Equal(envelope.Notify, e.Notify);
            Assert.Equal("rfc822;B@example.org"u8.ToArray(), e.OriginalRecipients![0]);
            Assert.Null(e.OriginalRecipients[1]);
        }
    }
}
