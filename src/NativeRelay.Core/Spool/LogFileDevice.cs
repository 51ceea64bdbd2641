using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using FASTER.core;

namespace NativeRelay.Spool;

/// <summary>
/// FasterLog's device for the spool: one file per segment (<c>queue.log.N</c>, the same names and
/// layout as FASTER's own managed device, so a spool moves between the two), written through
/// <see cref="LogSegmentFile"/> (O_DIRECT | O_DSYNC into blocks prepared ahead of the tail).
/// <para>
/// Why not FASTER's <c>ManagedLocalStorageDevice</c>: on Linux it opens segments O_SYNC through
/// the page cache and grows the file with every commit, so each group commit cost three device
/// round trips (data, inode, flush), each waking the committing thread; and each write took two
/// thread-pool hops (its own <c>Task.Run</c>, then the file stream's async write). Here a write
/// is one pool work item that does the blocking write and calls FasterLog back, and a commit is
/// two round trips. Measured in perf/RESULTS.md.
/// </para>
/// <para>
/// A background thread keeps the newest segment's window of prepared blocks ahead of the tail.
/// The I/O itself stays off FasterLog's calling thread: FasterLog issues device writes inside its
/// epoch protection, and a write done inline there stalls every appender (tried, see RESULTS).
/// </para>
/// </summary>
internal sealed class LogFileDevice : StorageDeviceBase
{
    /// <summary>How far past the highest byte written the newest segment is kept prepared.</summary>
    internal const long PrepareWindow = 4L * 1024 * 1024;

    private readonly ConcurrentDictionary<int, LogSegmentFile> _segments = new();
    // An event, not a SemaphoreSlim: SemaphoreSlim.Wait spins and yields before it sleeps, and
    // with big messages the preparer waits every few writes. 2,000 x 100 KiB relayed made
    // 3,500-4,100 sched_yield calls with the semaphore, 1,800-1,900 with the event.
    // Never disposed: a write completing during Dispose may still signal it (on Linux it holds no
    // descriptor, only a managed wait object).
    private readonly AutoResetEvent _prepareSignal = new(false);
    private readonly Thread _preparer;
    private volatile LogSegmentFile? _newest;
    private int _newestId = -1;
    private int _prepareRequested;
    private volatile bool _disposed;

