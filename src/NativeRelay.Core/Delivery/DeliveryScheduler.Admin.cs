using NativeRelay.Message;
using NativeRelay.Smtp;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Delivery;

/// <summary>
/// Queue administration (<see cref="IQueueAdmin"/>), on the delivery side. Every mutating
/// operation writes a status record and waits for its commit before it returns, so it survives a
/// crash like a delivery does: hold and release are sticky flags, delete and return end the
/// message (<see cref="StatusFlags.Done"/>), flush records the new attempt time. Admin operations
/// run one at a time (their records must not interleave: a hold then a release is ordered).
/// A message whose attempt is in flight: hold and delete stop the jobs that have not started; a
/// transaction already on the wire completes (it cannot be recalled).
/// <para>
/// Most of the queue is cold (no object, see <see cref="DeliveryScheduler"/>): listing reads its
/// index slot and its envelope from the spool for the one look; a mutating command takes an
/// object for it for the length of the command (so no attempt can start meanwhile) and puts it
/// back cold afterwards. A flushed or released message goes back into the retry heap due now:
/// the ticker starts it within the active limit, so flushing a million messages cannot make a
/// million hot at once.
/// </para>
/// </summary>
public sealed partial class DeliveryScheduler : IQueueAdmin
{
    private readonly SemaphoreSlim _admin = new(1, 1);

    public IReadOnlyList<QueueEntry> List(string? domain, TimeSpan? olderThan)
    {
        long now = NowMs();
        var entries = new List<(ulong Id, QueueEntry Entry)>();
        foreach (ulong id in _index.ColdIds())
        {
            if (olderThan is { } cutoff && now - (long)(id >> 16) < (long)cutoff.TotalMilliseconds)
                continue; // the id's arrival time (in its high bits) rules it out without reading the spool
            if (Look(id) is not { } message)
                continue;
            if (olderThan is { } age && now - ArrivalOf(message) < (long)age.TotalMilliseconds)
                continue;
            if (domain is not null && !HasPendingIn(message, domain))
                continue;
            if (Entry(message) is { } entry)
                entries.Add((message.Id, entry));
        }
        entries.Sort(static (a, b) => a.Id.CompareTo(b.Id));
        var result = new QueueEntry[entries.Count];
        for (int i = 0; i < result.Length; i++)
            result[i] = entries[i].Entry;
        return result;
    }

    public QueueEntry? Show(string id) =>
        QueueIdGenerator.TryParse(id.Trim().ToUpperInvariant(), out ulong key) && Look(key) is { } message ? Entry(message) : null;

    /// <summary>
    /// The queue by state from counters, without walking the messages (the metrics endpoint:
    /// <see cref="Stats"/> walks a million slots under the index's gate). Active are the messages
    /// being worked on (at most the active limit), the rest of those not held are deferred.
    /// </summary>
    public (int Active, int Deferred, int Held) Counts()
    {
        var (taken, held) = _index.StateCounts();
        int active = Math.Clamp(ActiveCount, 0, Math.Max(0, taken - held));
        return (active, Math.Max(0, taken - held - active), held);
    }

    public QueueStats Stats()
    {
        int active = 0, deferred = 0, held = 0;
        var byDestination = new Dictionary<string, int>(StringComparer.Ordinal);
        // Under the index's gate: no message lock is taken here (racy reads of a hot message's flags are fine for counts).
        _index.ForEachCold((id, cold) =>
        {
            string? destination;
            if (_hot.TryGetValue(id, out var message))
            {
                if (message.Held)
                {
                    held++;
                    return;
                }
                if (message.Round is not null)
                    active++;
                else
                    deferred++;
                destination = message.LastDestination;
            }
            else
            {
                if (cold.Held)
                {
                    held++;
                    return;
                }
                deferred++;
                destination = cold.LastDestination;
            }
            destination ??= "(not routed yet)";
            byDestination[destination] = byDestination.TryGetValue(destination, out int n) ? n + 1 : 1;
        });
        return new QueueStats(active, deferred, held, byDestination);
    }

