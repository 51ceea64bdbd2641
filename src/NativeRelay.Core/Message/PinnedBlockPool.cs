namespace NativeRelay.Message;

/// <summary>
/// The large blocks of <see cref="MessageBuffer"/>, on the pinned object heap. A big message's
/// blocks live for the whole transaction and beyond (until delivery), so blocks on the ordinary
/// heap are promoted by copying: a 50 MiB message briefly cost twice its size in memory (measured:
/// 126 MiB peak RSS for one 50 MiB message, 96 MiB with pinned blocks). Pinned blocks are never
/// moved or copied. Returned blocks are kept up to a bound, so steady traffic of 100 KiB messages
/// reuses them instead of growing the pinned heap, and a burst of big messages does not leave
/// its whole size parked in the pool afterwards.
/// </summary>
internal static class PinnedBlockPool
{
    /// <summary>Blocks kept for reuse: 8 MiB of 64 KiB blocks.</summary>
    private const int Kept = 128;

    private static readonly byte[][] Stack = new byte[Kept][];
    private static readonly object Gate = new();
    private static int _count;

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
