using FASTER.core;

namespace NativeRelay.Spool;

/// <summary>
/// The log device (FASTER's own, which opens its segment files O_SYNC), with one rule added:
/// a segment is deleted only once the commit metadata on disk no longer points into it
/// (<see cref="SpoolCommitFile.DurableBegin"/>). FASTER deletes segments right after asking for
/// the metadata write that moves the begin address; if that write failed (a full disk), the
/// deletion waits for the next truncation after a write that succeeds, so recovery never looks
/// for a segment that is gone.
///
/// And one guard: FASTER starts a truncation on a pool thread and does not wait for it
/// (<c>Task.Run(() => device.TruncateUntilAddress(..))</c> after a commit moved the begin address),
/// so a segment's removal can still be running when the log is closed. The managed device's
/// removal and its Dispose then both dispose the same per-segment handle pool, and two concurrent
/// disposals of that pool can block one of them forever (a spool that never closes: a shutdown
/// that hangs, a reopen after a disk error that never accepts mail again). Here Dispose waits for
/// removals in flight, and a removal that arrives after Dispose leaves the files alone.
/// </summary>
internal sealed class SpoolDevice(IDevice inner, SpoolCommitFile commits) : IDevice
{
    /// <summary>How long Dispose waits for a removal in flight before it closes the device regardless.</summary>
    internal TimeSpan RemovalDrainTimeout { get; init; } = TimeSpan.FromSeconds(10);

    private readonly object _gate = new();
    private int _removals; // truncations and segment removals running in the inner device
    private bool _disposed;
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
        RemoveAsync(done => inner.TruncateUntilSegmentAsync(Math.Min(toSegment, DeletableUntil), done, result), callback, result);

    public void TruncateUntilSegment(int toSegment) => Remove(() => inner.TruncateUntilSegment(Math.Min(toSegment, DeletableUntil)));

    public void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result)
    {
        if (segment >= DeletableUntil)
            callback(result);
        else
            RemoveAsync(done => inner.RemoveSegmentAsync(segment, done, result), callback, result);
    }

    /// <summary>Starts an asynchronous removal in the inner device, counted until it calls back.</summary>
    private void RemoveAsync(Action<AsyncCallback> start, AsyncCallback callback, IAsyncResult result)
    {
        if (!BeginRemoval())
        {
            callback(result);
            return;
        }
        try
        {
            start(r =>
            {
                EndRemoval();
                callback(r);
            });
        }
        catch
        {
            EndRemoval();
            throw;
        }
    }

    public void RemoveSegment(int segment)
    {
        if (segment < DeletableUntil)
            Remove(() => inner.RemoveSegment(segment));
    }

    /// <summary>Runs a removal in the inner device, counted while it runs.</summary>
    private void Remove(Action removal)
    {
        if (!BeginRemoval())
            return;
        try
        {
            removal();
        }
        finally
        {
            EndRemoval();
        }
    }

    /// <summary>False once the device is closing: nothing may touch its segments any more.</summary>
    private bool BeginRemoval()
    {
        lock (_gate)
        {
            if (_disposed)
                return false;
            _removals++;
            return true;
        }
    }

    private void EndRemoval()
    {
        lock (_gate)
        {
            if (--_removals == 0)
                Monitor.PulseAll(_gate);
        }
    }

    /// <summary>Removals still running (for tests).</summary>
    internal int RemovalsInFlight
    {
        get { lock (_gate) return _removals; }
    }

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
                return;
            _disposed = true;
            // A removal is a file delete or two once FASTER's epoch lets it run. The bound is for a
            // removal whose epoch action never runs (the log closed first): it then never touches
            // the handle pools either, and the device may close.
            long deadline = Environment.TickCount64 + (long)RemovalDrainTimeout.TotalMilliseconds;
            while (_removals > 0)
            {
                long left = deadline - Environment.TickCount64;
                if (left <= 0 || !Monitor.Wait(_gate, (int)left))
                    break;
            }
        }
        inner.Dispose();
    }
}
