using System.Collections.Concurrent;
using System.Text;

namespace NativeRelay.Telemetry;

/// <summary>
/// Metrics of the event journal and its webhooks, in the relay's registry. The class is touched
/// (and the families registered) only when events are on, so a relay without webhooks scrapes
/// none of these.
/// </summary>
public static class EventMetrics
{
    public static readonly Counter Published = RelayMetrics.Registry.Counter(
        "nativerelay_events_published_total", "Events appended to the event journal.");

    public static readonly Counter JournalCommits = RelayMetrics.Registry.Counter(
        "nativerelay_event_journal_commits_total", "Group commits (one write and fsync each) of the event journal.");

    public static readonly BoundedCounterVec Sent = RelayMetrics.Registry.BoundedCounterVec(
        "nativerelay_webhook_events_sent_total", "Events a webhook acknowledged (a 2xx answer to the POST carrying them).", "webhook", 64);

    public static readonly BoundedCounterVec Failed = RelayMetrics.Registry.BoundedCounterVec(
        "nativerelay_webhook_posts_failed_total", "POSTs to a webhook that failed (no answer, or not 2xx) and will be retried.", "webhook", 64);

    public static readonly BoundedCounterVec Dropped = RelayMetrics.Registry.BoundedCounterVec(
        "nativerelay_webhook_events_dropped_total", "Events a webhook never got because its backlog passed maxBacklog (the oldest are dropped).", "webhook", 64);

    public static readonly SourcedGaugeVec Backlog = RelayMetrics.Registry.Add(new SourcedGaugeVec(
        "nativerelay_webhook_backlog_events", "Events durable in the journal and not yet acknowledged by the webhook.", "webhook"));
}

/// <summary>A gauge per label value, each read from its owner when scraped (a webhook's backlog).</summary>
public sealed class SourcedGaugeVec(string name, string help, string labelName) : Metric(name, help)
{
    private readonly ConcurrentDictionary<string, Func<long>> _sources = new(StringComparer.Ordinal);

    protected override string Type => "gauge";

    public void Set(string labelValue, Func<long> source) => _sources[labelValue] = source;

    public void Remove(string labelValue) => _sources.TryRemove(labelValue, out _);

    public long Get(string labelValue) => _sources.TryGetValue(labelValue, out var s) ? s() : 0;

    protected override void WriteSamples(StringBuilder sb)
    {
        foreach (var (label, source) in _sources.OrderBy(p => p.Key, StringComparer.Ordinal))
            Sample(sb, Name, Label(labelName, label), source());
    }
}
