namespace NativeRelay.Telemetry;

/// <summary>
/// The relay's metrics, one static field each, so any stage can count without plumbing:
/// <c>RelayMetrics.MessagesReceived.Increment()</c>. All of them live in <see cref="Registry"/>,
/// which the metrics endpoint writes out. Names follow Prometheus conventions (base units,
/// seconds and bytes; counters end in _total).
/// </summary>
public static class RelayMetrics
{
    /// <summary>Every metric below, in the order a scrape lists them.</summary>
    public static MetricsRegistry Registry { get; } = new();

    /// <summary>Default cap on per-destination series; <c>metrics.maxDestinations</c> changes it.</summary>
    public const int DefaultMaxDestinations = 100;

    // Receiving ---------------------------------------------------------------------------------

    public static readonly Counter ConnectionsAccepted = Registry.Counter(
        "nativerelay_connections_total", "SMTP connections accepted.");

    public static readonly Counter ConnectionsRefused = Registry.Counter(
        "nativerelay_connections_refused_total", "SMTP connections refused at connect (connection limits).");

    public static readonly Counter PregreetRefused = Registry.Counter(
        "nativerelay_pregreet_refused_total", "Connections refused for talking before the greeting (limits.greetingDelaySeconds).");

    public static readonly Counter IdleBeforeCommandClosed = Registry.Counter(
        "nativerelay_idle_before_command_closed_total", "Connections closed for sending no command within limits.idleBeforeCommandSeconds.");

    public static readonly Gauge ConnectionsActive = Registry.Gauge(
        "nativerelay_connections_active", "SMTP connections open now.");

    public static readonly Counter MessagesReceived = Registry.Counter(
        "nativerelay_messages_received_total", "Messages accepted with a 250 reply to DATA or BDAT (spooled).");

    public static readonly Counter MessagesRejected = Registry.Counter(
        "nativerelay_messages_rejected_total", "Message transactions refused after DATA or BDAT (size, loop, bad line ends).");

    public static readonly Counter BytesReceived = Registry.Counter(
        "nativerelay_received_bytes_total", "Bytes of accepted messages (as spooled, Received header included).");

    public static readonly Counter RecipientsSuppressed = Registry.Counter(
        "nativerelay_recipients_suppressed_total", "Recipients on the suppression list: refused at RCPT (550 5.7.1), or failed with a DSN when already queued.");

    public static readonly Counter SuppressionAutoAdded = Registry.Counter(
        "nativerelay_suppression_auto_added_total", "Recipients added to the suppression list by a hard bounce (suppression.autoAdd).");

    public static readonly Counter RecipientsUnknown = Registry.Counter(
        "nativerelay_recipients_unknown_total", "RCPTs refused with 550 5.1.1: unknown users of local or accepted domains.");

    public static readonly Counter RecipientsReceived = Registry.Counter(
        "nativerelay_recipients_received_total", "Recipients of accepted messages.");

    // Spool -------------------------------------------------------------------------------------

    public static readonly Histogram SpoolCommitSeconds = Registry.Histogram(
        "nativerelay_spool_commit_seconds", "Time of one group commit (the synchronous write that makes appended messages durable).",
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1);

    public static readonly Histogram SpoolCommitBatchSize = Registry.Histogram(
        "nativerelay_spool_commit_batch_messages", "Messages made durable by one group commit (sessions waiting on it; 0 when it carried only status records).",
        1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024);

    // Inflow control (delivery.inFlowBacklog) ----------------------------------------------------

    public static readonly Counter InFlowPauses = Registry.Counter(
        "nativerelay_inflow_pauses_total", "Messages a receiver paused before taking, because more new mail waited for delivery than delivery.inFlowBacklog.");

    public static readonly Histogram InFlowPauseSeconds = Registry.Histogram(
        "nativerelay_inflow_pause_seconds", "How long one such pause lasted (at most delivery.inFlowDelaySeconds).",
        0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10);

    /// <summary>
    /// Messages in the queue by state; index with <see cref="QueueActive"/>, <see cref="QueueDeferred"/>
    /// and <see cref="QueueHeld"/>. Read from the delivery side when scraped (<see cref="QueueGauges"/>).
    /// </summary>
    public static readonly GaugeVec QueueSize = Registry.GaugeVec(
        "nativerelay_queue_messages", "Messages in the queue: active (in a delivery round), deferred (waiting for a retry) and held (by an admin).",
        "state", "active", "deferred", "held");

    public const int QueueActive = 0;
    public const int QueueDeferred = 1;
    public const int QueueHeld = 2;

    // Delivery ----------------------------------------------------------------------------------

    public static readonly Counter Delivered = Registry.Counter(
        "nativerelay_delivered_total", "Recipients delivered (a 2xx from the next hop or local delivery).");

