using NativeRelay.Telemetry;

namespace NativeRelay.Spool;

/// <summary>A message found live in the log at start-up.</summary>
public sealed class RecoveredMessage
{
    public required ulong Id { get; init; }
    public required long HeadAddress { get; init; }
    public required long FirstAddress { get; init; }
    public required Envelope Envelope { get; init; }
    public required RecipientState[] Recipients { get; init; }
    public int Attempts { get; set; }
    public long NextAttemptUnixMs { get; set; }
}

/// <summary>
/// Rebuilds the queue from the log: replays every record from the begin address, keeping the
/// messages whose recipients are not all final. Records it cannot parse are logged and skipped,
/// never replayed as messages; a status for an unknown id (its head was truncated away after the
/// message completed) is ignored.
/// </summary>
public static class SpoolRecovery
{
    public static List<RecoveredMessage> Recover(SpoolLog spool, QueueIdGenerator ids, Log log)
    {
        var live = new Dictionary<ulong, RecoveredMessage>();
        long records = 0, skipped = 0;
        foreach (var (address, owner, length) in spool.ScanAll())
        {
            using (owner)
            {
                records++;
                var record = owner.Memory.Span[..length];
                if (!RecordFormat.TryReadCommonHeader(record, out var kind, out ulong id))
                {
                    skipped++;
                    log.Warn($"spool: skipped an unreadable record at address {address} ({length} bytes)");
                    continue;
                }
                ids.Observe(id);
                switch (kind)
                {
                    case RecordKind.MessageHead:
                        var head = MessageHead.TryParse(record);
                        if (head is null)
                        {
                            skipped++;
                            log.Warn($"spool: skipped a malformed message head at address {address}");
                            continue;
                        }
                        live[id] = new RecoveredMessage
                        {
                            Id = id,
                            HeadAddress = address,
                            FirstAddress = head.ChunkAddresses.Length > 0 ? head.ChunkAddresses[0] : address,
                            Envelope = head.Envelope,
                            Recipients = new RecipientState[head.Envelope.Recipients.Length],
                        };
                        break;
                    case RecordKind.Status:
                        if (!StatusRecord.TryParse(record, out var status))
                        {
                            skipped++;
                            log.Warn($"spool: skipped a malformed status record at address {address}");
                            continue;
                        }
                        if (!live.TryGetValue(id, out var message))
                            continue;
                        if ((status.Flags & StatusFlags.Done) != 0)
                        {
                            live.Remove(id);
                            continue;
                        }
                        foreach (var (index, state) in status.Changes)
                            if (index < message.Recipients.Length)
                                message.Recipients[index] = state;
                        message.Attempts = status.Attempts;
                        message.NextAttemptUnixMs = status.NextAttemptUnixMs;
                        break;
                    case RecordKind.MessageChunk:
                        break; // read through its head when the message is delivered
                }
            }
        }
        log.Info($"spool: recovered {live.Count} queued message(s) from {records} record(s)"
                 + (skipped > 0 ? $", skipped {skipped} unreadable" : ""));
        var result = new List<RecoveredMessage>(live.Values);
        result.Sort((a, b) => a.HeadAddress.CompareTo(b.HeadAddress));
        return result;
    }
}