    /// <summary>A queued message to look at: its hot object, or a detached one made from its index slot (not registered: nothing attempts it).</summary>
    private QueuedMessage? Look(ulong id)
    {
        if (_hot.TryGetValue(id, out var hot))
            return hot;
        if (!_index.TryWarm(id, attempt: false, 0, out var cold, out var states))
            return _hot.TryGetValue(id, out hot) ? hot : null;
        return FromCold(id, cold, states, cold.Due);
    }

    /// <summary>
    /// Attempts the selected messages now (held ones stay held; ones being attempted are left
    /// alone). With neither an id nor a domain it selects the whole queue, as Postfix's
    /// <c>postqueue -f</c> does. The flushed messages go into the retry heap due now, so the ticker
    /// starts them within the active limit. Their status records share one commit: a flush of the
    /// whole queue is one disk flush, not one per message (a flush lost to a crash only leaves a
    /// message at its old retry time).
    /// </summary>
    public async Task<int> FlushAsync(QueueSelector selector)
    {
        int flushed = await AdminAsync(selector, async (message, cold) =>
        {
            lock (message)
            {
                if (!cold || message.Round is not null || message.IsStopped || message.Held || message.Finalized)
                    return false;
            }
            long now = NowMs();
            PublishAdmin("flushed", message);
            await AppendStatusAsync(message, StatusFlags.None, now, []);
            Event("flushed", message);
            message.NextAttemptUnixMs = now; // back cold, due now (AdminAsync)
            return true;
        });
        if (flushed > 0)
            await _spool.WaitForCommitAsync(_spool.TailAddress - 1);
        return flushed;
    }

    /// <summary>Removes the selected messages without telling anyone.</summary>
    public Task<int> DeleteAsync(QueueSelector selector) => AdminAsync(selector, async (message, _) =>
    {
        lock (message)
        {
            if (message.Finalized)
                return false;
            message.Finalized = true;
        }
        PublishAdmin("deleted", message);
        await AppendDurableAsync(message, StatusFlags.Done, NowMs(), []);
        _log.Info($"{message.IdText}: deleted by the administrator");
        Event("deleted", message);
        message.ReleaseBody();
        Completed(message);
        return true;
    });

    /// <summary>Returns the selected messages to their senders: every pending recipient fails, with one DSN.</summary>
    public Task<int> BounceAsync(QueueSelector selector) => AdminAsync(selector, async (message, _) =>
    {
        if (!message.TryGetEnvelope(out var envelope))
            envelope = message.Envelope = await _spool.ReadEnvelopeAsync(message.Id, message.HeadAddress); // for the DSN
        var pending = new List<int>();
        lock (message)
        {
            if (message.Finalized)
                return false;
            message.Finalized = true;
            for (int i = 0; i < message.Recipients.Length; i++)
                if (message.Recipients[i] == RecipientState.Pending)
                    pending.Add(i);
        }
        var reply = SmtpReply.Local(550, "5.0.0 returned to the sender by the mail system administrator");
        long now = NowMs();
        ulong dsnId = 0;
        if (MayBounce(envelope))
        {
            var at = DateTimeOffset.FromUnixTimeMilliseconds(now);
            var notices = new List<DsnRecipient>();
            foreach (int i in pending)
            {
                if (!Wants(envelope, i, DsnNotify.Failure))
                    continue;
                notices.Add(new DsnRecipient
                {
                    FinalRecipient = envelope.Recipients[i],
                    OriginalRecipient = envelope.OriginalRecipients is { } o && i < o.Length ? o[i] : null,
                    Action = DsnAction.Failed,
                    Status = "5.0.0",
                    Diagnostic = message.LastError is null ? reply.ToString() : $"{reply} (last attempt: {message.LastError})",
                    LastAttempt = at,
                });
            }
            if (notices.Count > 0)
            {
                try
                {
                    dsnId = await _bouncer.SendAsync(message, notices, now);
                }
                catch
                {
                    lock (message)
                        message.Finalized = false;
                    throw;
                }
            }
        }
        var changes = new (ushort, RecipientState)[pending.Count];
        for (int k = 0; k < changes.Length; k++)
            changes[k] = ((ushort)pending[k], RecipientState.Failed);
        foreach (int i in pending)
            PublishAdmin("returned", message, i, reply.ToString(), dsnId);
        PublishDsnSent(message, dsnId);
        await AppendDurableAsync(message, StatusFlags.Done, now, changes);
        lock (message)
            foreach (int i in pending)
                message.Recipients[i] = RecipientState.Failed;
        _log.Info($"{message.IdText}: returned to <{envelope.SenderText}> by the administrator"
                  + (dsnId != 0 ? $" (notification {QueueIdGenerator.ToString(dsnId)})" : " (no notification)"));
        foreach (int i in pending)
            _deliveryLog.Write(new DeliveryEvent { Event = "returned", Id = message.Id, Recipient = envelope.Recipients[i], Reply = reply.ToString(), DsnId = dsnId });
        message.ReleaseBody();
        Completed(message);
        return true;
    });