    public static readonly Counter Deferred = Registry.Counter(
        "nativerelay_deferred_total", "Recipient delivery attempts that failed temporarily and will be retried.");

    public static readonly Counter Bounced = Registry.Counter(
        "nativerelay_bounced_total", "Recipients that failed for good (a 5xx, or expired in the queue).");

    public static readonly Counter LocalDelivered = Registry.Counter(
        "nativerelay_local_delivered_total", "Recipients delivered locally (Maildir or LMTP); also counted in nativerelay_delivered_total.");

    public static readonly Histogram DeliveryAttemptSeconds = Registry.Histogram(
        "nativerelay_delivery_attempt_seconds", "Time of one delivery attempt with a next hop (MAIL to the last reply after the data, over as many transactions as the peer's recipient limit needs).",
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60);

    public static readonly Histogram DeliveryLatencySeconds = Registry.Histogram(
        "nativerelay_delivery_latency_seconds", "Time from a message's arrival to its delivery, per delivered recipient.",
        0.01, 0.05, 0.1, 0.25, 0.5, 1, 5, 30, 60, 300, 900, 3600, 14400, 86400);

    public static readonly BoundedCounterVec DestinationDelivered = Registry.BoundedCounterVec(
        "nativerelay_destination_delivered_total", "Recipients delivered, by destination (the first destinations seen; the rest as \"other\").",
        "destination", DefaultMaxDestinations);

    public static readonly BoundedCounterVec DestinationDeferred = Registry.BoundedCounterVec(
        "nativerelay_destination_deferred_total", "Recipient attempts deferred, by destination (the first destinations seen; the rest as \"other\").",
        "destination", DefaultMaxDestinations);

    public static readonly BoundedCounterVec DestinationBounced = Registry.BoundedCounterVec(
        "nativerelay_destination_bounced_total", "Recipients failed for good, by destination (the first destinations seen; the rest as \"other\").",
        "destination", DefaultMaxDestinations);

    public static readonly SiteClassCounter BounceClasses = Registry.Add(new SiteClassCounter(
        "nativerelay_bounce_class_total", "Failed and deferred recipients by traffic site (local for local delivery, the recipient domain when no next hop was tried), bounce class and outcome.",
        NativeRelay.Traffic.Bounces.BounceClassNames.All, DefaultMaxDestinations));

    public static readonly BoundedCounterVec TlsConnections = Registry.BoundedCounterVec(
        "nativerelay_tls_connections_total", "Delivery connections opened, by what was verified: none (plain text), encrypted, ca, dane, mta-sts.",
        "verified", 8);

    public static readonly BoundedCounterVec TlsPolicyFailures = Registry.BoundedCounterVec(
        "nativerelay_tls_policy_failures_total", "Next hops refused by a TLS policy, by RFC 8460 result type (starttls-not-supported, certificate-host-mismatch, ...).",
        "reason", 16);

    // Traffic control ---------------------------------------------------------------------------

    public static readonly BoundedCounterVec SiteDelivered = Registry.BoundedCounterVec(
        "nativerelay_site_delivered_total", "Recipients delivered, by site (MX rollup or label; the first sites seen, the rest as \"other\").",
        "site", DefaultMaxDestinations);

    public static readonly BoundedCounterVec SiteDeferred = Registry.BoundedCounterVec(
        "nativerelay_site_deferred_total", "Recipient attempts deferred, by site (the first sites seen, the rest as \"other\").",
        "site", DefaultMaxDestinations);

    public static readonly BoundedCounterVec SiteBounced = Registry.BoundedCounterVec(
        "nativerelay_site_bounced_total", "Recipients failed for good, by site (the first sites seen, the rest as \"other\").",
        "site", DefaultMaxDestinations);

    public static readonly BoundedCounterVec SourceDelivered = Registry.BoundedCounterVec(
        "nativerelay_source_delivered_total", "Recipients delivered, by egress source.",
        "source", 256);

    /// <summary>Automation actions that went in force, by kind (index: TrafficActionKind).</summary>
    public static readonly GaugeVec TrafficActions = Registry.Add(new GaugeVec(
        "nativerelay_traffic_actions_total", "Automation actions that went in force on a (source, site) path, by kind (an action extended by another matching reply counts once).",
        counter: true, "action", "throttle", "suspend", "bounce"));

    /// <summary>Automation actions in force now, by kind (read from the action table when scraped).</summary>
    public static readonly GaugeVec TrafficActionsActive = Registry.GaugeVec(
        "nativerelay_traffic_actions_active", "Automation actions in force now on (source, site) paths, by kind.",
        "action", "throttle", "suspend", "bounce");

    public static readonly BoundedCounterVec TrafficRuleFired = Registry.BoundedCounterVec(
        "nativerelay_traffic_rule_matches_total", "Replies an automation rule matched, by rule.",
        "rule", 64);