    /// <param name="filename">The segment files' common prefix (<c>SPOOL/queue.log</c>).</param>
    public LogFileDevice(string filename)
        : base(filename, LogSegmentFile.DirectAlignment, capacity: -1)
    {
        ThrottleLimit = 120;
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(filename))!);
        RecoverSegmentRange();
        _preparer = new Thread(PrepareLoop) { IsBackground = true, Name = "spool-prepare" };
        _preparer.Start();
    }

    /// <summary>The newest segment's prepared length (tests).</summary>
    internal long NewestPreparedEnd => _newest?.PreparedEnd ?? 0;

    // Which segments exist (FASTER's own devices do the same on open): the first run of numbers
    // after a gap is where the log begins.
    private void RecoverSegmentRange()
    {
        var info = new FileInfo(FileName);
        if (info.Directory is not { Exists: true } directory)
            return;
        var numbers = new List<int>();
        foreach (var file in directory.EnumerateFiles(info.Name + ".*"))
            if (int.TryParse(file.Name.AsSpan(info.Name.Length + 1), out int n) && n >= 0)
                numbers.Add(n);
        numbers.Sort();
        int previous = -1;
        foreach (int n in numbers)
        {
            if (n != previous + 1)
                startSegment = n;
            endSegment = n;
            previous = n;
        }
    }

    private LogSegmentFile Segment(int id)
    {
        if (_segments.TryGetValue(id, out var file))
            return file;
        lock (_segments)
        {
            // Under the lock that Dispose takes too: no segment is opened after the device closed them all.
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_segments.TryGetValue(id, out file))
                return file;
            file = new LogSegmentFile(GetSegmentFilename(FileName, id), segmentSize > 0 ? segmentSize : long.MaxValue);
            _segments[id] = file;
            return file;
        }
    }

    // A segment that cannot be opened fails the I/O through FasterLog's callback, as a failed write would.
    private bool TrySegment(int id, DeviceIOCompletionCallback callback, object context, out LogSegmentFile file)
    {
        try
        {
            file = Segment(id);
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ObjectDisposedException)
        {
            file = null!;
            callback(uint.MaxValue, 0, context);
            return false;
        }
    }

    public override void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite,
        DeviceIOCompletionCallback callback, object context)
    {
        HandleCapacity(segmentId);
        if (!TrySegment(segmentId, callback, context, out var file))
            return;
        if (segmentId > Volatile.Read(ref _newestId))
        {
            lock (_segments)
            {
                if (segmentId > _newestId)
                {
                    _newestId = segmentId;
                    _newest = file;
                }
            }
        }
        ThreadPool.UnsafeQueueUserWorkItem(new Write(this, file, sourceAddress, (long)destinationAddress, numBytesToWrite, callback, context), preferLocal: false);
    }

    public override void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength,
        DeviceIOCompletionCallback callback, object context)
    {
        if (!TrySegment(segmentId, callback, context, out var file))
            return;
        ThreadPool.UnsafeQueueUserWorkItem(new Read(file, destinationAddress, (long)sourceAddress, readLength, callback, context), preferLocal: false);
    }

    /// <summary>One segment write on a pool thread: the blocking, durable write, then FasterLog's callback.</summary>
    private sealed class Write(LogFileDevice device, LogSegmentFile file, nint source, long offset, uint length,
        DeviceIOCompletionCallback callback, object context) : IThreadPoolWorkItem
    {
        public void Execute()
        {
            uint error = 0;
            try
            {
                file.Write(source, offset, (int)length);
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or UnauthorizedAccessException)
            {
                // FasterLog fails the commit; the spool classifies it (a full disk or not) by itself.
                error = uint.MaxValue;
            }
            callback(error, error == 0 ? length : 0, context);
            // Preparation serves group commits of small mail; under big mail the log's own page
            // flushes run ahead of any fill, and filling would only double the bytes written.
            if (error == 0 && LogSegmentFile.IsSmall(length) && ReferenceEquals(file, device._newest))
                device.RequestPrepare(file);
        }
    }

    private sealed class Read(LogSegmentFile file, nint destination, long offset, uint length,
        DeviceIOCompletionCallback callback, object context) : IThreadPoolWorkItem
    {
        public void Execute()
        {
            uint error = 0;
            int read = 0;
            try
            {
                read = file.Read(destination, offset, (int)length);
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or UnauthorizedAccessException)
            {
                error = uint.MaxValue;
            }
            callback(error, (uint)read, context);
        }
    }

    // The preparer sleeps until a write leaves less than half the window prepared.
    private void RequestPrepare(LogSegmentFile file)
    {
        if (file.NeedsPreparing(PrepareWindow) && Interlocked.Exchange(ref _prepareRequested, 1) == 0)
            _prepareSignal.Set();
    }

    private unsafe void PrepareLoop()
    {
        int size = LogSegmentFile.MaxFillBytes;
        byte* zeros = (byte*)NativeMemory.AlignedAlloc((nuint)size, LogSegmentFile.DirectAlignment);
        NativeMemory.Clear(zeros, (nuint)size);
        try
        {
            while (!_disposed)
            {
                _prepareSignal.WaitOne();
                Volatile.Write(ref _prepareRequested, 0);
                var file = _newest;
                while (file is not null && !_disposed && ReferenceEquals(file, _newest)
                       && file.PrepareStep(PrepareWindow, new ReadOnlySpan<byte>(zeros, size)))
                {
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(zeros);
        }
    }

    public override void RemoveSegment(int segment)
    {
        if (_segments.TryRemove(segment, out var file))
            file.Dispose();
        try
        {
            File.Delete(GetSegmentFilename(FileName, segment));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Left for the next truncation; FasterLog no longer reads it.
        }
    }

    public override void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result)
    {
        RemoveSegment(segment);
        callback(result);
    }

    public override long GetFileSize(int segment) =>
        segmentSize > 0 ? segmentSize : new FileInfo(GetSegmentFilename(FileName, segment)).Length;

    public override void Reset()
    {
        foreach (var id in _segments.Keys)
            if (_segments.TryRemove(id, out var file))
                file.Dispose();
    }

    public override void Dispose()
    {
        lock (_segments)
        {
            if (_disposed)
                return;
            _disposed = true;
        }
        _prepareSignal.Set();
        _preparer.Join(TimeSpan.FromSeconds(10));
        Reset();
        _newest = null;
    }
}
