using System.Runtime.InteropServices;
using FASTER.core;
using NativeRelay.Config;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Tests.Spool;

/// <summary>
/// The spool's own log device on real files: what is written reads back, the window past the
/// tail is prepared with zeros and never lands on a record (even with writes racing the fill),
/// and FasterLog recovers over a segment whose tail is followed by prepared zeros.
/// </summary>
public sealed class LogFileDeviceTests : IDisposable
{
    private const int Sector = LogSegmentFile.DirectAlignment;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "nr-logdevice-" + Guid.NewGuid().ToString("N"));
    private readonly List<nint> _buffers = new();

    public LogFileDeviceTests() => Directory.CreateDirectory(_dir);

    public unsafe void Dispose()
    {
        foreach (var b in _buffers)
            NativeMemory.AlignedFree((void*)b);
        try { Directory.Delete(_dir, recursive: true); } catch (DirectoryNotFoundException) { }
    }

    /// <summary>A sector-aligned native buffer filled with <paramref name="fill"/> (O_DIRECT needs aligned memory).</summary>
    private unsafe Span<byte> Buffer(int length, byte fill, out nint address)
    {
        address = (nint)NativeMemory.AlignedAlloc((nuint)length, Sector);
        _buffers.Add(address);
        var span = new Span<byte>((void*)address, length);
        span.Fill(fill);
        return span;
    }

    private unsafe byte[] ReadBack(LogSegmentFile file, long offset, int length)
    {
        Buffer(length, 0xEE, out var target);
        int read = file.Read(target, offset, length);
        return new Span<byte>((void*)target, read).ToArray();
    }

    [Fact]
    public unsafe void Small_writes_read_back_and_the_window_past_them_is_prepared_with_zeros()
    {
        using var file = new LogSegmentFile(Path.Combine(_dir, "queue.log.0"), 8L << 20);
        Buffer(8192, 0x5A, out var record);
        file.Write(record, 0, 8192);
        Buffer(LogSegmentFile.MaxFillBytes, 0, out var zeros);
        var zeroSpan = new ReadOnlySpan<byte>((void*)zeros, LogSegmentFile.MaxFillBytes);

        Assert.True(file.NeedsPreparing(2L << 20), "nothing is prepared yet");
        int steps = 0;
        while (file.PrepareStep(2L << 20, zeroSpan))
            Assert.True(++steps < 100, "preparation stops once the window is full");
        Assert.False(file.NeedsPreparing(2L << 20), "the window is full");

        Assert.True(steps >= 2, $"the window was filled in growing pieces ({steps} steps)");
        Assert.True(file.PreparedEnd >= 8192 + (2L << 20), $"prepared to {file.PreparedEnd}");
        Assert.True(new FileInfo(Path.Combine(_dir, "queue.log.0")).Length >= file.PreparedEnd);
        Assert.All(ReadBack(file, 0, 8192), b => Assert.Equal(0x5A, b));
        Assert.All(ReadBack(file, 8192, 1 << 20), b => Assert.Equal(0, b));

        // A commit that rewrites the tail and moves on lands in prepared blocks and reads back.
        Buffer(4096, 0x33, out var next);
        file.Write(next, 8192, 4096);
        Assert.All(ReadBack(file, 8192, 4096), b => Assert.Equal(0x33, b));
        Assert.All(ReadBack(file, 0, 8192), b => Assert.Equal(0x5A, b));

        // Once the tail has eaten into more than half the window, the preparer is wanted again.
        Assert.False(file.NeedsPreparing(2L << 20));
        Buffer(64 * 1024, 0x44, out var far);
        file.Write(far, file.PreparedEnd - (1L << 20), 64 * 1024);
        Assert.True(file.NeedsPreparing(2L << 20), "less than half the window is left ahead of the tail");
    }

    [Fact]
    public unsafe void Preparation_stops_at_the_end_of_the_segment()
    {
        long length = 256 * 1024;
        using var file = new LogSegmentFile(Path.Combine(_dir, "queue.log.0"), length);
        Buffer(LogSegmentFile.MaxFillBytes, 0, out var zeros);
        int steps = 0;
        while (file.PrepareStep(4L << 20, new ReadOnlySpan<byte>((void*)zeros, LogSegmentFile.MaxFillBytes)))
            Assert.True(++steps < 100, "preparation stops at the end of the segment");
        Assert.Equal(length, file.PreparedEnd);
        Assert.Equal(length, new FileInfo(Path.Combine(_dir, "queue.log.0")).Length);
        // A segment smaller than the window, prepared to its end: writes near its end must not
        // wake the preparer for nothing.
        Assert.False(file.NeedsPreparing(4L << 20));
        Buffer(4096, 0x21, out var tail);
        file.Write(tail, length - 4096, 4096);
        Assert.False(file.NeedsPreparing(4L << 20));
    }

    [Fact]
    public unsafe void Unaligned_and_big_writes_go_through_the_page_cache_and_read_back()
    {
        using var file = new LogSegmentFile(Path.Combine(_dir, "queue.log.3"), 8L << 20);
        Buffer(600, 0x41, out var small);
        file.Write(small + 7, 100, 300);              // unaligned pointer, offset and length
        Buffer(256 * 1024, 0x42, out var big);
        file.Write(big, 4096, 256 * 1024);            // aligned, but bigger than a commit's tail
        Assert.All(ReadBack(file, 100, 300), b => Assert.Equal(0x41, b));
        Assert.All(ReadBack(file, 4096, 256 * 1024), b => Assert.Equal(0x42, b));
        Assert.Empty(ReadBack(file, 64L << 20, 4096)); // past the end of the file: nothing
    }

    [Fact]
    public unsafe void A_zero_fill_racing_the_writes_never_lands_on_a_record()
    {
        // The log's tail moves on in small commits, each rewriting the last sector it touched, as
        // FasterLog's group commits do, while the preparer fills right behind it with a small
        // window, so fills and writes overlap again and again. Every record must survive.
        const int records = 1500;
        const int recordSize = 3 * Sector;
        using var file = new LogSegmentFile(Path.Combine(_dir, "queue.log.0"), 64L << 20);
        Buffer(LogSegmentFile.MaxFillBytes, 0, out var zeros);
        Buffer(records * recordSize + Sector, 0, out var source);
        var expected = new Span<byte>((void*)source, records * recordSize);
        for (int i = 0; i < records; i++)
            expected.Slice(i * recordSize, recordSize).Fill((byte)(i % 250 + 1));

        using var done = new CancellationTokenSource();
        int fills = 0;
        var preparer = new Thread(() =>
        {
            var span = new ReadOnlySpan<byte>((void*)zeros, LogSegmentFile.MaxFillBytes);
            while (!done.IsCancellationRequested)
            {
                if (file.PrepareStep(LogSegmentFile.MinFillBytes * 2, span))
                    Interlocked.Increment(ref fills);
                else
                    Thread.Yield();
            }
        });
        preparer.Start();
        try
        {
            for (int i = 0; i < records; i++)
            {
                // The commit writes from the start of the sector where the previous one ended.
                long end = (long)(i + 1) * recordSize;
                long start = i == 0 ? 0 : (long)i * recordSize - Sector;
                file.Write(source + (nint)start, start, (int)(end - start));
            }
        }
        finally
        {
            done.Cancel();
            Assert.True(preparer.Join(TimeSpan.FromSeconds(60)), "the preparer stopped");
        }

        Assert.True(fills > 10, $"the preparer filled while the log was written ({fills} fills)");
        var back = ReadBack(file, 0, records * recordSize);
        Assert.Equal(records * recordSize, back.Length);
        for (int i = 0; i < records; i++)
        {
            int bad = back.AsSpan(i * recordSize, recordSize).IndexOfAnyExcept((byte)(i % 250 + 1));
            Assert.True(bad < 0, $"record {i} was overwritten at byte {bad}");
        }
    }

    [Fact]
    public async Task FasterLog_on_the_device_recovers_its_records_over_prepared_zeros()
    {
        string prefix = Path.Combine(_dir, "queue.log");
        var entries = Enumerable.Range(0, 2000).Select(i => Enumerable.Repeat((byte)(i % 200 + 1), 100 + i % 300).ToArray()).ToList();
        long tail;
        using (var device = new LogFileDevice(prefix))
        using (var log = new FasterLog(Settings(device)))
        {
            foreach (var entry in entries)
            {
                log.Enqueue(entry);
                if (log.TailAddress % 7 == 0)
                    await log.CommitAsync();
            }
            await log.CommitAsync();
            tail = log.TailAddress;
            // Let the preparer get ahead of the tail, so recovery reads past it into zeros.
            for (int i = 0; i < 200 && device.NewestPreparedEnd < tail + LogSegmentFile.MinFillBytes; i++)
                await Task.Delay(10);
            Assert.True(device.NewestPreparedEnd >= tail + LogSegmentFile.MinFillBytes,
                $"blocks were prepared past the tail {tail} (to {device.NewestPreparedEnd})");
        }

        using (var device = new LogFileDevice(prefix))
        using (var log = new FasterLog(Settings(device)))
        {
            Assert.Equal(tail, log.TailAddress);
            var read = new List<byte[]>();
            using (var iterator = log.Scan(log.BeginAddress, log.TailAddress))
                while (iterator.GetNext(out byte[] entry, out _, out _))
                    read.Add(entry);
            Assert.Equal(entries.Count, read.Count);
            for (int i = 0; i < entries.Count; i++)
                Assert.True(entries[i].AsSpan().SequenceEqual(read[i]), $"entry {i} differs");

            // And the log goes on where it stopped.
            log.Enqueue(new byte[] { 1, 2, 3 });
            await log.CommitAsync();
            Assert.True(log.TailAddress > tail);
        }
    }

    private static FasterLogSettings Settings(IDevice device) => new()
    {
        LogDevice = device,
        PageSizeBits = 16,
        MemorySizeBits = 18,
        SegmentSizeBits = 22,
        LogChecksum = LogChecksumType.PerEntry,
        FastCommitMode = true,
        TryRecoverLatest = true,
        LogCommitDir = Path.Combine(Path.GetDirectoryName(((StorageDeviceBase)device).FileName)!, "commits"),
    };

    [Fact]
    public async Task A_spool_opened_with_direct_writes_off_uses_the_managed_device_and_recovers()
    {
        using var kit = new SpoolTestKit(new SpoolOptions { DirectWrites = false });
        var bytes = SpoolTestKit.Message(5000, 7);
        long head;
        await using (var spool = kit.Open())
            (head, _) = await SpoolTestKit.AppendCommittedAsync(spool, 1, bytes);

        await using (var spool = kit.Open())
        {
            var recovered = SpoolRecovery.Recover(spool, new QueueIdGenerator(), Log.Null);
            Assert.Equal(new ulong[] { 1 }, recovered.Select(m => m.Id).ToArray());
            var (_, body) = await spool.ReadMessageAsync(head);
            Assert.Equal(bytes.Length, body.ContentLength);
            body.Release();
        }
        // FASTER's managed device never writes past the tail: the file ends where the log does.
        long length = new FileInfo(Path.Combine(kit.Directory, "queue.log.0")).Length;
        Assert.True(length < 64 * 1024, $"no prepared window with direct writes off ({length} bytes)");
    }
}
