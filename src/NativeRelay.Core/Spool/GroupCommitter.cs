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
/// </summary>
internal sealed class GroupCommitter : IAsyncDisposable
{
    private readonly FasterLog _log;
    private readonly Channel<bool> _signal = Channel.CreateBounded<bool>(
        new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite, SingleReader = true });
    private readonly Task _loop;
    private TaskCompletionSource _batch = NewBatch();
    private long _commits;
    private long _committedRecords;
    private int _waitersInBatch;

    public GroupCommitter(FasterLog log)
    {
        _log = log;
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
        var batch = Volatile.Read(ref _batch);
        Interlocked.Increment(ref _waitersInBatch);
        _signal.Writer.TryWrite(true);
        return batch.Task;
    }

    /// <summary>Asks for a commit without waiting for it (status records: durable soon is enough).</summary>
    public void RequestCommit() => _signal.Writer.TryWrite(true);

    private async Task CommitLoopAsync()
    {
        var reader = _signal.Reader;
        while (await reader.WaitToReadAsync())
        {
            reader.TryRead(out _);
            var batch = Interlocked.Exchange(ref _batch, NewBatch());
            int waiters = Interlocked.Exchange(ref _waitersInBatch, 0);
            try
            {
                if (_log.TailAddress > _log.CommittedUntilAddress)
                {
                    await _log.CommitAsync();
                    Interlocked.Increment(ref _commits);
                }
                Interlocked.Add(ref _committedRecords, waiters);
                batch.TrySetResult();
            }
            catch (Exception e)
            {
                // The sessions waiting on this batch answer 451 and their clients retry; nothing was acknowledged.
                batch.TrySetException(e);
            }
        }
        // Shutting down: whoever still waits gets a final commit.
        var last = Interlocked.Exchange(ref _batch, NewBatch());
        try
        {
            if (_log.TailAddress > _log.CommittedUntilAddress)
                await _log.CommitAsync();
            last.TrySetResult();
        }
        catch (Exception e)
        {
            last.TrySetException(e);
        }
    }

    private static TaskCompletionSource NewBatch() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    public async ValueTask DisposeAsync()
    {
        _signal.Writer.TryComplete();
        await _loop;
    }
}
