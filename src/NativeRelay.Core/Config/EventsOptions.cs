namespace NativeRelay.Config;

/// <summary>The <c>events</c> section: the durable event journal and the webhooks it feeds (docs/EVENTS.md).</summary>
public sealed class EventsOptions
{
    /// <summary>Where events are POSTed. None (the default): no journal, no events, nothing on the message path.</summary>
    public List<WebhookOptions> Webhooks { get; set; } = [];

    /// <summary>Size at which the journal starts a new segment file (segments are deleted once every webhook has them).</summary>
    public long SegmentBytes { get; set; } = 64L * 1024 * 1024;
}

/// <summary>One webhook: a URL that receives batches of events as signed JSON POSTs.</summary>
public sealed class WebhookOptions
{
    /// <summary>Names the webhook in logs, metrics and its cursor file. Default: the URL's host and a hash of the URL.</summary>
    public string? Name { get; set; }

    /// <summary>http:// or https:// URL the batches are POSTed to.</summary>
    public string Url { get; set; } = "";

    /// <summary>File holding the HMAC-SHA256 secret of the X-NativeRelay-Signature header (its bytes, a final newline removed).</summary>
    public string? SecretFile { get; set; }

    /// <summary>Event types sent (reception, delivery, transient_failure, bounce, expiry, suppression, unsubscribe, dsn_sent, admin_action). Default: all.</summary>
    public List<string>? Types { get; set; }

    /// <summary>Pools whose events are sent (an event without a pool is in "default"). Default: all.</summary>
    public List<string>? Pools { get; set; }

    /// <summary>Most events in one POST.</summary>
    public int BatchSize { get; set; } = 100;

    /// <summary>How long a batch that is not full waits for more events before it is sent.</summary>
    public int BatchMilliseconds { get; set; } = 1000;

    /// <summary>Events waiting for this webhook at most; past it the oldest are dropped (counted and logged), mail never waits.</summary>
    public long MaxBacklog { get; set; } = 1_000_000;

    /// <summary>A POST that has no answer after this long failed (and is retried).</summary>
    public int TimeoutSeconds { get; set; } = 30;

    /// <summary>The longest wait between retries (the wait starts at one second and doubles).</summary>
    public int MaxRetrySeconds { get; set; } = 300;
}
