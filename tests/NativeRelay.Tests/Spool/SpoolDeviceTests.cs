using FASTER.core;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Tests.Spool;

/// <summary>
/// The spool's device wrapper on its own, over a recording device: segments are deleted only
/// behind the durable begin address, and closing never races a segment removal that FASTER
/// started on a pool thread (two disposals of one handle pool can block forever).
/// </summary>
public sealed class SpoolDeviceTests : IDisposable
{
    private const int SegmentBits = 17;
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "nr-device-" + Guid.NewGuid().ToString("N"));
    private readonly SpoolCommitFile _commits;
    private readonly RecordingDevice _inner = new();

    public SpoolDeviceTests()
    {
        _commits = new SpoolCommitFile(_dir, 1, Log.Null);
    }

    public void Dispose()
    {
        _commits.Dispose();
        try { Directory.Delete(_dir, recursive: true); } catch (DirectoryNotFoundException) { }
    }

    private SpoolDevice Open(int durableSegment, TimeSpan? drain = null)
    {
        // Metadata on disk that puts the begin address at the start of durableSegment.
        _commits.Commit((long)durableSegment << SegmentBits, ((long)durableSegment << SegmentBits) + 64, [1, 2, 3], 1, forceWriteMetadata: true);
        Assert.Equal((long)durableSegment << SegmentBits, _commits.DurableBegin);
        var device = new SpoolDevice(_inner, _commits) { RemovalDrainTimeout = drain ?? TimeSpan.FromSeconds(30) };
        device.Initialize(1L << SegmentBits);
        return device;
    }

    [Fact]
    public void Segments_are_deleted_only_behind_the_durable_begin_address()
    {
        using var device = Open(durableSegment: 2);

        device.TruncateUntilSegment(5);
        device.TruncateUntilAddress(4L << SegmentBits);
        device.RemoveSegment(3);
        device.RemoveSegment(1);

        Assert.Equal(["truncate 2", "truncate 2", "remove 1"], _inner.Calls);
    }

    [Fact]
    public async Task Closing_waits_for_a_removal_in_flight_and_then_closes_the_inner_device()
    {
        var device = Open(durableSegment: 4);
        _inner.BlockTruncation = new ManualResetEventSlim(false);
        var truncating = Task.Run(() => device.TruncateUntilSegment(3));
        Assert.True(_inner.TruncationEntered.Wait(TimeSpan.FromSeconds(30)), "the truncation reached the device");

        var closing = Task.Run(device.Dispose);
        Assert.False(await FinishesSoon(closing), "Dispose must wait while a segment is being removed");
        Assert.DoesNotContain("dispose", _inner.Calls);

        _inner.BlockTruncation.Set();
        await closing.WaitAsync(TimeSpan.FromSeconds(30));
        await truncating.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(["truncate 3", "truncate 3 done", "dispose"], _inner.Calls);
        Assert.Equal(0, device.RemovalsInFlight);
    }

    [Fact]
    public async Task Closing_waits_for_an_asynchronous_truncation_to_call_back()
    {
        var device = Open(durableSegment: 4);
        _inner.HoldAsyncCallbacks = true;
        int calledBack = 0;
        device.TruncateUntilSegmentAsync(2, _ => Interlocked.Increment(ref calledBack), null!);
        Assert.Equal(1, device.RemovalsInFlight);

        var closing = Task.Run(device.Dispose);
        Assert.False(await FinishesSoon(closing), "Dispose must wait for the truncation's callback");

        _inner.ReleaseHeldCallbacks();
        await closing.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(1, calledBack);
        Assert.Equal(["truncate-async 2", "dispose"], _inner.Calls);
    }

    [Fact]
    public void After_closing_no_removal_reaches_the_inner_device_and_callbacks_still_run()
    {
        var device = Open(durableSegment: 4);
        device.Dispose();
        device.Dispose(); // twice is harmless

        int calledBack = 0;
        device.TruncateUntilSegment(3);
        device.RemoveSegment(1);
        device.TruncateUntilSegmentAsync(3, _ => calledBack++, null!);
        device.RemoveSegmentAsync(1, _ => calledBack++, null!);

        Assert.Equal(["dispose"], _inner.Calls);
        Assert.Equal(2, calledBack);
    }

    [Fact]
    public void A_removal_that_never_finishes_does_not_keep_the_device_open_forever()
    {
        var device = Open(durableSegment: 4, drain: TimeSpan.FromMilliseconds(50));
        _inner.HoldAsyncCallbacks = true; // FASTER's epoch closed before it ran the removal
        device.TruncateUntilSegmentAsync(2, _ => { }, null!);

        // Without the bound this Dispose never returns (and make test's hang guard fails the run).
        device.Dispose();

        Assert.Equal(1, device.RemovalsInFlight);

        Assert.Equal(["truncate-async 2", "dispose"], _inner.Calls);
    }

    /// <summary>
    /// Whether a task ends within a moment. Not a timing assertion: it is only ever expected to be
    /// false, and an implementation that does not wait ends at once and fails the test.
    /// </summary>
    private static async Task<bool> FinishesSoon(Task task) =>
        await Task.WhenAny(task, Task.Delay(TimeSpan.FromMilliseconds(300))) == task;

    /// <summary>A device that records what reaches it and can hold a removal open.</summary>
    private sealed class RecordingDevice : IDevice
    {
        private readonly List<string> _calls = [];
        private readonly List<(AsyncCallback Callback, IAsyncResult Result)> _held = [];

        public ManualResetEventSlim? BlockTruncation { get; set; }
        public ManualResetEventSlim TruncationEntered { get; } = new(false);
        public bool HoldAsyncCallbacks { get; set; }

        public string[] Calls
        {
            get { lock (_calls) return [.. _calls]; }
        }

        private void Record(string call)
        {
            lock (_calls) _calls.Add(call);
        }

        public void ReleaseHeldCallbacks()
        {
            foreach (var (callback, result) in _held)
                callback(result);
            _held.Clear();
        }

        public void TruncateUntilSegment(int toSegment)
        {
            Record($"truncate {toSegment}");
            if (BlockTruncation is { } block)
            {
                TruncationEntered.Set();
                block.Wait();
                Record($"truncate {toSegment} done");
            }
        }

        public void TruncateUntilSegmentAsync(int toSegment, AsyncCallback callback, IAsyncResult result)
        {
            Record($"truncate-async {toSegment}");
            if (HoldAsyncCallbacks)
                _held.Add((callback, result));
            else
                callback(result);
        }

        public void RemoveSegment(int segment) => Record($"remove {segment}");

        public void RemoveSegmentAsync(int segment, AsyncCallback callback, IAsyncResult result)
        {
            Record($"remove-async {segment}");
            callback(result);
        }

        public void Dispose() => Record("dispose");

        public void Initialize(long segmentSize, LightEpoch epoch = null!, bool omitSegmentIdFromFilename = false) { }
        public uint SectorSize => 512;
        public string FileName => "recording";
        public long Capacity => -1;
        public long SegmentSize => 1L << SegmentBits;
        public int StartSegment => 0;
        public int EndSegment => 0;
        public int ThrottleLimit { get; set; }
        public bool TryComplete() => true;
        public bool Throttle() => false;
        public long GetFileSize(int segment) => 0;
        public void Reset() { }
        public void TruncateUntilAddressAsync(long toAddress, AsyncCallback callback, IAsyncResult result) => throw new NotSupportedException();
        public void TruncateUntilAddress(long toAddress) => throw new NotSupportedException();
        public void WriteAsync(IntPtr sourceAddress, int segmentId, ulong destinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context) => throw new NotSupportedException();
        public void ReadAsync(int segmentId, ulong sourceAddress, IntPtr destinationAddress, uint readLength, DeviceIOCompletionCallback callback, object context) => throw new NotSupportedException();
        public void WriteAsync(IntPtr alignedSourceAddress, ulong alignedDestinationAddress, uint numBytesToWrite, DeviceIOCompletionCallback callback, object context) => throw new NotSupportedException();
        public void ReadAsync(ulong alignedSourceAddress, IntPtr alignedDestinationAddress, uint aligned_read_length, DeviceIOCompletionCallback callback, object context) => throw new NotSupportedException();
    }
}
