using System.Buffers;
using System.Diagnostics;

namespace NativeRelay.Message;

/// <summary>
/// The bytes of one message in pooled blocks: the receiving session writes into it (it is an
/// <see cref="IBufferWriter{T}"/>), the spool copies it into the log, and a delivery loop sends it
/// from the same blocks. So a message is held in memory once, and no allocation grows with its
/// size. Reference counted: the session and the delivery hand-off each hold a reference, and the
/// blocks go back to the pool when the last one is released.
/// </summary>
public sealed class MessageBuffer : IBufferWriter<byte>
{
    // The first block holds a typical message with its trace header (so a 1 KiB message costs
    // 8 KiB of pooled memory while queued); later blocks are large so a 25 MiB one is ~400 blocks.
    public const int FirstBlockSize = 8 * 1024;
    public const int BlockSize = 64 * 1024;

    private byte[][] _blocks = new byte[4][];
    private int _blockCount;
    private int _lastBlockUsed;   // bytes used in the last block
    private long _length;
    private int _references = 1;

    public long Length => _length;

    /// <summary>Number of bytes at the front that were reserved for a header written later.</summary>
    public int Reserved { get; private set; }

    public static MessageBuffer Rent() => new();

    /// <summary>Starts the buffer with <paramref name="count"/> bytes to be filled later through <see cref="GetReservedSpan"/>.</summary>
    /// <remarks>
    /// Up to <see cref="MaxReserve"/>. A reserve above half the first block (a relay that signs with
    /// several large keys) gets a first block big enough to keep half of it for the message, still
    /// from the shared pool.
    /// </remarks>
    public void Reserve(int count)
    {
        Debug.Assert(_length == 0 && count <= MaxReserve);
        if (count > FirstBlockSize / 2 && _blockCount == 0)
        {
            _blocks[_blockCount++] = ArrayPool<byte>.Shared.Rent(count + FirstBlockSize / 2);
            _lastBlockUsed = 0;
        }
        GetSpan(count);
        Advance(count);
        Reserved = count;
    }

    /// <summary>The largest reserve: its first block stays below <see cref="BlockSize"/>, so it goes back to the shared pool.</summary>
    public const int MaxReserve = BlockSize / 2 - FirstBlockSize / 2;

    /// <summary>
    /// Puts <paramref name="header"/> just before <see cref="Start"/> in the unused reserved front
    /// (a DKIM-Signature above the trace headers). False, and nothing changed, when it does not fit.
    /// </summary>
    public bool TryPrepend(ReadOnlySpan<byte> header)
    {
        if (header.Length > Start)
            return false;
        header.CopyTo(_blocks[0].AsSpan(Start - header.Length));
        Start -= header.Length;
        return true;
    }

    /// <summary>
    /// A new buffer with the same content and <paramref name="front"/> free bytes before it, for a
    /// header that did not fit the reserve (<see cref="TryPrepend"/>): rare, so a copy is acceptable.
    /// </summary>
    public MessageBuffer CopyWithFront(int front)
    {
        var copy = Rent();
        copy.Reserve(Math.Min(front, MaxReserve));
        copy.TrimReservedFront(copy.Reserved);
        foreach (var segment in GetSegments())
            copy.Write(segment.Span);
        return copy;
    }

    /// <summary>The reserved front bytes, to fill once their content is known (the Received header).</summary>
    public Span<byte> GetReservedSpan() => _blocks[0].AsSpan(0, Reserved);

    /// <summary>
    /// Shrinks the reserved area to the bytes actually used at its end, so that the message starts
    /// at <see cref="Start"/>. Writers fill reserved space right-aligned: <c>[unused | header]</c>.
    /// </summary>
    public int Start { get; private set; }

    public void TrimReservedFront(int unused)
    {
        Debug.Assert(unused <= Reserved);
        Start = unused;
    }

    /// <summary>The message's length from <see cref="Start"/>.</summary>
    public long ContentLength => _length - Start;

    public void Advance(int count)
    {
        _lastBlockUsed += count;
        _length += count;
        Debug.Assert(_lastBlockUsed <= _blocks[_blockCount - 1].Length);
    }

    public Memory<byte> GetMemory(int sizeHint = 0)
    {
        EnsureSpace(sizeHint);
        return _blocks[_blockCount - 1].AsMemory(_lastBlockUsed);
    }

    public Span<byte> GetSpan(int sizeHint = 0)
    {
        EnsureSpace(sizeHint);
        return _blocks[_blockCount - 1].AsSpan(_lastBlockUsed);
    }

    private void EnsureSpace(int sizeHint)
    {
        if (sizeHint > BlockSize)
            throw new ArgumentOutOfRangeException(nameof(sizeHint), "larger than a block");
        if (_blockCount > 0 && _blocks[_blockCount - 1].Length - _lastBlockUsed >= Math.Max(sizeHint, 1))
            return;
        if (_blockCount == _blocks.Length)
            Array.Resize(ref _blocks, _blocks.Length * 2);
        int size = _blockCount == 0 && sizeHint <= FirstBlockSize ? FirstBlockSize : BlockSize;
        _blocks[_blockCount++] = size == BlockSize ? PinnedBlockPool.Shared.Rent() : ArrayPool<byte>.Shared.Rent(size);
        _lastBlockUsed = 0;
    }

