using System.Runtime.InteropServices;
using NativeRelay.Config;
using NativeRelay.Control;
using NativeRelay.Delivery;
using NativeRelay.Net;
using NativeRelay.Routing;
using NativeRelay.Smtp;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Hosting;

/// <summary>
/// The relay assembled: spool, recovery, delivery loops, SMTP listeners, and the housekeeping
/// that reclaims log space. Start order matters: the queue is rebuilt and delivery running before
/// the first client can connect; stop order is the reverse, so accepted mail is always committed.
/// </summary>
public sealed class RelayHost : IAsyncDisposable
{
    // The spool's housekeeping: a full-disk recovery check every second; truncation and compaction
    // pace themselves inside SpoolLog.MaintainAsync.
    private static readonly TimeSpan HousekeepingInterval = TimeSpan.FromSeconds(1);

    private readonly RelaySettings _settings;
    private readonly Log _log;
    private readonly Func<RelaySettings>? _reloadSource;
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<SocketListener> _listeners = new();
    private readonly SmtpServerSwitch _servers = new();
    private readonly object _reloadLock = new();
    private RelaySettings _running;
    private Router? _router;
    private SpoolLog? _spool;
    private DeliveryScheduler? _scheduler;
    private QueueIdGenerator? _ids;
    private Task? _housekeeping;
    private Task? _tlsReports;
    private Task? _recovering;
    private DeliveryLog? _deliveryLog;
    private NativeRelay.Events.IEventPublisher _events = NativeRelay.Events.NullEventPublisher.Instance;
    private ControlServer? _control;
    private NativeRelay.Traffic.Suppression.SuppressionList? _suppression;
    private NativeRelay.Maildrop.MaildropPickup? _maildrop;
    private IDisposable? _reloading;
    private PosixSignalRegistration? _hangup;
    private IDisposable? _queueGauges;
    private NativeRelay.Api.ApiHost? _api;
    private NativeRelay.Cluster.ClusterNode? _cluster;
    private bool _stopped;

    /// <param name="reloadSource">
    /// Reads and validates the configuration again (the same path as at start). With it, SIGHUP
    /// reloads the whole configuration (<see cref="Reload"/>); without it (settings built in
    /// code), SIGHUP re-reads the certificate, users and recipients files only.
    /// </param>
    public RelayHost(RelaySettings settings, Log log, Func<RelaySettings>? reloadSource = null)
    {
        _settings = settings;
        _running = settings;
        _log = log;
        _reloadSource = reloadSource;
    }

    public IReadOnlyList<SocketListener> Listeners => _listeners;
    public SpoolLog Spool => _spool ?? throw new InvalidOperationException("not started");
    public DeliveryScheduler Scheduler => _scheduler ?? throw new InvalidOperationException("not started");
    /// <summary>The receiving side new connections get (replaced by a reload).</summary>
    public SmtpServer? Server => _servers.Current;
    /// <summary>Where stages report events (the HTTP API publishes unsubscribe and suppression events here).</summary>
    public NativeRelay.Events.IEventPublisher Events => _events;
    /// <summary>The settings in force: those of the start, or of the last reload that was applied.</summary>
    public RelaySettings Settings => Volatile.Read(ref _running);
    /// <summary>The HTTP side (API, metrics); null when neither http.listen nor metrics.listen is set.</summary>
    public NativeRelay.Api.ApiHost? Api => _api;

    /// <summary>This relay as a node of a fleet (null without a cluster section).</summary>
    public NativeRelay.Cluster.ClusterNode? Cluster => _cluster;

    /// <summary>Where the API's receptions and unsubscribes go (the events stage); set before <see cref="StartAsync"/>.</summary>
    public NativeRelay.Api.IApiEvents ApiEvents { get; init; } = NativeRelay.Api.IApiEvents.None;

