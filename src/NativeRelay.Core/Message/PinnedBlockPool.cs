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
/// The bound covers what steady 100 KiB traffic holds at once: the delivery queue keeps the bodies
/// of up to 256 messages per destination in memory, and inflow control keeps about that many
/// waiting (delivery.inFlowBacklog), two blocks each. With a bound of 128 blocks (8 MiB), the
/// blocks beyond it were dropped and new ones allocated for every other message; dropped pinned
/// blocks are only collected by a full collection, so under a sustained 100 KiB load the heap grew
/// by ~35 MB a second and the relay's resident size reached 230-280 MiB (perf/RESULTS.md).
/// </remarks>
internal static class PinnedBlockPool
{
    /// <summary>Blocks kept for reuse under load: 40 MiB of 64 KiB blocks.</summary>
    internal const int Kept = 640;

    /// <summary>Blocks still kept after <see cref="Trim"/>: 8 MiB.</summary>
    internal const int KeptWhenQuiet = 128;

    private static readonly byte[][] Stack = new byte[Kept][];
    private static readonly object Gate = new();
    private static int _count;

    /// <summary>Blocks in the pool now (for tests and diagnostics).</summary>
    internal static int Count
    {
        get
        {
            lock (Gate)
                return _count;
        }
    }

    /// <summary>
    /// Drops the blocks beyond <see cref="KeptWhenQuiet"/>, for a full collection to give back;
    /// called when delivery has gone quiet, just before that collection.
    /// </summary>
    public static void Trim()
    {
        lock (Gate)
        {
            while (_count > KeptWhenQuiet)
                Stack[--_count] = null!;
        }
    }

    public static byte[] Rent()
    {
        lock (Gate)
        {
            if (_count > 0)
            {
                var block = Stack[--_count];
                Stack[_count] = null!;
                return block;
            }
        }
        return GC.AllocateUninitializedArray<byte>(MessageBuffer.BlockSize, pinned: true);
    }

    public static void Return(byte[] block)
    {
        lock (Gate)
        {
            if (_count < Kept)
                Stack[_count++] = block;
        }
    }
}
