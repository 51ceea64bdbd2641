using NativeRelay.Telemetry;

namespace NativeRelay.Spool;

/// <summary>
/// Compaction: TruncateUntil can only drop whole segments before the oldest record a live message
/// needs, so one message deferred for days near the head would pin everything written after it.
/// When most of the log is history (dead bytes exceed both the live bytes and two segments), the
/// live messages of the oldest segment are copied forward: their chunks as they are, then a new
/// head carrying a snapshot of their delivery state (<see cref="RecordFlags.Copy"/>). Once a copy
/// is committed the index points at it, and the next truncation drops the segment. At most
/// <see cref="BudgetBytes"/> (or one segment) is copied per run, and none while free space is short.
/// </summary>
internal sealed class SpoolCompactor(SpoolLog spool)
{
    private const long BudgetBytes = 64L << 20;

    private readonly Log _log = spool.Logger;

    /// <summary>Returns how many messages were moved.</summary>
    public async Task<int> RunAsync()
    {
        var index = spool.Index;
        long segment = spool.SegmentSize;
        long begin = spool.BeginAddress;
        long logBytes = spool.CommittedUntilAddress - begin;
        long live = index.LiveBytes;
        if (logBytes - live <= Math.Max(live, 2 * segment))
            return 0;
        long budget = Math.Max(segment, BudgetBytes);
        if (spool.FreeBytes < 2 * spool.Options.MinFreeBytes + Math.Min(budget, live))
            return 0; // copying needs room; truncation alone will have to do
        long oldestSegmentEnd = (begin / segment + 1) * segment;
        var candidates = index.Before(oldestSegmentEnd);
        if (candidates.Count == 0)
            return 0;
        int moved = 0;
        long copied = 0;
        // Copies are appended one after another and made durable by one commit at the end: a
        // wait for each message's own commit held a run to one commit latency per message (600
        // messages of a segment took ~5 s under load, and the log outgrew compaction).
        var pending = new List<(ulong Id, long OldFirst, long First, long Head)>();
        foreach (var (id, entry) in candidates)
        {
            if (copied >= budget)
                break;
            try
            {
                var copy = await CopyAsync(id, entry);
                if (copy.Head >= 0)
                {
                    pending.Add((id, entry.First, copy.First, copy.Head));
                    copied += copy.Bytes;
                }
            }
            catch (Exception e) when (e is IOException or InvalidDataException or FASTER.core.FasterException)
            {
                _log.Warn($"spool: compaction could not move {QueueIdGenerator.ToString(id)}: {ExceptionText.Of(e)}");
                break;
            }
        }
        if (pending.Count > 0)
        {
            // Commits are in log order: the last copy's commit covers every copy before it.
            await spool.WaitForCommitAsync(pending[^1].Head);
            Hosting.CrashPoints.Reach(Hosting.CrashPoints.CompactionHeadCopied);
            // Only now does the index point at the copies (a message that finished or moved
            // meanwhile keeps its entry; its copy is garbage for truncation).
            foreach (var (id, oldFirst, first, head) in pending)
                if (spool.Index.Relocate(id, oldFirst, first, head))
                    moved++;
        }
        if (moved > 0)
            _log.Info($"spool: compaction copied {moved} live message(s) ({copied} bytes) forward from the oldest log segment (log {logBytes} bytes, live about {live})");
        return moved;
    }

    /// <summary>
    /// Appends a copy of one message (its chunks as they are, then a head with a snapshot of its
    /// state). Not yet durable nor in the index: the caller commits the batch, then relocates.
    /// Head -1: the message finished or moved meanwhile (no head appended).
    /// </summary>
    private async Task<(long First, long Head, long Bytes)> CopyAsync(ulong id, SpoolIndex.Entry entry)
    {
        var (owner, length) = await spool.ReadRecordAsync(entry.Head);
        using (owner)
        {
            var record = owner.Memory[..length];
            if (!HeadLayout.TryRead(record.Span, out var layout) || layout.Id != id)
                throw new InvalidDataException($"no head of {QueueIdGenerator.ToString(id)} at spool address {entry.Head}");
            long bytes = length;
            var chunks = new long[layout.ChunkCount];
            for (int i = 0; i < chunks.Length; i++)
            {
                var (chunkOwner, chunkLength) = await spool.ReadRecordAsync(layout.ChunkAddress(record.Span, i));
                using (chunkOwner)
                {
                    chunks[i] = await spool.AppendRawAsync(chunkOwner.Memory[..chunkLength]);
                    bytes += chunkLength;
                }
            }
            Hosting.CrashPoints.Reach(Hosting.CrashPoints.CompactionChunksCopied);
            var copy = new CopiedHeadEntry { Old = record, Layout = layout, ChunkAddresses = chunks };
            long head = await spool.AppendCopiedHeadAsync(id, entry.First, copy);
            return (chunks.Length > 0 ? chunks[0] : head, head, bytes);
        }
    }
}