    public async Task StartAsync()
    {
        // Bind first (port 25 needs root or CAP_NET_BIND_SERVICE), then drop privileges, then open
        // the spool as the unprivileged user. The listeners accept nothing until Start below.
        // An egress source whose address is not on this host is a configuration error (serve checks it too).
        _settings.Traffic.CheckBind();
        var limiter = new ConnectionLimiter(_settings.Limits.MaxConnections, _settings.Limits.MaxConnectionsPerIp);
        // Every listener with its kind (smtp, submission, implicit-tls); settings built by hand may only have Listen.
        var configured = _settings.Listeners.Count > 0
            ? _settings.Listeners
            : _settings.Listen.Select(e => new ListenerSettings(e, ListenerKind.Smtp)).ToList();
        foreach (var l in configured)
        {
            SocketListener listener;
            try
            {
                listener = new SocketListener(l.EndPoint, _servers, limiter, _log, l.Kind);
            }
            catch (System.Net.Sockets.SocketException e)
            {
                throw new ConfigException(NativeRelay.Net.ExclusiveBind.Describe(l.EndPoint, e));
            }
            _listeners.Add(listener);
        }
        // The HTTP endpoints (Kestrel) are bound here too, before the privilege drop; the API
        // answers 503 until the message path is attached below.
        _api = await NativeRelay.Api.ApiHost.StartAsync(_settings, () => _servers.Current?.Certificates, _log);
        if (_api is not null)
            _api.Events = ApiEvents;
        if (_settings.Lifecycle.User is { } user)
        {
            var account = PrivilegeDrop.Lookup(user);
            if (PrivilegeDrop.CurrentUid != account.Uid)
                PrivilegeDrop.PrepareDirectory(_settings.SpoolDirectory, account);
            PrivilegeDrop.Become(account);
            _log.Info($"running as user {account.Name} (uid {account.Uid}, gid {account.Gid})");
        }

        var ids = _ids = new QueueIdGenerator();
        _spool = SpoolLog.Open(_settings.SpoolDirectory, _settings.SpoolTuning, _log);
        var recovered = SpoolRecovery.Recover(_spool, ids, _log);

        // Delivery: static routes and MX resolution, the JSON delivery log, and the scheduler,
        // which needs the id generator and the spool to queue the bounces (DSNs) it makes.
        _router = new Router(_settings.Routing, _settings.Hostname);
        _deliveryLog = DeliveryLog.Open(_settings.Routing.DeliveryLogPath);
        _scheduler = new DeliveryScheduler(_settings, _spool, _router, _log, ids, _deliveryLog);
        // The fleet: joined before delivery starts, so the first connections already take shared
        // limits. A Redis that does not answer is no reason not to start (the node runs degraded).
        if (_settings.Cluster is { } cluster)
        {
            var scheduler = _scheduler;
            _cluster = await NativeRelay.Cluster.ClusterNode.StartAsync(cluster, () =>
            {
                var (active, deferred, held) = scheduler.Counts();
                return new NativeRelay.Cluster.NodeFacts(active, deferred, held, NativeRelay.Cluster.ClusterMembership.RelayVersion());
            }, _log);
            _scheduler.Traffic.Shared = _cluster.Limits; // rates and connection limits become the fleet's
            if (_api is not null)
                _api.TokenRates.Shared = _cluster.Limits; // and the HTTP tokens' request rates
            // Automation actions and resumes hold for the fleet (the ones in force loaded now).
            _scheduler.Traffic.Sync = await _cluster.ShareActionsAsync(_scheduler.Traffic.Actions, _log);
        }
        // The suppression list lives in the spool directory: opened (its journal replayed) before
        // the first delivery or RCPT can ask it.
        if (_settings.Suppression.Enabled)
        {
            try
            {
                _suppression = NativeRelay.Traffic.Suppression.SuppressionList.Open(_settings.SpoolDirectory, _log);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new ConfigException($"suppression list: {e.Message}");
            }
            _scheduler.Suppression = _suppression;
            // One list for the fleet: this node's copy follows it (loaded now when Redis answers).
            if (_cluster is not null)
                await _cluster.ShareSuppressionAsync(_suppression, _log);
            _log.Info($"suppression list: {_suppression.Count} entr{(_suppression.Count == 1 ? "y" : "ies")} ({_suppression.JournalPath})");
        }
        // Events: the journal beside the spool and a sender per webhook (nothing at all without webhooks).
        _events = NativeRelay.Events.EventPublisher.Start(_settings.Events, _settings.SpoolDirectory, _log);
        _scheduler.Events = _events;
        // Unsubscribes on the HTTP side become events too (unless a host embedding the relay
        // asked for its own hook).
        if (_api is not null)
            _api.PoolExists = name => Settings.Traffic.Pools.Count == 0 || name == "default" || Settings.Traffic.Pools.ContainsKey(name);
        if (_api is not null && ReferenceEquals(ApiEvents, NativeRelay.Api.IApiEvents.None) && _events.IsEnabled)
            _api.Events = new NativeRelay.Api.JournalApiEvents(_events);
        if (!_settings.LocalDelivery.IsEmpty)
            _scheduler.LocalAgent = new NativeRelay.Local.ReloadableLocalDeliveryAgent(CreateLocalAgent(_settings));
        // sendmail's maildrop: files whose message the spool recovered are removed before any
        // delivery can start, so a file is queued exactly once across a crash.
        _maildrop = new NativeRelay.Maildrop.MaildropPickup(_settings.SpoolDirectory, _spool, ids, _scheduler,
            _settings.Hostname, _settings.Limits.MaxMessageSize, _log) { Events = _events };
        _maildrop.ResolveInterrupted(recovered.Select(m => m.Id).ToHashSet());
        _scheduler.Start();
        // The recovered queue goes to delivery in the background: with a large backlog that takes
        // seconds (each message's envelope is read back from its head), and neither new mail nor
        // the first deliveries need wait for it. The spool's index already holds every recovered
        // message, so nothing is truncated under them, and new ids never collide with theirs.
        _recovering = Task.Run(() => HandOverRecoveredAsync(recovered));
        // `nativerelay queue ...` talks to the delivery side through the control socket.
        _control = ControlServer.Start(_spool, (object)_scheduler as IQueueAdmin, _log, _suppression, _scheduler.Traffic);
        if (_control is not null && _cluster is not null)
            _control.AttachCluster(_cluster); // nativerelay cluster status
        _queueGauges = QueueGauges.Attach(_scheduler); // queue sizes for the metrics endpoint, counted when scraped
        _maildrop.Start();

        var server = CreateServer(_settings, authThrottle: null);
        _servers.Swap(server);
        // HTTP injection takes the SMTP path's way into the spool, and signs with the current server's keys.
        // Unsubscribes go into the suppression list when there is one (else into a file of their own).
        _api?.Attach(_settings.Http, new SpoolIntake(_spool, _scheduler) { Events = _events }, ids, () => _servers.Current?.Signer, _settings.SpoolDirectory,
            _settings.Hostname, _settings.Limits.MaxMessageSize,
            _suppression is null ? null : new NativeRelay.Api.SuppressionUnsubscribeRecorder(_suppression),
            _cluster?.ShareIdempotency(_log)); // a fleet's idempotency keys hold on every node
        server.LogConfiguration(_listeners.Select(l => new ListenerInfo(l.EndPoint, l.Kind)));
        _reloading = server.StartReloading(_stopping.Token, handleHangup: _reloadSource is null);
        if (_reloadSource is not null)
            _hangup = ListenForHangup();
        foreach (var listener in _listeners)
        {
            listener.Start(_stopping.Token);
            _log.Info($"listening on {listener.EndPoint}" + (listener.Kind == ListenerKind.Smtp ? "" : $" ({ListenerSettings.KindName(listener.Kind)})"));
        }
        _housekeeping = HousekeepingAsync(_stopping.Token);
        // Starting leaves garbage (the configuration's parsing, Kestrel's host and DI when the HTTP
        // side is on: ~4 MiB) that an idle relay never collects, and only a full collection
        // decommits: one aggressive collection a second after start gives it back (perf/RESULTS.md).
        _ = Task.Delay(TimeSpan.FromSeconds(1), _stopping.Token).ContinueWith(
            static t => { if (!t.IsCanceled) GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true); },
            CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
        if (_settings.Routing.TlsRptSendDaily && _settings.Routing.TlsRpt
            && _listeners.FirstOrDefault(l => l.Kind == ListenerKind.Smtp) is { } smtp)
            _tlsReports = NativeRelay.TlsPolicies.Reporting.TlsRptSchedule.RunAsync(_settings, smtp.EndPoint, line => _log.Info(line), _stopping.Token);
        if (_settings.Traffic.IsConfigured)
            foreach (var (key, value) in _settings.Traffic.Describe())
                _log.Info($"traffic: {key}: {value}");
        foreach (var line in StartupChecks.Warnings(_settings))
            _log.Warn(line);
        _log.Info($"{_settings.Hostname} ready: spool {_settings.SpoolDirectory}, {_scheduler.LoopCount} delivery loop(s), "
                  + (_settings.RelayTo is null ? "no relay-to" : $"relay-to {_settings.RelayTo}"));
    }

