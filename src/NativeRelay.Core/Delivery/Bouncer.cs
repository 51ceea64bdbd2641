using NativeRelay.Config;
using NativeRelay.Message;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Delivery;

/// <summary>
/// Makes delivery status notifications and puts them in the queue like any other message: built
/// by <see cref="DsnBuilder"/>, from MAILER-DAEMON with a null reverse-path (MAIL FROM:&lt;&gt;),
/// to the original envelope sender, appended to the spool and committed before anything else
/// happens, then routed and delivered (and retried) as usual. Flagged <see cref="EnvelopeFlags.IsBounce"/>,
/// so its own failure never makes another one.
/// <para>
/// What comes back (RFC 3461 4.3): RET=HDRS the headers, RET=FULL the whole message, and without
/// RET the whole message up to <c>bounces.returnFullMaxBytes</c>, only its headers above. A whole
/// message that would make the DSN larger than <c>limits.maxMessageSize</c> is cut to its headers
/// (and the DSN says so).
/// </para>
/// </summary>
internal sealed class Bouncer(RelaySettings settings, SpoolLog spool, QueueIdGenerator ids, DeliveryScheduler scheduler, Log log)
{
    /// <summary>Room for the DSN's own parts when it returns a whole message.</summary>
    private const long ReportOverhead = 64 * 1024;

    /// <summary>Queues one DSN about <paramref name="original"/>; returns its queue id once it is durable.</summary>
    public async Task<ulong> SendAsync(QueuedMessage original, IReadOnlyList<DsnRecipient> recipients, long nowUnixMs)
    {
        var envelope = original.Envelope;
        var body = await original.AcquireBodyAsync(spool);
        try
        {
            bool full;
            string? note = null;
            if ((envelope.Flags & EnvelopeFlags.ReturnFull) != 0)
                full = true;
            else if ((envelope.Flags & EnvelopeFlags.ReturnHeadersOnly) != 0)
                full = false;
            else
                full = body.ContentLength <= settings.Routing.ReturnFullMaxBytes;
            if (full && body.ContentLength + ReportOverhead > settings.Limits.MaxMessageSize)
            {
                full = false;
                note = "The message is too large to be returned in full; only its headers are attached.";
            }

            ulong id = ids.Next();
            var now = DateTimeOffset.FromUnixTimeMilliseconds(nowUnixMs);
            var report = new DsnReport
            {
                ReportingMta = settings.Hostname,
                ReturnPath = envelope.Sender,
                OriginalQueueId = original.Id,
                DsnQueueId = id,
                ArrivalDate = DateTimeOffset.FromUnixTimeMilliseconds(envelope.ArrivalUnixMs),
                Date = now,
                EnvelopeId = envelope.EnvelopeId,
                Recipients = recipients,
                ReturnFullMessage = full,
                ReturnNote = note,
                International = (envelope.Flags & EnvelopeFlags.SmtpUtf8) != 0,
            };
            var dsn = DsnBuilder.Build(report, body, out bool eightBit);
            var flags = EnvelopeFlags.IsBounce;
            if (eightBit)
                flags |= EnvelopeFlags.EightBitMime;
            if ((envelope.Flags & EnvelopeFlags.SmtpUtf8) != 0)
                flags |= EnvelopeFlags.SmtpUtf8;
            var bounceEnvelope = new Envelope
            {
                Sender = [],
                Recipients = [envelope.Sender],
                ClientAddress = "local",
                HeloName = settings.Hostname,
                ArrivalUnixMs = nowUnixMs,
                Flags = flags,
            };

            long head, first;
            scheduler.ReserveSpool(id);
            try
            {
                (head, first) = await spool.AppendMessageAsync(id, bounceEnvelope, dsn);
                await spool.WaitForCommitAsync(head);
            }
            catch
            {
                scheduler.CancelReservation(id);
                dsn.Release();
                throw;
            }
            log.Info($"{QueueIdGenerator.ToString(id)}: queued from=<> to=<{envelope.SenderText}> size={dsn.ContentLength} (notification about {original.IdText})");
            await scheduler.EnqueueAsync(new QueuedMessage
            {
                Id = id,
                HeadAddress = head,
                FirstAddress = first,
                Envelope = bounceEnvelope,
                Recipients = new RecipientState[1],
                Body = dsn, // the queue takes the build's reference
                Size = dsn.ContentLength,
            });
            return id;
        }
        finally
        {
            body.Release();
        }
    }
}