    /// <summary>Keeps the selected messages from being attempted until released.</summary>
    public Task<int> HoldAsync(QueueSelector selector) => AdminAsync(selector, async (message, _) =>
    {
        lock (message)
        {
            if (message.Finalized || message.Held)
                return false;
            message.Held = true; // its retry heap entry is void (the index slot is held: stale when it comes up)
        }
        PublishAdmin("held", message);
        await AppendDurableAsync(message, StatusFlags.Held, NowMs(), []);
        Event("held", message);
        return true;
    });

    /// <summary>Releases held messages and attempts them now.</summary>
    public Task<int> ReleaseAsync(QueueSelector selector) => AdminAsync(selector, async (message, _) =>
    {
        lock (message)
        {
            if (message.Finalized || !message.Held)
                return false;
            message.Held = false;
        }
        long now = NowMs();
        PublishAdmin("released", message);
        await AppendDurableAsync(message, StatusFlags.Released, now, []);
        Event("released", message);
        // Cold: back into the retry heap due now (AdminAsync). Held while an attempt ran: that attempt schedules it.
        message.NextAttemptUnixMs = now;
        return true;
    });

    /// <summary>
    /// Runs an admin operation on each selected message, one at a time, on its object: the hot
    /// one (an attempt is in progress: <c>cold</c> false), or one taken from the index for the
    /// length of the operation and put back cold afterwards unless it left the queue.
    /// </summary>
    private async Task<int> AdminAsync(QueueSelector selector, Func<QueuedMessage, bool, Task<bool>> operation)
    {
        await _admin.WaitAsync();
        try
        {
            int touched = 0;
            foreach (ulong id in Select(selector))
            {
                // cold: taken from the index now (no attempt can start while the object is registered).
                var message = Warm(id, 0, fresh: false, attempt: false, out bool cold);
                if (message is null)
                    continue;
                try
                {
                    if (await operation(message, cold))
                    {
                        touched++;
                        Hosting.CrashPoints.Reach(Hosting.CrashPoints.AdminMessageDone);
                    }
                }
                finally
                {
                    if (cold)
                        PutBack(message);
                }
            }
            return touched;
        }
        finally
        {
            _admin.Release();
        }
    }

    /// <summary>After an admin operation: a message taken from the index goes back cold (held: out of the retry heap; else due at its time, or now).</summary>
    private void PutBack(QueuedMessage message)
    {
        bool finalized;
        long next;
        lock (message)
        {
            finalized = message.Finalized;
            next = message.Held ? 0 : message.NextAttemptUnixMs > 0 ? message.NextAttemptUnixMs : NowMs();
        }
        if (!finalized)
            Cool(message, next);
    }

    private List<ulong> Select(QueueSelector selector)
    {
        var selected = new List<ulong>();
        if (selector.Id is not null)
        {
            if (QueueIdGenerator.TryParse(selector.Id.Trim().ToUpperInvariant(), out ulong id) && (_hot.ContainsKey(id) || _index.TryGetCold(id, out _)))
                selected.Add(id);
            return selected;
        }
        if (selector.Domain is null)
            return _index.ColdIds(); // the whole queue (flush; the other commands require an id or a domain)
        foreach (ulong id in _index.ColdIds())
            if (Look(id) is { } message && HasPendingIn(message, selector.Domain))
                selected.Add(id);
        return selected;
    }

