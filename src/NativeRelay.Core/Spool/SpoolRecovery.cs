using NativeRelay.Telemetry;

namespace NativeRelay.Spool;

/// <summary>
/// A message found live in the log at start-up. Its envelope is not read here (a million queued
/// messages would cost a million envelopes in memory at once); the delivery side reads it from
/// the head when it needs it (<see cref="SpoolLog.ReadEnvelopeAsync"/>).
/// </summary>
public sealed class RecoveredMessage
{
    public required ulong Id { get; init; }
    public required long HeadAddress { get; init; }
    public required long FirstAddress { get; init; }
    /// <summary>Null: read it with <see cref="SpoolLog.ReadEnvelopeAsync"/> when it is needed.</summary>
    public Envelope? Envelope { get; init; }
    public required RecipientState[] Recipients { get; init; }
    /// <summary>The message's size in bytes.</summary>
    public long Size { get; init; }
    public int Attempts { get; set; }
    public long NextAttemptUnixMs { get; set; }
    /// <summary>Held by an administrator (sticky StatusFlags.Held until StatusFlags.Released).</summary>
    public bool Held { get; set; }
    /// <summary>A delay warning was sent (StatusFlags.DelayWarned).</summary>
    public bool DelayWarned { get; set; }
}

/// <summary>
/// Rebuilds the queue from the log: replays every committed record from the begin address, keeping
/// the messages whose recipients are not all final, and fills the spool's index. Never replays
/// what it cannot trust: a record that fails its checksum is skipped (the scan resumes at the next
/// record that verifies, see <see cref="SpoolLog.Scan"/>), a head whose chunks are not all intact
/// is left out with an error line, a status for an unknown id (its head was truncated away after
/// the message completed) is ignored, and what lies after the last commit is dropped and described.
/// </summary>
public static class SpoolRecovery
{
    private sealed class Replayed
    {
        public long First;
        public long Head;
        public long Size;
        public required RecipientState[] States;
        public int Attempts;
        public long NextAttemptUnixMs;
        public bool Held;
        public bool DelayWarned;
    }

    public static List<RecoveredMessage> Recover(SpoolLog spool, QueueIdGenerator ids, Log log)
    {
        var started = System.Diagnostics.Stopwatch.StartNew();
        var live = new Dictionary<ulong, Replayed>();
        var chunks = new Dictionary<long, ulong>(); // chunk address -> message id, for records that verified
        long unreadable = 0, incomplete = 0;

        var report = spool.Scan((address, record) =>
        {
            Hosting.CrashPoints.Reach(Hosting.CrashPoints.RecoveryRecord);
            if (!RecordFormat.TryReadCommonHeader(record, out var kind, out ulong id))
            {
                unreadable++;
                log.Warn($"spool: skipped a record of unknown format at address {address} ({record.Length} bytes)");
                return;
            }
            switch (kind)
            {
                case RecordKind.Padding:
                    return;
                case RecordKind.MessageChunk:
                    chunks[address] = id;
                    return;
                case RecordKind.MessageHead:
                    if (!HeadLayout.TryRead(record, out var layout))
                    {
                        unreadable++;
                        log.Warn($"spool: skipped a malformed message head at address {address}");
                        return;
                    }
                    ids.Observe(id);
                    for (int i = 0; i < layout.ChunkCount; i++)
                    {
                        long chunk = layout.ChunkAddress(record, i);
                        if (!chunks.TryGetValue(chunk, out ulong owner) || owner != id)
                        {
                            incomplete++;
                            log.Error($"spool: message {QueueIdGenerator.ToString(id)} (head at {address}) is missing part of its data (chunk at {chunk}); "
                                      + (live.ContainsKey(id) ? "keeping its earlier copy" : "it cannot be delivered and is left out of the queue"));
                            return;
                        }
                    }
                    long first = layout.ChunkCount > 0 ? layout.ChunkAddress(record, 0) : address;
                    if (!live.TryGetValue(id, out var message))
                    {
                        message = new Replayed { States = new RecipientState[layout.RecipientCount] };
                        live[id] = message;
                    }
                    message.First = first;
                    message.Head = address;
                    message.Size = layout.TotalLength;
                    if (layout.IsCopy)
                    {
                        // A compaction copy: its snapshot holds the state up to the copy; statuses
                        // before it may be gone (truncated) or still here (never a newer state).
                        message.Attempts = Math.Max(message.Attempts, layout.SnapshotAttempts(record));
                        var flags = layout.SnapshotFlags(record);
                        message.Held = (flags & StatusFlags.Held) != 0; // as of the copy, which follows every status before it
                        message.DelayWarned |= (flags & StatusFlags.DelayWarned) != 0;
                        var states = layout.SnapshotStates(record);
                        for (int i = 0; i < states.Length && i < message.States.Length; i++)
                            if ((RecipientState)states[i] != RecipientState.Pending)
                                message.States[i] = (RecipientState)states[i];
                    }
                    return;
                case RecordKind.Status:
                    if (!StatusRecord.TryParse(record, out var status))
                    {
                        unreadable++;
                        log.Warn($"spool: skipped a malformed status record at address {address}");
                        return;
                    }
                    if (!live.TryGetValue(id, out var target))
                        return;
                    if ((status.Flags & StatusFlags.Done) != 0)
                    {
                        live.Remove(id);
                        return;
                    }
                    foreach (var (index, state) in status.Changes)
                        if (index < target.States.Length)
                            target.States[index] = state;
                    target.Attempts = status.Attempts;
                    target.NextAttemptUnixMs = status.NextAttemptUnixMs;
                    // Delivery side: hold/release are sticky, the delay warning is sent once.
                    if ((status.Flags & StatusFlags.Held) != 0)
                        target.Held = true;
                    if ((status.Flags & StatusFlags.Released) != 0)
                        target.Held = false;
                    if ((status.Flags & StatusFlags.DelayWarned) != 0)
                        target.DelayWarned = true;
                    return;
            }
        });

        foreach (var (from, resume, reason) in report.Damaged)
            log.Error($"spool: unreadable log records at address {from} ({reason}); skipped {resume - from} bytes, resumed at {resume}");
        if (report.Tail is not null)
            log.Warn($"spool: {report.Tail}");

        var result = new List<RecoveredMessage>(live.Count);
        foreach (var (id, m) in live)
        {
            spool.Index.Load(id, m.First, m.Head, m.Size, m.States.Length, m.Attempts,
                (m.Held ? StatusFlags.Held : StatusFlags.None) | (m.DelayWarned ? StatusFlags.DelayWarned : StatusFlags.None), m.States);
            result.Add(new RecoveredMessage
            {
                Id = id,
                HeadAddress = m.Head,
                FirstAddress = m.First,
                Recipients = m.States,
                Size = m.Size,
                Attempts = m.Attempts,
                NextAttemptUnixMs = m.NextAttemptUnixMs,
                Held = m.Held,
                DelayWarned = m.DelayWarned,
            });
        }
        result.Sort((a, b) => a.HeadAddress.CompareTo(b.HeadAddress));
        long skipped = unreadable + incomplete + report.Damaged.Count;
        log.Info($"spool: recovered {result.Count} queued message(s) from {report.Records} record(s) in {started.ElapsedMilliseconds} ms"
                 + (skipped > 0 ? $"; skipped {report.Damaged.Count} damaged stretch(es), {unreadable} unreadable record(s), {incomplete} incomplete message(s)" : ""));
        return result;
    }
}
