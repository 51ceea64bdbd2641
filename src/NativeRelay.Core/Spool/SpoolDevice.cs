using FASTER.core;

namespace NativeRelay.Spool;

/// <summary>
/// The log device (FASTER's own, which opens its segment files O_SYNC), with one rule added:
/// a segment is deleted only once the commit metadata on disk no longer points into it
/// (<see cref="SpoolCommitFile.DurableBegin"/>). FASTER deletes segments right after asking for
/// the metadata write that moves the begin address; if that write failed (a full disk), the
/// deletion waits for the next truncation after a write that succeeds, so recovery never looks
/// for a segment that is gone.
/// </summary>
internal sealed class SpoolDevice(IDevice inner, SpoolCommitFile commits) : IDevice
{
    private int _bits;

    public uint SectorSize => inner.SectorSize;
    public string FileName => inner.FileName;
    public long Capacity => inner.Capacity;
    public long SegmentSize => inner.SegmentSize;
    public int StartSegment => inner.StartSegment;
    public int EndSegment => inner.EndSegment;

    public int ThrottleLimit
    {
        get => inner.ThrottleLimit;
        set => inner.ThrottleLimit = value;
    }

    public void Initialize(long segmentSize, LightEpoch epoch = null!, bool omitSegmentIdFromFilename = false)
    {
        inner.Initialize(segmentSize, epoch, omitSegmentIdFromFilename);
        _bits = System.Numerics.BitOperations.Log2((ulong)segmentSize);
    }

    public bool Throttle() => inner.Throttle();
    public bool TryComplete() => inner.TryComplete();
    public long GetFileSize(int segment) => inner.GetFileSize(segment);
    public void Reset() => inner.Reset();

    public void WriteAsync(IntPtr sourceAddress, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context) =>
        inner.WriteAsync(sourceAddress, destinationAddress, numBytesToWrite, callback, context);

    public void ReadAsync(ulong sourceAddress, IntPtr destinationAddress, uint readLength, DeviceIOCompletionCallback callback, object context) =>
        inner.ReadAsync(sourceAddress, destinationAddress, readLength, callback, context);

    public void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context) =>
        inner.WriteAsync(sourceAddress, segmentId, destinationAddress, numBytesToWrite, callback, context);

    public void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength, DeviceIOCompletionCallback callback, object context) =>
        inner.ReadAsync(segmentId, sourceAddress, destinationAddress, readLength, callback, context);

    /// <summary>Segments below this one may be deleted.</summary>
    private int DeletableUntil => (int)(commits.DurableBegin >> _bits);

    public void TruncateUntilAddressAsync(long toAddress, AsyncCallback callback, IAsyncResult result) =>
        TruncateUntilSegmentAsync((int)(toAddress >> _bits), callback, result);

    public void TruncateUntilAddress(long toAddress) => TruncateUntilSegment((int)(toAddress >> _bits));

    public void TruncateUntilSegmentAsync(int toSegment, AsyncCallback callback, IAsyncResult result) =>
        inner.TruncateUntilSegmentAsync(Math.Min(toSegment, DeletableUntil), callback, result);

    public void TruncateUntilSegment(int toSegment) => inner.TruncateUntilSegment(Math.Min(toSegment, DeletableUntil));

    public void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result)
    {
        if (segment < DeletableUntil)
            inner.RemoveSegmentAsync(segment, callback, result);
        else
            callback(result);
    }

    public void RemoveSegment(int segment)
    {
        if (segment < DeletableUntil)
            inner.RemoveSegment(segment);
    }

    public void Dispose() => inner.Dispose();
}