    /// <summary>The receiving side for these settings: certificate, users and recipients files loaded (ConfigException if one cannot be).</summary>
    private SmtpServer CreateServer(RelaySettings settings, NativeRelay.Smtp.Auth.AuthThrottle? authThrottle)
    {
        var server = new SmtpServer(settings, Spool, Scheduler, _ids!, _log, authThrottle: authThrottle) { Events = _events };
        server.Suppression = _suppression;
        // Domains delivered on this host take mail from anyone, for the users the local agent knows
        // (550 5.1.1 for the rest at RCPT); its aliases files are re-read with the server's files.
        // Both ask the agent in use at the time: a reload swaps the agent before this server
        // takes its first session.
        if (!settings.LocalDelivery.IsEmpty)
        {
            server.Policy.LocalLookup = (address, localPart, domain) =>
                _scheduler?.LocalAgent is NativeRelay.Local.ReloadableLocalDeliveryAgent agent
                    ? agent.LookupRecipient(address, localPart, domain)
                    : NativeRelay.Policy.LocalRecipientLookup.NotLocal;
            server.AddReloadable(force => (_scheduler?.LocalAgent as NativeRelay.Local.ReloadableLocalDeliveryAgent)?.ReloadFiles(force));
        }
        return server;
    }

    /// <summary>Maildir/LMTP delivery for the local domains (aliases files read: ConfigException if one is wrong).</summary>
    private NativeRelay.Local.LocalDeliveryAgent CreateLocalAgent(RelaySettings settings)
    {
        // Local domains go to Maildir or LMTP instead of SMTP. An alias pointing off-host is
        // handed back to this relay's own first listener, so it is queued and routed like any mail.
        var d = settings.Delivery;
        var first = settings.Listen.Count > 0 ? settings.Listen[0] : settings.Listeners[0].EndPoint;
        var forwarder = new NativeRelay.Local.SmtpResubmitForwarder(
            new NativeRelay.Local.MailEndpoint(first.Address.ToString(), first.Port, null), settings.Hostname,
            TimeSpan.FromSeconds(d.ConnectTimeoutSeconds), TimeSpan.FromSeconds(d.CommandTimeoutSeconds));
        return NativeRelay.Local.LocalDeliveryAgent.Create(settings.LocalDelivery, settings.Hostname,
            TimeSpan.FromSeconds(d.ConnectTimeoutSeconds), TimeSpan.FromSeconds(d.CommandTimeoutSeconds), forwarder);
    }

