using System.Threading.Channels;
using FASTER.core;

namespace NativeRelay.Spool;

/// <summary>
/// Group commit: every session that appended a record waits on the same batch, and one
/// FasterLog commit (one O_SYNC write) completes the whole batch. While a commit is in flight,
/// new appends gather into the next batch, so under load the batch grows by itself and the fsync
/// rate, not the message rate, is what the disk sees.
///
/// Correctness rests on ordering: a writer appends first, then takes the current batch, then
/// signals. The committer takes the signal, swaps the batch out, and only then commits, so any
/// record appended before a writer took batch B is inside the commit that completes B.
///
/// A failed commit fails its batch with the exception <c>classify</c> makes of it (a full disk
/// becomes <see cref="SpoolFullException"/>) and is reported through <c>failed</c>; once disposed,
/// every wait fails at once instead of hanging on a log that is gone.
/// </summary>
internal sealed class GroupCommitter : IAsyncDisposable
{
    private readonly FasterLog _log;
    private readonly Func<Exception, Exception> _classify;
    private readonly Action<Exception> _failed;
    private readonly Channel<bool> _signal = Channel.CreateBounded<bool>(
        new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = true });
    private readonly Task _loop;
    private TaskCompletionSource _batch = NewBatch();
    private long _commits;
    private long _committedRecords;
    private int _waitersInBatch;
    private volatile bool _closed;

    public GroupCommitter(FasterLog log, Func<Exception, Exception>? classify = null, Action<Exception>? failed = null)
    {
        _log = log;
        _classify = classify ?? (e => e);
        _failed = failed ?? (_ => { });
        _loop = Task.Run(CommitLoopAsync);
    }

    /// <summary>Commits performed (for metrics and benchmarks: records per commit = batch size).</summary>
    public long Commits => Interlocked.Read(ref _commits);
    public long CommittedWaiters => Interlocked.Read(ref _committedRecords);

    /// <summary>Completes when the record at <paramref name="address"/> is durable.</summary>
    public Task WaitForCommitAsync(long address)
    {
        if (_log.CommittedUntilAddress > address)
            return Task.CompletedTask;
        if (_closed)
            return Closed();
        var batch = Volatile.Read(ref _batch);
        Interlocked.Increment(ref _waitersInBatch);
        _signal.Writer.TryWrite(true);
        // Closed after this writer took its batch: the batch may have been swept already.
        if (_closed && !batch.Task.IsCompleted)
            return Closed();
        return batch.Task;
    }

    private static Task Closed() =>
        Task.FromException(new SpoolUnavailableException("the spool log was closed before this record was committed"));

    /// <summary>
    /// Asks for a commit without waiting for it (status records: durable soon is enough). With
    /// <paramref name="evenIfNothingNew"/> the commit happens even when no record was appended:
    /// a truncation is persisted (and its segments deleted) only by a commit.
    /// </summary>
    public void RequestCommit(bool evenIfNothingNew = false)
    {
        if (evenIfNothingNew)
            Volatile.Write(ref _force, 1);
        _signal.Writer.TryWrite(true);
    }

    private int _force;

    private async Task CommitLoopAsync()
    {
        var reader = _signal.Reader;
        while (await reader.WaitToReadAsync())
        {
            reader.TryRead(out _);
            var batch = Interlocked.Exchange(ref _batch, NewBatch());
            int waiters = Interlocked.Exchange(ref _waitersInBatch, 0);
            await CommitBatchAsync(batch, waiters);
        }
        // Shutting down: whoever still waits gets a final commit; anyone later is told the log is closed.
        await CommitBatchAsync(Interlocked.Exchange(ref _batch, NewBatch()), 0);
        _closed = true;
        Interlocked.Exchange(ref _batch, NewBatch()).TrySetException(new SpoolUnavailableException("the spool log was closed"));
    }

    private async Task CommitBatchAsync(TaskCompletionSource batch, int waiters)
    {
        try
        {
            if (Interlocked.Exchange(ref _force, 0) == 1 || _log.TailAddress > _log.CommittedUntilAddress)
            {
                long started = System.Diagnostics.Stopwatch.GetTimestamp();
                await _log.CommitAsync();
                // Metrics: lock-free increments on fixed bucket arrays, nothing allocated.
                Telemetry.RelayMetrics.SpoolCommitSeconds.ObserveSince(started);
                Telemetry.RelayMetrics.SpoolCommitBatchSize.Observe(waiters);
                Interlocked.Increment(ref _commits);
            }
            Interlocked.Add(ref _committedRecords, waiters);
            batch.TrySetResult();
        }
        catch (Exception e)
        {
            // The sessions waiting on this batch answer 4xx and their clients retry; nothing was acknowledged.
            _failed(e);
            batch.TrySetException(_classify(e));
        }
    }

    private static TaskCompletionSource NewBatch() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    public async ValueTask DisposeAsync()
    {
        _signal.Writer.TryComplete();
        await _loop;
    }
}
