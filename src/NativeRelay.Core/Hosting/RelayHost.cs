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
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<SocketListener> _listeners = new();
    private SpoolLog? _spool;
    private DeliveryScheduler? _scheduler;
    private Task? _housekeeping;
    private Task? _recovering;
    private DeliveryLog? _deliveryLog;
    private ControlServer? _control;
    private IDisposable? _reloading;
    private IDisposable? _queueGauges;

    public RelayHost(RelaySettings settings, Log log)
    {
        _settings = settings;
        _log = log;
    }

    public IReadOnlyList<SocketListener> Listeners => _listeners;
    public SpoolLog Spool => _spool ?? throw new InvalidOperationException("not started");
    public DeliveryScheduler Scheduler => _scheduler ?? throw new InvalidOperationException("not started");
    public SmtpServer? Server { get; private set; }

    public async Task StartAsync()
    {
        var ids = new QueueIdGenerator();
        _spool = SpoolLog.Open(_settings.SpoolDirectory, _settings.SpoolTuning, _log);
        var recovered = SpoolRecovery.Recover(_spool, ids, _log);

        // Delivery: static routes and MX resolution, the JSON delivery log, and the scheduler,
        // which needs the id generator and the spool to queue the bounces (DSNs) it makes.
        var router = new Router(_settings.Routing, _settings.Hostname);
        _deliveryLog = DeliveryLog.Open(_settings.Routing.DeliveryLogPath);
        _scheduler = new DeliveryScheduler(_settings, _spool, router, _log, ids, _deliveryLog);
        NativeRelay.Local.ReloadableLocalDeliveryAgent? localAgent = null;
        if (!_settings.LocalDelivery.IsEmpty)
        {
            // Local domains go to Maildir or LMTP instead of SMTP. An alias pointing off-host is
            // handed back to this relay's own first listener, so it is queued and routed like any mail.
            var d = _settings.Delivery;
            var first = _settings.Listen[0];
            var forwarder = new NativeRelay.Local.SmtpResubmitForwarder(
                new NativeRelay.Local.MailEndpoint(first.Address.ToString(), first.Port, null), _settings.Hostname,
                TimeSpan.FromSeconds(d.ConnectTimeoutSeconds), TimeSpan.FromSeconds(d.CommandTimeoutSeconds));
            _scheduler.LocalAgent = localAgent = new NativeRelay.Local.ReloadableLocalDeliveryAgent(NativeRelay.Local.LocalDeliveryAgent.Create(
                _settings.LocalDelivery, _settings.Hostname,
                TimeSpan.FromSeconds(d.ConnectTimeoutSeconds), TimeSpan.FromSeconds(d.CommandTimeoutSeconds), forwarder));
        }
        _scheduler.Start();
        // The recovered queue goes to delivery in the background: with a large backlog that takes
        // seconds (each message's envelope is read back from its head), and neither new mail nor
        // the first deliveries need wait for it. The spool's index already holds every recovered
        // message, so nothing is truncated under them, and new ids never collide with theirs.
        _recovering = Task.Run(() => HandOverRecoveredAsync(recovered));
        // `nativerelay queue ...` talks to the delivery side through the control socket.
        _control = ControlServer.Start(_spool, (object)_scheduler as IQueueAdmin, _log);
        _queueGauges = QueueGauges.Attach(_scheduler); // queue sizes for the metrics endpoint, counted when scraped

        Server = new SmtpServer(_settings, _spool, _scheduler, ids, _log);
        // Domains delivered on this host take mail from anyone, for the users the local agent knows
        // (550 5.1.1 for the rest at RCPT); its aliases files are re-read with the server's files.
        if (localAgent is not null)
        {
            Server.Policy.LocalLookup = localAgent.LookupRecipient;
            Server.AddReloadable(localAgent.ReloadFiles);
        }
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
                listener = new SocketListener(l.EndPoint, Server, limiter, _log, l.Kind);
            }
            catch (System.Net.Sockets.SocketException e)
            {
                throw new ConfigException($"cannot listen on {l.EndPoint}: {e.SocketErrorCode} ({e.Message})");
            }
            _listeners.Add(listener);
        }
        Server.LogConfiguration(_listeners.Select(l => new ListenerInfo(l.EndPoint, l.Kind)));
        _reloading = Server.StartReloading(_stopping.Token);
        foreach (var listener in _listeners)
        {
            listener.Start(_stopping.Token);
            _log.Info($"listening on {listener.EndPoint}" + (listener.Kind == ListenerKind.Smtp ? "" : $" ({ListenerSettings.KindName(listener.Kind)})"));
        }
        _housekeeping = HousekeepingAsync(_stopping.Token);
        _log.Info($"{_settings.Hostname} ready: spool {_settings.SpoolDirectory}, {_scheduler.LoopCount} delivery loop(s), "
                  + (_settings.RelayTo is null ? "no relay-to" : $"relay-to {_settings.RelayTo}"));
    }

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
                _log.Error($"handing the recovered queue to delivery failed: {e.Message}");
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
        _reloading?.Dispose();
        _reloading = null;
        _queueGauges?.Dispose();
        if (_control is not null)
        {
            await _control.DisposeAsync();
            _control = null;
        }
        _stopping.Cancel();
        await Task.WhenAll(_listeners.Select(l => l.DrainAsync(deadline)));
        if (_recovering is not null)
            await _recovering;
        if (_scheduler is not null)
            await _scheduler.StopAsync(TimeSpan.FromSeconds(5));
        _deliveryLog?.Dispose();
        _deliveryLog = null;
        if (_housekeeping is not null)
            await _housekeeping;
        if (_spool is not null)
        {
            await _spool.DisposeAsync();
            _spool = null;
        }
        _log.Info("stopped");
    }

    public async ValueTask DisposeAsync()
    {
        if (!_stopping.IsCancellationRequested || _spool is not null)
            await StopAsync(TimeSpan.FromSeconds(5));
        _stopping.Dispose();
    }
}