    private PosixSignalRegistration? ListenForHangup()
    {
        try
        {
            return PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
            {
                context.Cancel = true; // reload, never terminate
                ThreadPool.UnsafeQueueUserWorkItem(static h =>
                {
                    var host = (RelayHost)h!;
                    host._log.Info("SIGHUP: reloading the configuration");
                    try
                    {
                        host.Reload();
                    }
                    catch (Exception e) when (e is not OutOfMemoryException)
                    {
                        host._log.Error($"reload failed while applying: {e}");
                    }
                }, this);
            });
        }
        catch (PlatformNotSupportedException)
        {
            return null;
        }
    }

    /// <summary>
    /// Reads the configuration again and, if it is valid (certificate, users, recipients and
    /// aliases files included), applies it: new sessions get the new receiving settings, new
    /// rounds the new routes and delivery settings; sessions and deliveries in progress finish
    /// under the settings they started with. Options that cannot change in a running process are
    /// logged as needing a restart and keep their values. An invalid configuration is refused as
    /// a whole and changes nothing. Returns true when the new configuration was applied.
    /// </summary>
    public bool Reload()
    {
        if (_reloadSource is null)
        {
            Server?.ReloadFiles(force: true);
            ReloadTokens(_settings);
            return true;
        }
        lock (_reloadLock)
        {
            if (_stopped || _scheduler is null)
                return false;
            var running = _running;
            ReloadPlan plan;
            SmtpServer server;
            NativeRelay.Local.LocalDeliveryAgent? local;
            NativeRelay.Api.ApiConfiguration? api;
            Router? router = null;
            try
            {
                // Everything is built (and so checked) before anything is swapped in.
                plan = ReloadPlan.Create(_settings, running, _reloadSource());
                var s = plan.Settings;
                StartupChecks.Check(s);
                server = CreateServer(s, _servers.Current?.AuthThrottle);
                local = s.LocalDelivery.IsEmpty ? null : CreateLocalAgent(s);
                api = _api is not null && s.Http is { } http ? NativeRelay.Api.ApiConfiguration.Load(http) : null;
                if (plan.Changed.Any(AffectsRouting))
                    router = new Router(s.Routing, s.Hostname);
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // ConfigException is the usual case (its message names the option or file); anything
                // else is refused the same way rather than taking the running relay down.
                _log.Error($"reload refused: {(e is ConfigException ? e.Message : ExceptionText.Of(e))}; keeping the running configuration");
                return false;
            }

            var next = plan.Settings;
            CrashPoints.Reach(CrashPoints.ReloadSwapping);
            if (router is not null)
                _router = router;
            if (local is null)
                _scheduler.LocalAgent = null;
            else if (_scheduler.LocalAgent is NativeRelay.Local.ReloadableLocalDeliveryAgent reloadable)
            {
                if (reloadable.Use(local) is { } aliases)
                    _log.Info(aliases);
            }
            else
                _scheduler.LocalAgent = new NativeRelay.Local.ReloadableLocalDeliveryAgent(local);
            _scheduler.Reconfigure(next, _router!);
            _servers.Swap(server);
            _api?.Use(api);
            _reloading?.Dispose();
            _reloading = server.StartReloading(_stopping.Token, handleHangup: false);
            _log.Configure(next.Lifecycle.LogLevel, next.Lifecycle.LogFormat);
            Volatile.Write(ref _running, next);

            if (server.Certificates is not null)
                _log.Info($"TLS certificate loaded: {server.Certificates.Describe()}");
            if (server.Users is not null)
                _log.Info($"reloaded users from {server.Users.Path}: {server.Users.Count} user(s)");
            if (api is not null)
                _log.Info($"reloaded API tokens from {api.Tokens.Path}: {api.Tokens.Count} token(s)");
            if (next.LocalRecipientsFile is not null)
                _log.Info($"reloaded local recipients from {next.LocalRecipientsFile}: {server.Policy.RecipientCount} entries");
            foreach (var option in plan.NeedsRestart)
                _log.Warn($"needs a restart: {option} (the running value stays until then)");
            _log.Info(plan.Changed.Count == 0
                ? "configuration reloaded: no option changed (the files it names were read again)"
                : $"configuration reloaded: {string.Join(", ", plan.Changed)} changed (for new sessions and deliveries)");
            return true;
        }
    }

    /// <summary>SIGHUP without a configuration source: the tokens file is read again (a broken one keeps the running tokens).</summary>
    private void ReloadTokens(RelaySettings settings)
    {
        if (_api is null || settings.Http is not { } http)
            return;
        try
        {
            var api = NativeRelay.Api.ApiConfiguration.Load(http);
            _api.Use(api);
            _log.Info($"reloaded API tokens from {api.Tokens.Path}: {api.Tokens.Count} token(s)");
        }
        catch (ConfigException e)
        {
            _log.Error($"reload refused: {e.Message}; keeping the running tokens");
        }
    }

    // Options the router is built from (RoutingSettings: routes, relay-to, DNS, TLS policy, rates, bounces).
    private static bool AffectsRouting(string option) =>
        option.StartsWith("routing", StringComparison.Ordinal) || option == "relayTo"
        || option.StartsWith("delivery.", StringComparison.Ordinal) || option.StartsWith("bounces", StringComparison.Ordinal);

    private async Task HandOverRecoveredAsync(List<RecoveredMessage> recovered)
    {
        if (recovered.Count == 0)
            return;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            // Stops at the next message when the relay stops; the rest stay in the spool for the next start.
            await Scheduler.EnqueueRecoveredAsync(recovered.TakeWhile(_ => !_stopping.IsCancellationRequested));
            if (!_stopping.IsCancellationRequested)
                _log.Info($"recovered queue handed to delivery: {recovered.Count} message(s) in {clock.ElapsedMilliseconds} ms");
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            if (!_stopping.IsCancellationRequested)
                _log.Error($"handing the recovered queue to delivery failed: {ExceptionText.Of(e)}");
        }
    }

    private async Task HousekeepingAsync(CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(HousekeepingInterval, stopping);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            // Truncation to the oldest record a live message needs, compaction, and reopening the
            // log after a failed commit once the disk has room again.
            await Spool.MaintainAsync();
            // The delivery side's automatic suppressions of the last second, made durable.
            try
            {
                _suppression?.Commit();
            }
            catch (IOException e)
            {
                _log.Error($"suppression list: commit failed: {e.Message}");
            }
        }
    }

    /// <summary>
    /// Graceful stop: no new connections; idle sessions get 421; transactions in progress may
    /// finish (up to the deadline); delivery stops; the spool is committed and closed.
    /// </summary>
    public async Task StopAsync(TimeSpan deadline)
    {
        foreach (var listener in _listeners)
            listener.StopAccepting();
        if (_api is not null)
        {
            // Requests in flight finish (their messages are committed before they are answered).
            await _api.DisposeAsync();
            _api = null;
        }
        lock (_reloadLock)
        {
            _stopped = true;
            _hangup?.Dispose();
            _hangup = null;
            _reloading?.Dispose();
            _reloading = null;
        }
        _queueGauges?.Dispose();
        if (_control is not null)
        {
            await _control.DisposeAsync();
            _control = null;
        }
        if (_maildrop is not null)
        {
            await _maildrop.DisposeAsync();
            _maildrop = null;
        }
        _stopping.Cancel();
        await Task.WhenAll(_listeners.Select(l => l.DrainAsync(deadline)));
        int cut = _listeners.Sum(l => l.SessionCount);
        if (cut > 0)
            _log.Warn($"drain time ({deadline.TotalSeconds:0} s) is over: closing {cut} session(s) still running; their messages were not acknowledged");
        if (_recovering is not null)
            await _recovering;
        if (_scheduler is not null)
            await _scheduler.StopAsync(TimeSpan.FromSeconds(5));
        _deliveryLog?.Dispose();
        _deliveryLog = null;
        if (_housekeeping is not null)
            await _housekeeping;
        if (_tlsReports is not null)
            await _tlsReports;
        if (_cluster is not null)
            await _cluster.StopSharingSuppressionAsync(); // before the list closes: its last changes sent, or kept to send
        _suppression?.Dispose();
        _suppression = null;
        if (_spool is not null)
        {
            await _spool.DisposeAsync();
            _spool = null;
        }
        // After the spool: nothing can record a status without its event any more. The last
        // events are written; the webhooks stop (what they had not acknowledged is sent at the next start).
        if (_events is NativeRelay.Events.EventPublisher publisher)
            await publisher.DisposeAsync();
        if (_cluster is not null)
        {
            await _cluster.DisposeAsync();
            _cluster = null;
        }
        _events = NativeRelay.Events.NullEventPublisher.Instance;
        _log.Info("stopped");
    }

    public async ValueTask DisposeAsync()
    {
        if (!_stopping.IsCancellationRequested || _spool is not null)
            await StopAsync(TimeSpan.FromSeconds(5));
        _stopping.Dispose();
    }
}
