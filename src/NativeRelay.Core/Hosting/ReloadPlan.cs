using NativeRelay.Config;

namespace NativeRelay.Hosting;

/// <summary>
/// What a reload does with a new, valid configuration: the settings to run on from now on (the
/// new ones, with the options that need a restart kept at the values the process started with),
/// the live options that change, and the options that changed but need a restart.
/// </summary>
public sealed class ReloadPlan
{
    public required RelaySettings Settings { get; init; }
    /// <summary>Options that take effect now (for new sessions and new deliveries).</summary>
    public required IReadOnlyList<string> Changed { get; init; }
    /// <summary>Options that differ from the ones the process started with but only change at a restart.</summary>
    public required IReadOnlyList<string> NeedsRestart { get; init; }

    /// <param name="started">What the process started with (fixes the restart-only options).</param>
    /// <param name="running">What runs now (what the live options are compared with).</param>
    /// <param name="next">The configuration just read and validated.</param>
    public static ReloadPlan Create(RelaySettings started, RelaySettings running, RelaySettings next)
    {
        var startedOptions = started.Options ?? throw new InvalidOperationException("settings built by hand cannot be reloaded");
        var runningOptions = running.Options ?? startedOptions;
        var nextOptions = next.Options ?? throw new InvalidOperationException("settings built by hand cannot be reloaded");

        var changed = ConfigDiff.Compare(runningOptions, nextOptions).Where(p => !ConfigDiff.NeedsRestart(p)).ToList();
        var restart = ConfigDiff.Compare(startedOptions, nextOptions).Where(ConfigDiff.NeedsRestart).ToList();

        // The parts built at start keep their values: listeners and the connection limiter, the
        // spool, the delivery loops and log, the metrics endpoint, the user, events and the cluster. The host name goes into
        // the new parts too (greeting, EHLO, Received:, bounces), so it is carried over explicitly.
        var settings = next with
        {
            Hostname = started.Hostname,
            Listen = started.Listen,
            Listeners = started.Listeners,
            SpoolDirectory = started.SpoolDirectory,
            SpoolTuning = started.SpoolTuning,
            Metrics = started.Metrics,
            // The HTTP server's socket, TLS and body limit are Kestrel's, fixed at start; the
            // tokens, recipients limit, rate and unsubscribe options apply to the next request.
            Http = started.Http is null || next.Http is null
                ? started.Http
                : next.Http with { Listen = started.Http.Listen, Tls = started.Http.Tls, MaxRequestBytes = started.Http.MaxRequestBytes },
            Suppression = next.Suppression with { Enabled = started.Suppression.Enabled },
            Lifecycle = next.Lifecycle with { User = started.Lifecycle.User },
            // The event journal, its webhook senders and the publisher every component holds are
            // started once (RelayHost.StartAsync), like the cluster node: the running settings say
            // what runs, and a changed "events" option is a "needs a restart" line.
            Events = started.Events,
            Cluster = started.Cluster,
        };
        return new ReloadPlan { Settings = settings, Changed = changed, NeedsRestart = restart };
    }
}