    /// <summary>Times a path's queue waited for a limit; index with Wait*.</summary>
    public static readonly GaugeVec TrafficWaits = Registry.Add(new GaugeVec(
        "nativerelay_traffic_limit_waits_total", "Times a (source, site) path waited before opening a connection, by the limit that held it: connections, connection_rate, message_rate (its own or its source's), source (the source's connections).",
        counter: true, "limit", "connections", "connection_rate", "message_rate", "source"));

    public const int WaitConnections = 0;
    public const int WaitConnectionRate = 1;
    public const int WaitMessageRate = 2;
    public const int WaitSource = 3;

    /// <summary>Jobs an automation action moved, deferred or bounced; index with Jobs*.</summary>
    public static readonly GaugeVec TrafficJobs = Registry.Add(new GaugeVec(
        "nativerelay_traffic_jobs_total", "Jobs a path's state turned away: moved to another source of the pool, deferred (suspended path, or a message slot too far off), bounced (bounce action).",
        counter: true, "outcome", "moved", "deferred", "bounced"));

    public const int JobsMoved = 0;
    public const int JobsDeferred = 1;
    public const int JobsBounced = 2;

    // The binary --------------------------------------------------------------------------------

    public static readonly GaugeVec BuildInfo = Registry.GaugeVec(
        "nativerelay_build_info", "Always 1; the label is the version of the running binary.",
        "version", typeof(RelayMetrics).Assembly.GetName().Version?.ToString(3) ?? "0.0.0");

    public static readonly Gauge StartTimeSeconds = Registry.Gauge(
        "nativerelay_start_time_seconds", "When the process started, in Unix seconds.");

    // The process, read when scraped: what an operator watches for a leak or GC pressure, and how
    // perf/ measures the hot path's allocations per message (allocated bytes over messages).

    public static readonly SampledMetric ResidentMemoryBytes = Registry.SampledGauge(
        "nativerelay_process_resident_memory_bytes", "Resident memory of the process (VmRSS).",
        () => Tools.ProcessMemory.ResidentBytes);

    public static readonly SampledMetric CpuSeconds = Registry.SampledCounter(
        "nativerelay_process_cpu_seconds_total", "CPU time of the process, user and system.",
        () => Environment.CpuUsage.TotalTime.TotalSeconds);

    public static readonly SampledMetric GcHeapBytes = Registry.SampledGauge(
        "nativerelay_gc_heap_bytes", "Bytes on the managed heap, live or not yet collected.",
        () => GC.GetTotalMemory(forceFullCollection: false));

    public static readonly SampledMetric GcAllocatedBytes = Registry.SampledCounter(
        "nativerelay_gc_allocated_bytes_total", "Bytes allocated on the managed heap since start.",
        () => GC.GetTotalAllocatedBytes(precise: false));

    public static readonly GaugeVec GcCollections = Registry.Add(new GaugeVec(
        "nativerelay_gc_collections_total", "Garbage collections since start, by the oldest generation collected.",
        counter: true, "generation", "0", "1", "2"));

    public static readonly SampledMetric GcPauseSeconds = Registry.SampledCounter(
        "nativerelay_gc_pause_seconds_total", "Time the runtime paused the process for garbage collection.",
        () => GC.GetTotalPauseDuration().TotalSeconds);

    static RelayMetrics()
    {
        GcCollections.SetSnapshotSource(counts =>
        {
            // CollectionCount(n) counts every collection of generation n or older; the label is
            // the oldest one collected. The three are read again until no gen1 or gen2 collection
            // came between the reads, so no series ever appears to go down.
            int gen2, gen1, gen0;
            do
            {
                gen2 = GC.CollectionCount(2);
                gen1 = GC.CollectionCount(1);
                gen0 = GC.CollectionCount(0);
            }
            while (gen2 != GC.CollectionCount(2) || gen1 != GC.CollectionCount(1));
            counts[0] = gen0 - gen1;
            counts[1] = gen1 - gen2;
            counts[2] = gen2;
        });
        BuildInfo.Set(0, 1);
        long start;
        try
        {
            using var self = System.Diagnostics.Process.GetCurrentProcess();
            start = new DateTimeOffset(self.StartTime.ToUniversalTime()).ToUnixTimeSeconds();
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException or System.ComponentModel.Win32Exception)
        {
            start = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        }
        StartTimeSeconds.Set(start);
    }

    /// <summary>Sets the cap of every per-destination family (from <c>metrics.maxDestinations</c>).</summary>
    public static void SetMaxDestinations(int max)
    {
        DestinationDelivered.SetMaxSeries(max);
        DestinationDeferred.SetMaxSeries(max);
        DestinationBounced.SetMaxSeries(max);
        BounceClasses.SetMaxSites(max);
        SiteDelivered.SetMaxSeries(max);
        SiteDeferred.SetMaxSeries(max);
        SiteBounced.SetMaxSeries(max);
    }
}
