namespace NativeRelay.Message;

/// <summary>
/// The large blocks of <see cref="MessageBuffer"/>, on the pinned object heap. A big message's
/// blocks live for the whole transaction and beyond (until delivery), so blocks on the ordinary
/// heap are promoted by copying: a 50 MiB message briefly cost twice its size in memory (measured:
/// 126 MiB peak RSS for one 50 MiB message, 96 MiB with pinned blocks). Pinned blocks are never
/// moved or copied. Returned blocks are kept up to a bound, so steady traffic reuses them instead
/// of growing the pinned heap, and <see cref="Trim"/> gives the surplus back once delivery has
/// gone quiet, so a burst of big messages does not leave its whole size parked in the pool.
/// </summary>
/// <remarks>
/// The bound covers what steady 100 KiB traffic to one destination holds at once: the delivery
/// queue keeps the bodies of up to 256 messages per destination in memory, and inflow control
/// (delivery.inFlowBacklog) holds the sessions back once about that many wait for their first
/// attempt, so some 270 messages, two blocks each. With a bound of 128 blocks (8 MiB), the blocks
/// beyond it were dropped and new ones allocated for every other message; dropped pinned blocks
/// are only collected by a full collection, so under a sustained 100 KiB load the heap grew by
/// 20-30 MB a second and the relay's resident size reached 274 MiB (perf/RESULTS.md).
/// </remarks>
internal sealed class PinnedBlockPool
{
    /// <summary>The pool every <see cref="MessageBuffer"/> uses.</summary>
    public static readonly PinnedBlockPool Shared = new();

    /// <summary>Blocks kept for reuse under load: 40 MiB of 64 KiB blocks.</summary>
    internal const int Kept = 640;

    /// <summary>Blocks still kept after <see cref="Trim"/>: 8 MiB.</summary>
    internal const int KeptWhenQuiet = 128;

    private readonly byte[][] _stack = new byte[Kept][];
    private readonly object _gate = new();
    private int _count;

    /// <summary>Blocks in the pool now (for tests and diagnostics).</summary>
    internal int Count
    {
        get
        {
            lock (_gate)
                return _count;
        }
    }

    /// <summary>
    /// Drops the blocks beyond <see cref="KeptWhenQuiet"/>, for a full collection to give back;
    /// called when delivery has gone quiet, just before that collection. Only blocks that were
    /// returned are in the pool, so none in use can be dropped.
    /// </summary>
    public void Trim()
    {
        lock (_gate)
        {
            while (_count > KeptWhenQuiet)
                _stack[--_count] = null!;
        }
    }

    public byte[] Rent()
    {
        lock (_gate)
        {
            if (_count > 0)
            {
                var block = _stack[--_count];
                _stack[_count] = null!;
                return block;
            }
        }
        return GC.AllocateUninitializedArray<byte>(MessageBuffer.BlockSize, pinned: true);
    }

    public void Return(byte[] block)
    {
        lock (_gate)
        {
            if (_count < Kept)
                _stack[_count++] = block;
        }
    }
}