    /// <summary>Appends bytes, crossing blocks as needed.</summary>
    public void Write(ReadOnlySpan<byte> data)
    {
        while (!data.IsEmpty)
        {
            var span = GetSpan(1);
            int n = Math.Min(span.Length, data.Length);
            data[..n].CopyTo(span);
            Advance(n);
            data = data[n..];
        }
    }

    /// <summary>The message content from <see cref="Start"/>, as a sequence of block slices.</summary>
    public SegmentEnumerator GetSegments(long offset = 0) => new(this, Start + offset);

    /// <summary>Copies the content from <paramref name="offset"/> into <paramref name="destination"/>; returns bytes copied.</summary>
    public int CopyTo(long offset, Span<byte> destination)
    {
        int copied = 0;
        foreach (var segment in GetSegments(offset))
        {
            int n = Math.Min(segment.Length, destination.Length - copied);
            segment.Span[..n].CopyTo(destination[copied..]);
            copied += n;
            if (copied == destination.Length)
                break;
        }
        return copied;
    }

    /// <summary>Writes over content bytes from <paramref name="offset"/> (crossing blocks), e.g. to rename a header field in place.</summary>
    public void Overwrite(long offset, ReadOnlySpan<byte> bytes)
    {
        if (offset < 0 || offset + bytes.Length > ContentLength)
            throw new ArgumentOutOfRangeException(nameof(offset));
        foreach (var segment in GetSegments(offset))
        {
            int n = Math.Min(segment.Length, bytes.Length);
            bytes[..n].CopyTo(System.Runtime.InteropServices.MemoryMarshal.AsMemory(segment).Span);
            bytes = bytes[n..];
            if (bytes.IsEmpty)
                return;
        }
    }

    /// <summary>
    /// Removes <paramref name="length"/> bytes at <paramref name="offset"/> after the reserved front
    /// (a header field the relay takes out, such as the pool header), before the front is filled:
    /// the bytes before them move up by that much and the reserved front grows by it, so nothing
    /// after them moves. Only within the first block; false, and nothing changed, otherwise.
    /// </summary>
    public bool TryRemoveBeforeFill(int offset, int length)
    {
        if (Start != 0 || _blockCount == 0 || offset < 0 || length <= 0)
            return false;
        int from = Reserved + offset;
        int end = from + length;
        int used = _blockCount == 1 ? _lastBlockUsed : _blocks[0].Length;
        if (end > used)
            return false;
        var block = _blocks[0].AsSpan();
        block[Reserved..from].CopyTo(block[(Reserved + length)..end]); // overlapping: CopyTo moves like memmove
        Reserved += length;
        return true;
    }

    /// <summary>The first contiguous bytes of the content (at most one block), for header scans.</summary>
    public ReadOnlySpan<byte> FirstBlockContent()
    {
        if (_blockCount == 0)
            return default;
        int end = _blockCount == 1 ? _lastBlockUsed : _blocks[0].Length;
        return _blocks[0].AsSpan(Start, end - Start);
    }

    public MessageBuffer AddReference()
    {
        Interlocked.Increment(ref _references);
        return this;
    }

    public void Release()
    {
        int left = Interlocked.Decrement(ref _references);
        Debug.Assert(left >= 0);
        if (left != 0)
            return;
        for (int i = 0; i < _blockCount; i++)
        {
            ReturnBlock(_blocks[i]);
            _blocks[i] = null!;
        }
        _blockCount = 0;
        _length = 0;
    }

    // The first block (FirstBlockSize) comes from the shared pool: a small message is gone long
    // before a GC could promote it. The big ones are pinned (PinnedBlockPool) so they are never copied.
    private static void ReturnBlock(byte[] block)
    {
        if (block.Length == BlockSize)
            PinnedBlockPool.Shared.Return(block);
        else
            ArrayPool<byte>.Shared.Return(block);
    }

    /// <summary>Drops the content so the buffer can take a new message (owner-only, reference count 1).</summary>
    public void Reset()
    {
        Debug.Assert(Volatile.Read(ref _references) == 1);
        for (int i = 1; i < _blockCount; i++)
        {
            ReturnBlock(_blocks[i]);
            _blocks[i] = null!;
        }
        _blockCount = Math.Min(_blockCount, 1);
        _lastBlockUsed = 0;
        _length = 0;
        Reserved = 0;
        Start = 0;
    }

    public struct SegmentEnumerator
    {
        private readonly MessageBuffer _buffer;
        private long _skip;
        private int _index;

        internal SegmentEnumerator(MessageBuffer buffer, long skip)
        {
            _buffer = buffer;
            _skip = skip;
            _index = -1;
            Current = default;
        }

        public ReadOnlyMemory<byte> Current { get; private set; }

        public SegmentEnumerator GetEnumerator() => this;

        public bool MoveNext()
        {
            while (++_index < _buffer._blockCount)
            {
                int used = _index == _buffer._blockCount - 1 ? _buffer._lastBlockUsed : _buffer._blocks[_index].Length;
                if (_skip >= used)
                {
                    _skip -= used;
                    continue;
                }
                Current = _buffer._blocks[_index].AsMemory((int)_skip, used - (int)_skip);
                _skip = 0;
                return true;
            }
            return false;
        }
    }
}