    private bool HasPendingIn(QueuedMessage message, string domain)
    {
        domain = domain.Trim().TrimStart('@').TrimEnd('.');
        Span<char> chars = stackalloc char[256];
        var envelope = EnvelopeOf(message);
        if (envelope is null)
            return false;
        var recipients = envelope.Recipients;
        for (int i = 0; i < recipients.Length; i++)
        {
            if (message.Recipients[i] != RecipientState.Pending)
                continue;
            var bytes = DomainOf(recipients[i]);
            if (bytes.Length > chars.Length || !System.Text.Encoding.UTF8.TryGetChars(bytes, chars, out int n))
                continue;
            if (chars[..n].Equals(domain, StringComparison.OrdinalIgnoreCase))
                return true;
        }
        return false;
    }

    /// <summary>
    /// The envelope of a queued message: in memory while it is being attempted, otherwise read from
    /// the spool for this one look (not kept: a large backlog must stay small in memory). Null if
    /// the spool cannot give it (the message is then left out of listings).
    /// </summary>
    private Envelope? EnvelopeOf(QueuedMessage message)
    {
        if (message.TryGetEnvelope(out var envelope))
            return envelope;
        try
        {
            return _spool.ReadEnvelopeAsync(message.Id, message.HeadAddress).AsTask().GetAwaiter().GetResult();
        }
        catch (Exception e)
        {
            _log.Warn($"{message.IdText}: cannot read its envelope from the spool: {ExceptionText.Of(e)}");
            return null;
        }
    }

    /// <summary>Arrival time: from the envelope when it is loaded, else from the queue id (milliseconds in its high bits).</summary>
    private static long ArrivalOf(QueuedMessage message) =>
        message.TryGetEnvelope(out var envelope) ? envelope.ArrivalUnixMs : (long)(message.Id >> 16);

    private QueueEntry? Entry(QueuedMessage message)
    {
        var envelope = EnvelopeOf(message);
        if (envelope is null)
            return null;
        lock (message)
        {
            var pending = new List<string>();
            for (int i = 0; i < message.Recipients.Length; i++)
                if (message.Recipients[i] == RecipientState.Pending)
                    pending.Add(envelope.RecipientText(i));
            DateTimeOffset? next = message.Round is null && !message.Held && message.NextAttemptUnixMs > 0
                ? DateTimeOffset.FromUnixTimeMilliseconds(message.NextAttemptUnixMs)
                : null;
            return new QueueEntry(message.IdText, DateTimeOffset.FromUnixTimeMilliseconds(envelope.ArrivalUnixMs),
                message.Size, envelope.SenderText, pending, next, message.Attempts, message.LastError, message.Held);
        }
    }

    /// <summary>Appends a status record and waits until it is on disk.</summary>
    private async Task AppendDurableAsync(QueuedMessage message, StatusFlags flags, long now, (ushort, RecipientState)[] changes)
    {
        await AppendStatusAsync(message, flags, now, changes);
        // Everything appended before this call is in the commit it waits for.
        await _spool.WaitForCommitAsync(_spool.TailAddress - 1);
    }

    /// <summary>Appends a status record; the caller waits for a commit that covers it.</summary>
    private async ValueTask AppendStatusAsync(QueuedMessage message, StatusFlags flags, long now, (ushort, RecipientState)[] changes)
    {
        await _events.DurableAsync(); // the admin_action event before the status it describes
        int attempts;
        long next;
        lock (message)
        {
            attempts = message.Attempts;
            next = (flags & StatusFlags.Done) != 0 ? 0 : flags == StatusFlags.None ? now : message.NextAttemptUnixMs;
        }
        await _spool.AppendStatusAsync(new StatusRecord
        {
            Id = message.Id,
            TimeUnixMs = now,
            Flags = flags,
            Attempts = attempts,
            NextAttemptUnixMs = next,
            Changes = changes,
        });
    }

    private void Event(string name, QueuedMessage message) =>
        _deliveryLog.Write(new DeliveryEvent { Event = name, Id = message.Id, Attempt = message.Attempts });
}
