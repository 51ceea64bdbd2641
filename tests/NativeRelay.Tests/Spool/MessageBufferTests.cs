using NativeRelay.Message;

namespace NativeRelay.Tests.Spool;

public class MessageBufferTests
{
    [Fact]
    public void Content_spans_blocks_and_copies_back_exactly()
    {
        var data = new byte[200_000];
        new Random(3).NextBytes(data);
        var buffer = MessageBuffer.Rent();
        buffer.Write(data.AsSpan(0, 5));
        buffer.Write(data.AsSpan(5));
        Assert.Equal(data.Length, buffer.ContentLength);
        var copy = new byte[data.Length];
        Assert.Equal(data.Length, buffer.CopyTo(0, copy));
        Assert.Equal(data, copy);

        var tail = new byte[1000];
        buffer.CopyTo(data.Length - 1000, tail);
        Assert.Equal(data.AsSpan(data.Length - 1000).ToArray(), tail);

        long total = 0;
        foreach (var segment in buffer.GetSegments())
            total += segment.Length;
        Assert.Equal(data.Length, total);
        buffer.Release();
    }

    [Fact]
    public void Reserved_front_holds_a_header_written_after_the_body()
    {
        var buffer = MessageBuffer.Rent();
        buffer.Reserve(100);
        buffer.Write("body\r\n"u8);
        var header = "X-Test: 1\r\n"u8;
        var reserved = buffer.GetReservedSpan();
        header.CopyTo(reserved[(reserved.Length - header.Length)..]);
        buffer.TrimReservedFront(reserved.Length - header.Length);
        var copy = new byte[buffer.ContentLength];
        buffer.CopyTo(0, copy);
        Assert.Equal("X-Test: 1\r\nbody\r\n", System.Text.Encoding.ASCII.GetString(copy));
        buffer.Release();
    }

    [Fact]
    public void The_block_pool_keeps_a_steady_100_KiB_load_s_blocks_and_gives_the_surplus_back_when_trimmed()
    {
        // About 270 messages of 100 KiB in memory at once (the delivery queue's 256 bodies, the
        // sessions'), two 64 KiB blocks each: after a wave of 300 all of them are kept for the
        // next; beyond the bound they are dropped. A pool of its own: the shared one is trimmed
        // by any delivery scheduler a test beside this one runs.
        var pool = new PinnedBlockPool();
        var blocks = Enumerable.Range(0, 600).Select(_ => pool.Rent()).ToList();
        Assert.All(blocks, b => Assert.Equal(MessageBuffer.BlockSize, b.Length));
        foreach (var block in blocks)
            pool.Return(block);
        Assert.Equal(600, pool.Count);
        Assert.Same(blocks[^1], pool.Rent()); // reused, not allocated
        pool.Return(blocks[^1]);

        for (int i = 0; i < 100; i++)
            pool.Return(GC.AllocateUninitializedArray<byte>(MessageBuffer.BlockSize, pinned: true));
        Assert.Equal(PinnedBlockPool.Kept, pool.Count);

        pool.Trim();
        Assert.Equal(PinnedBlockPool.KeptWhenQuiet, pool.Count);
    }
}
