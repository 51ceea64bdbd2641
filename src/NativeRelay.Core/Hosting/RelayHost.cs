using NativeRelay.Config;
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
    private static readonly TimeSpan TruncateInterval = TimeSpan.FromSeconds(5);

    private readonly RelaySettings _settings;
    private readonly Log _log;
    private readonly CancellationTokenSource _stopping = new();
    private readonly List<SocketListener> _listeners = new();
    private SpoolLog? _spool;
    private DeliveryScheduler? _scheduler;
    private Task? _housekeeping;

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

        var router = new StaticRouter(_settings.RelayTo);
        if (_settings.RelayTo is null)
            _log.Warn("no relayTo is configured and MX delivery is not available yet: mail will stay queued (deferred) until a route exists");
        _scheduler = new DeliveryScheduler(_settings, _spool, router, _log);
        _scheduler.Start();
        await _scheduler.EnqueueRecoveredAsync(recovered);

        Server = new SmtpServer(_settings, _spool, _scheduler, ids, _log);
        var limiter = new ConnectionLimiter(_settings.Limits.MaxConnections, _settings.Limits.MaxConnectionsPerIp);
        foreach (var endPoint in _settings.Listen)
        {
            SocketListener listener;
            try
            {
                listener = new SocketListener(endPoint, Server, limiter, _log);
            }
            catch (System.Net.Sockets.SocketException e)
            {
                throw new ConfigException($"cannot listen on {endPoint}: {e.SocketErrorCode} ({e.Message})");
            }
            _listeners.Add(listener);
        }
        foreach (var listener in _listeners)
        {
            listener.Start(_stopping.Token);
            _log.Info($"listening on {listener.EndPoint}");
        }
        _housekeeping = HousekeepingAsync(_stopping.Token);
        _log.Info($"{_settings.Hostname} ready: spool {_settings.SpoolDirectory}, {_scheduler.LoopCount} delivery loop(s), "
                  + (_settings.RelayTo is null ? "no relay-to" : $"relay-to {_settings.RelayTo}"));
    }

    private async Task HousekeepingAsync(CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(TruncateInterval, stopping);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            ReclaimSpool();
        }
    }

    /// <summary>Truncates the log up to the oldest record a live message still needs.</summary>
    private void ReclaimSpool()
    {
        try
        {
            var spool = Spool;
            long tail = spool.CommittedUntilAddress;
            long oldest = Scheduler.OldestLiveAddress(tail);
            if (oldest > spool.BeginAddress)
                spool.TruncateUntil(oldest);
        }
        catch (Exception e)
        {
            _log.Warn($"spool truncation failed: {e.Message}");
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
        _stopping.Cancel();
        await Task.WhenAll(_listeners.Select(l => l.DrainAsync(deadline)));
        if (_scheduler is not null)
            await _scheduler.StopAsync(TimeSpan.FromSeconds(5));
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
