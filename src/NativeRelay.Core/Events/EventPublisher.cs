using NativeRelay.Telemetry;

namespace NativeRelay.Events;

/// <summary>
/// The events stage: the journal in <c>SPOOL/events/</c> and one <see cref="WebhookSink"/> per
/// configured webhook. Stages publish through <see cref="IEventPublisher"/>; the journal makes the
/// events durable in group commits; the sinks send them from there. Segments every sink has
/// acknowledged are deleted.
/// </summary>
public sealed class EventPublisher : IEventPublisher, IAsyncDisposable
{
    private readonly EventJournal _journal;
    private readonly List<WebhookSink> _sinks = new();
    private readonly Log _log;
    private int _releasing;

    private EventPublisher(EventJournal journal, Log log)
    {
        _journal = journal;
        _log = log;
    }

    /// <summary>The publisher for these settings: <see cref="NullEventPublisher"/> when no webhook is configured.</summary>
    public static IEventPublisher Start(EventsSettings settings, string spoolDirectory, Log log)
    {
        if (!settings.Enabled)
            return NullEventPublisher.Instance;
        var journal = EventJournal.Open(Path.Combine(spoolDirectory, EventJournal.DirectoryName), settings.SegmentBytes, log);
        var publisher = new EventPublisher(journal, log);
        try
        {
            foreach (var w in settings.Webhooks)
                publisher._sinks.Add(new WebhookSink(w, journal, log, publisher.Release));
        }
        catch
        {
            journal.Dispose();
            throw;
        }
        publisher.Release();
        foreach (var sink in publisher._sinks)
        {
            sink.Start();
            log.Info($"events: webhook {sink.Name} from event {sink.Acknowledged} ({sink.Backlog} waiting)");
        }
        return publisher;
    }

    public bool IsEnabled => true;

    public EventJournal Journal => _journal;

    /// <summary>The webhooks, for tests: their cursors and backlogs.</summary>
    internal IReadOnlyList<WebhookSink> Sinks => _sinks;

    public void Publish(RelayEvent e)
    {
        var json = EventJson.Serialize(e);
        if (json.Length > JournalFormat.MaxBodySize && !e.Metadata.IsEmpty)
        {
            // The injection's metadata made the event too large to store; the event still goes out, without it.
            _log.Warn($"events: the metadata of a {RelayEventTypes.Name(e.Type)} event is too large ({e.Metadata.Length} bytes); sent without it");
            json = EventJson.Serialize(new RelayEvent
            {
                Type = e.Type, TimeUnixMs = e.TimeUnixMs, QueueId = e.QueueId, MessageId = e.MessageId, Recipient = e.Recipient,
                Sender = e.Sender, Pool = e.Pool, Source = e.Source, Site = e.Site, Reply = e.Reply, BounceClass = e.BounceClass,
                Tags = e.Tags, Attempt = e.Attempt, Host = e.Host, Ip = e.Ip, DsnQueueId = e.DsnQueueId, Action = e.Action,
                SenderDomain = e.SenderDomain, ListId = e.ListId,
            });
        }
        if (json.Length > JournalFormat.MaxBodySize)
        {
            // Only an injection's fields could make one this large; the message path must not fail for it.
            _log.Error($"events: a {RelayEventTypes.Name(e.Type)} event of {json.Length} bytes is over the journal's limit; not kept");
            return;
        }
        _journal.Append(e.Type, e.Pool, json);
        EventMetrics.Published.Increment();
    }

    public Task DurableAsync() => _journal.WaitDurableAsync();

    // Deletes the segments every webhook is done with. Called by a sink after it moves its cursor.
    private void Release()
    {
        if (Interlocked.Exchange(ref _releasing, 1) != 0)
            return;
        try
        {
            long min = long.MaxValue;
            foreach (var sink in _sinks)
                min = Math.Min(min, sink.Acknowledged);
            if (min != long.MaxValue)
                _journal.ReleaseBefore(min);
        }
        finally
        {
            Volatile.Write(ref _releasing, 0);
        }
    }

    /// <summary>Stops the webhooks (a POST in flight is sent again at the next start), then writes what is pending and closes the journal.</summary>
    public async ValueTask DisposeAsync()
    {
        foreach (var sink in _sinks)
            await sink.DisposeAsync();
        _journal.Dispose();
    }
}
