using System.Diagnostics;
using System.Net;
using System.Runtime.CompilerServices;
using NativeRelay.Message;
using NativeRelay.Routing;
using NativeRelay.Smtp;
using NativeRelay.Spool;
using NativeRelay.Telemetry;
using NativeRelay.Traffic.Automation;
using NativeRelay.Traffic.Shaping;

namespace NativeRelay.Delivery;

/// <summary>
/// One next-hop destination inside its loop: a FIFO of jobs and the connections draining it.
/// A connection delivers job after job, then waits idle for more (reuse) until the idle timeout.
/// How many connections may be open follows a slow-start window, as in Postfix: it begins at
/// <c>initialConnectionsPerDestination</c>, grows by one per successful delivery up to the
/// destination's limit, and falls back to one when a connection attempt fails, so a burst does
/// not open a connection per message and a struggling host is not hammered. An optional rate
/// limit spaces transactions evenly. If the destination cannot be reached, everything queued for
/// it is deferred at once rather than each message paying its own connect timeout.
/// <para>
/// Each connection attempt walks the route's hosts in preference order (equal preferences
/// shuffled) and each host's addresses, moving on when a connect fails, the greeting or EHLO is
/// not 2xx, or TLS is required and cannot be had (RFC 5321 5.1), up to five addresses.
/// </para>
/// <para>
/// Traffic control: a destination is one lane of a (source, site) path. The path's
/// <see cref="SiteShaper"/> (shared by the path's lanes: a site may span several next-hop sets)
/// holds the site's limits: it grants connection slots (connections at most, new connections per
/// minute, the source's own limit), message slots (smooth token buckets), and closes the gate when
/// an automation suspends the path (the jobs move to another source of their pool, or are
/// deferred) or bounces its mail. Connections bind the source's address and say its EHLO name.
/// </para>
/// All of this runs on the owning loop's thread: nothing here is locked.
/// </summary>
internal sealed class Destination : IShapedLane
{
    /// <summary>Addresses tried per connection attempt (Postfix: smtp_mx_address_limit).</summary>
    internal const int MaxAddressesPerAttempt = 5;
    /// <summary>Beyond this many queued jobs, queued messages drop their cached bytes (read again from the spool when their turn comes).</summary>
    private const int CachedBodiesLimit = 256;

    private Route _route;
    private readonly DeliveryLoop _loop;
    private readonly SiteShaper _shaper;
    private readonly Queue<DeliveryJob> _queue = new();
    private readonly List<IdleWait> _idle = new();
    private readonly long _sendIntervalTicks;  // the route's own rate (Stopwatch ticks); 0: none
    private long _nextSendTicks;
    private int _connections;
    private int _connecting;   // opened but not yet ready to take a job
    private int _window;
    private long _lastActiveMs = Environment.TickCount64;
    private string? _lastTriedHost;
    private string? _lastTriedIp;
    private string? _lastTlsPolicy;
    private NativeRelay.TlsPolicies.PeerCertificateCheck? _lastCheck;

    public Destination(Route route, DeliveryLoop loop, SiteShaper shaper)
    {
        _route = route;
        _loop = loop;
        _shaper = shaper;
        var options = loop.Context.Settings.Delivery;
        _window = Math.Min(options.InitialConnectionsPerDestination, MaxConnections);
        if (route.MaxMessagesPerSecond > 0)
            _sendIntervalTicks = (long)(Stopwatch.Frequency / route.MaxMessagesPerSecond);
    }

    /// <summary>The lane's connection limit: the route's own, else the site's shaping limit, else delivery.connectionsPerDestination.</summary>
    private int MaxConnections => _route.MaxConnections ?? _shaper.Limits.MaxConnections ?? _loop.Context.Settings.Delivery.ConnectionsPerDestination;

    public SiteShaper Shaper => _shaper;

    public int ActiveConnections => _connections;

    public int Queued => _queue.Count;

    public bool IsIdleSince(long tickMs) => _queue.Count == 0 && _connections == 0 && _lastActiveMs < tickMs;

    public void Enqueue(DeliveryJob job)
    {
        _route = job.Route; // the newest resolution (same key, maybe new addresses)
        _lastActiveMs = Environment.TickCount64;
        if (_shaper.Gate(DeliveryScheduler.NowMs()) != PathGate.Open)
        {
            TurnAway(job);
            if (_queue.Count == 0)
                return;
        }
        else
            _queue.Enqueue(job);
        if (_queue.Count > CachedBodiesLimit)
            job.Message.ReleaseBody(); // a long queue must not hold every message's bytes in memory
        if (_idle.Count > 0)
        {
            var waiter = _idle[^1];
            Unpark(waiter);
            waiter.Wake(job: true);
            return;
        }
        TryOpenConnection();
    }

    // Another connection only helps if more jobs wait than the connections still being set up
    // will take, and only within the slow-start window and the path's limits (the shaper calls
    // back, through RetryOpen, when a slot it refused may be free).
    private void TryOpenConnection()
    {
        if (_connections < _window && _queue.Count > _connecting)
        {
            switch (_shaper.TryOpen(this, Stopwatch.GetTimestamp()))
            {
                case OpenDecision.Opened:
                    _connections++;
                    _connecting++;
                    _ = RunConnectionAsync();
                    break;
                case OpenDecision.Defer:
                    _ = DeferForRateAsync();
                    break;
            }
        }
    }

    void IShapedLane.ReleaseIdle()
    {
        foreach (var waiter in _idle.ToArray())
        {
            Unpark(waiter);
            waiter.Wake(job: false);
        }
    }

    void IShapedLane.RetryOpen()
    {
        if (_loop.Context.Stopping.IsCancellationRequested)
            return;
        if (_shaper.Gate(DeliveryScheduler.NowMs()) != PathGate.Open)
        {
            TurnAwayQueued();
            return;
        }
        TryOpenConnection();
    }

    /// <summary>The gate is closed: a job moves to another source of its pool or is deferred (suspended), or fails (bounce).</summary>
    private void TurnAway(DeliveryJob job)
    {
        var gate = _shaper.Gate(DeliveryScheduler.NowMs());
        var action = _shaper.GateAction;
        if (gate == PathGate.Open)
        {
            _queue.Enqueue(job); // the action lapsed just now
            return;
        }
        if (gate == PathGate.Bounce)
        {
            RelayMetrics.TrafficJobs.Add(RelayMetrics.JobsBounced, 1);
            _ = CompleteAllAsync(job, SmtpReply.Local(554, $"5.7.0 returned: traffic rule {action?.Rule} bounces mail from source "
                + $"{_shaper.Source.Name} to site {_shaper.Site.Name} until {Until(action)} (after \"{action?.Reply}\")"));
            return;
        }
        var reply = SmtpReply.Local(451, $"4.7.0 delivery from source {_shaper.Source.Name} to site {_shaper.Site.Name} is suspended until "
            + $"{Until(action)} by traffic rule {action?.Rule} (after \"{action?.Reply}\")");
        _ = _loop.Context.Scheduler.MoveOrDeferAsync(job, reply, Attempt(reply));
    }

    private void TurnAwayQueued()
    {
        var jobs = _queue.ToArray();
        _queue.Clear();
        foreach (var job in jobs)
            TurnAway(job);
    }

    private static string Until(TrafficAction? action) => action is null ? "later"
        : DateTimeOffset.FromUnixTimeMilliseconds(action.UntilUnixMs).UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);

    private Task CompleteAllAsync(DeliveryJob job, SmtpReply reply)
    {
        var results = new SmtpReply[job.Recipients.Length];
        Array.Fill(results, reply);
        return _loop.Context.Scheduler.CompleteJobAsync(job, results, Attempt(reply));
    }

    /// <summary>What a reply made up here reports: no remote host, the path.</summary>
    private AttemptInfo Attempt(SmtpReply reply) =>
        new(_shaper.Site.Name, "", null, false, false, Source: _shaper.Source.Name, Site: _shaper.Site.Name);

    /// <summary>The path's next message slot is too far off to hold its mail in memory: defer what is queued.</summary>
    private async Task DeferForRateAsync()
    {
        long wait = (_shaper.NextSend(Stopwatch.GetTimestamp()) - Stopwatch.GetTimestamp()) / Stopwatch.Frequency;
        var reply = SmtpReply.Local(451, $"4.7.0 the rate limit of source {_shaper.Source.Name} to site {_shaper.Site.Name} "
            + $"lets the next message go in {wait} s; deferred");
        while (_queue.TryDequeue(out var job))
        {
            RelayMetrics.TrafficJobs.Add(RelayMetrics.JobsDeferred, 1);
            await CompleteAllAsync(job, reply);
        }
    }

    private async Task RunConnectionAsync()
    {
        var context = _loop.Context;
        var options = context.Settings.Delivery;
        SmtpClientSession? session = null;
        AttemptInfo? peer = null;
        IdleWait? idleWait = null;
        string? stsId = null; // the MTA-STS record id the connection's policy decision was made under
        try
        {
            // Connect before taking a job: while this runs, the job stays queued for whichever
            // connection is ready first.
            try
            {
                (session, peer) = await ConnectAsync();
                stsId = _route.StsRecordId;
            }
            catch (SmtpSessionException e)
            {
                _window = 1;
                await DeferQueuedAsync(e);
                return;
            }
            finally
            {
                _connecting--;
            }

            bool delivered = false;
            while (!context.Stopping.IsCancellationRequested)
            {
                // Another next-hop set of the site waits for a slot at the site's limit: take turns.
                if (delivered && _shaper.OthersWaiting(this))
                    break;
                if (_queue.Count == 0)
                {
                    idleWait ??= new IdleWait(_loop.Sync, context.Stopping, ForgetIdle);
                    if (!await WaitForWorkAsync(idleWait, TimeSpan.FromSeconds(_shaper.Limits.IdleSeconds ?? options.IdleConnectionSeconds)))
                        break;
                    continue;
                }
                if (_shaper.Gate(DeliveryScheduler.NowMs()) != PathGate.Open)
                {
                    TurnAwayQueued();
                    break;
                }
                if (_shaper.OverConnectionLimit)
                    break; // a throttle lowered the path's limit: this connection goes
                if (_sendIntervalTicks > 0 || _shaper.LimitsMessages)
                {
                    long now = Stopwatch.GetTimestamp();
                    long next = _shaper.NextSend(Math.Max(now, _nextSendTicks));
                    if (next - now > SiteShaper.HoldTicks)
                    {
                        // Not worth holding the connection open for: close it, come back before the slot.
                        _shaper.WaitForSlot(this, next);
                        break;
                    }
                    if (!await WaitForRateAsync(context.Stopping))
                        break; // the fleet's rate has no token for a while: closed, called back before it does
                }
                if (!_queue.TryDequeue(out var job))
                {
                    _shaper.ReturnFleet(); // the fleet's token goes to the next message, not to waste
                    continue; // another connection took it while this one waited its turn
                }
                _lastActiveMs = Environment.TickCount64;
                if (job.Message.IsStopped)
                {
                    await context.Scheduler.CompleteJobAsync(job, null, null);
                    continue;
                }
                // A new MTA-STS record id means a new policy: connections opened under the old one are not reused.
                if (!session.IsUsable || session.TransactionsDone >= (_shaper.Limits.MessagesPerConnection ?? options.MessagesPerConnection)
                    || (session.TransactionLimit > 0 && session.TransactionsDone >= session.TransactionLimit)
                    || !string.Equals(stsId, _route.StsRecordId, StringComparison.Ordinal))
                {
                    await CloseAsync(session);
                    session = null;
                    try
                    {
                        (session, peer) = await ConnectAsync();
                        stsId = _route.StsRecordId;
                    }
                    catch (SmtpSessionException e)
                    {
                        _window = 1;
                        await CompleteFailedAsync(job, e);
                        await DeferQueuedAsync(e);
                        return;
                    }
                }
                delivered = true;
                if (await DeliverAsync(session, peer!, job))
                {
                    _window = Math.Min(_window + 1, MaxConnections);
                    TryOpenConnection();
                }
            }
        }
        catch (OperationCanceledException) when (context.Stopping.IsCancellationRequested)
        {
            // Shutdown: whatever was not delivered stays in the spool for the next start.
        }
        catch (Exception e)
        {
            context.Log.Error($"delivery to {_route.Key} failed unexpectedly: {e}");
        }
        finally
        {
            idleWait?.Dispose();
            // The slot is this connection's until its socket is closed, goodbye included, so the
            // next hop never sees more than the limit at once (a host that counts connections per
            // client may refuse the one over). QUIT's wait is short (SmtpClientSession.QuitTimeout).
            try
            {
                if (session is not null)
                    await CloseAsync(session);
            }
            finally
            {
                // Then look at the queue again: a job that arrived while this connection was
                // leaving must not wait for the next one. The path's slot comes free first, so
                // the shaper may hand it to another lane of the site that was waiting for it.
                _connections--;
                _lastActiveMs = Environment.TickCount64;
                _shaper.Closed();
                if (!context.Stopping.IsCancellationRequested)
                    TryOpenConnection();
            }
        }
    }

    private static async Task CloseAsync(SmtpClientSession session)
    {
        try
        {
            if (session.IsUsable)
                await session.QuitAsync();
        }
        finally
        {
            // Always: the session's deadline stays registered with the process's clock until disposed.
            await session.DisposeAsync();
        }
    }

    /// <summary>Parks an open connection until a job arrives (true) or the idle time passes (false).</summary>
    private ValueTask<bool> WaitForWorkAsync(IdleWait wait, TimeSpan idle)
    {
        var waiting = wait.WaitAsync(idle);
        if (wait.Waiting) // not when the relay is already stopping
        {
            _idle.Add(wait);
            _loop.CountParked(+1);
        }
        return waiting;
    }

    // The idle time passed (or the relay stops) before a job came: Enqueue must not pick this one.
    private void ForgetIdle(IdleWait wait)
    {
        Unpark(wait);
        wait.Wake(job: false);
    }

    // The one way out of the parked list, so the loop's count of parked connections stays its length.
    private void Unpark(IdleWait wait)
    {
        if (_idle.Remove(wait))
            _loop.CountParked(-1);
    }

    /// <summary>
    /// The rate limits: each transaction takes the next free slot of the route's own rate, then of
    /// the path's and its source's token buckets (reserved, so the next connection queues behind it).
    /// <para>
    /// On a node of a fleet, each message also takes a token of the fleet's rate (from the batch
    /// in hand; a batch is fetched in the background). Without one, the connection waits for the
    /// batch if it comes soon, else it closes (false) and the lane is called back before it does.
    /// </para>
    /// </summary>
    private async Task<bool> WaitForRateAsync(CancellationToken stopping)
    {
        long now = Stopwatch.GetTimestamp();
        long slot = Math.Max(now, _nextSendTicks);
        if (_sendIntervalTicks > 0)
            _nextSendTicks = slot + _sendIntervalTicks;
        slot = _shaper.TakeSend(slot);
        // Less than a millisecond early is on time: no timer for it (a limit far from reached costs nothing).
        if (slot - now > Stopwatch.Frequency / 1000)
            await Task.Delay(Stopwatch.GetElapsedTime(now, slot), stopping);
        if (!_shaper.SharesMessages)
            return true;
        while (!_shaper.TryTakeFleet(now = Stopwatch.GetTimestamp(), out long ready))
        {
            if (ready - now > SiteShaper.HoldTicks)
            {
                _shaper.WaitForSlot(this, ready);
                return false;
            }
            await _shaper.FleetReady(stopping);
        }
        return true;
    }

    /// <summary>
    /// Opens a session with the first next hop that works: hosts in preference order (equal
    /// preferences shuffled), each host's addresses in turn, at most five addresses. A TLS
    /// handshake that fails under the opportunistic policy is retried once in plain text.
    /// </summary>
    private async Task<(SmtpClientSession, AttemptInfo)> ConnectAsync()
    {
        var context = _loop.Context;
        var options = context.Settings.Delivery;
        SmtpSessionException? last = null;
        int tried = 0;
        var bind = _shaper.Source.Address;
        foreach (var host in InAttemptOrder(_route.Hosts))
        {
            foreach (var address in host.Addresses)
            {
                // A source binds one address: it reaches only hosts of the same family.
                if (bind is not null && bind.AddressFamily != address.AddressFamily)
                    continue;
                if (tried++ >= MaxAddressesPerAttempt)
                    goto exhausted;
                var endPoint = new IPEndPoint(address, host.Port);
                _lastTriedHost = host.Name;
                _lastTriedIp = endPoint.ToString();
                SmtpClientOptions first;
                try
                {
                    first = await OptionsAsync(host, _route.Tls);
                }
                catch (SmtpSessionException e)
                {
                    CountTlsFailure(e);
                    last = e;
                    continue;
                }
                try
                {
                    return Connected(await SmtpClientSession.ConnectAsync(endPoint, first, context.Stopping), host, first, _route, context);
                }
                // Only where nothing asks for TLS (the effective policy, DANE included) may a failed handshake go plain.
                catch (SmtpSessionException e) when (e.Stage == SmtpFailureStage.Tls && first.Tls == TlsPolicy.Opportunistic)
                {
                    context.Log.Info($"{_route.Key}: {e.Reply.Text}; trying {endPoint} again without TLS");
                    try
                    {
                        var plain = await OptionsAsync(host, TlsPolicy.None);
                        return Connected(await SmtpClientSession.ConnectAsync(endPoint, plain, context.Stopping), host, plain, _route, context);
                    }
                    catch (SmtpSessionException plain)
                    {
                        last = plain;
                    }
                }
                catch (SmtpSessionException e)
                {
                    CountTlsFailure(e);
                    if (e.Stage is SmtpFailureStage.Greeting or SmtpFailureStage.Hello)
                        _shaper.Observe(e.Reply); // the remote's own refusal ("421 4.7.0 too many connections")
                    last = e;
                }
            }
        }
    exhausted:
        throw last ?? new SmtpSessionException(SmtpReply.Local(451, bind is null
            ? $"4.4.4 no address to connect to for {_route.Key}"
            : $"4.4.4 no {(bind.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? "IPv6" : "IPv4")} address to connect to for {_route.Key} from source {_shaper.Source.Name} ({bind})"),
            SmtpFailureStage.Connect);
    }

    /// <summary>What every delivery on this connection reports (built once per connection, not per message).</summary>
    private (SmtpClientSession, AttemptInfo) Connected(SmtpClientSession session, RouteHost host, SmtpClientOptions options,
        Route route, DeliveryContext context)
    {
        if (route.PolicyDomain is not null && context.TlsReports is { } reports && options.PeerCheck is { } peerCheck)
            NativeRelay.TlsPolicies.Reporting.TlsRptOutcome.Connected(reports, route, peerCheck, host.Name,
                session.RemoteEndPoint.ToString(), session.TlsProtocol is not null);
        string? tls = session.TlsProtocol is null ? null
            : $"{session.TlsProtocol} {session.TlsCipher}" + (session.TlsCertificateVerified ? " verified" : " unverified");
        string verified = session.TlsProtocol is null ? "none" : options.PeerCheck?.VerifiedBy ?? "encrypted";
        NativeRelay.Telemetry.RelayMetrics.TlsConnections.Increment(verified);
        return (session, new AttemptInfo(host.Name, session.RemoteEndPoint.ToString(), tls, DsnPassed: false, ReplyFromRemote: true,
            options.PeerCheck?.PolicyName ?? RoutingSettings.TlsName(options.Tls), verified,
            Source: _shaper.Source.Name, Site: _shaper.Site.Name));
    }

    private void CountTlsFailure(SmtpSessionException e)
    {
        if (e.TlsFailure is null)
            return;
        if (_route.PolicyDomain is not null && _loop.Context.TlsReports is { } reports)
            NativeRelay.TlsPolicies.Reporting.TlsRptOutcome.Refused(reports, _route, _lastCheck, e.TlsFailure,
                _lastTriedHost ?? _route.Key, _lastTriedIp ?? "");
        NativeRelay.Telemetry.RelayMetrics.TlsPolicyFailures.Increment(e.TlsFailure);
        _loop.Context.Log.Info($"{_route.Key}: TLS policy {_lastTlsPolicy} refused {_lastTriedHost}[{_lastTriedIp}]: {e.TlsFailure}: {e.Reply.Text}");
    }

    /// <summary>The session options of one connection, with the TLS policy stage's decision for this next hop.</summary>
    private async ValueTask<SmtpClientOptions> OptionsAsync(RouteHost host, TlsPolicy tls)
    {
        var context = _loop.Context;
        var options = context.Settings.Delivery;
        // The site's TLS policy, where the route has the default one (a static route's own policy wins).
        if (_shaper.Limits.Tls is { } siteTls && tls == _route.Tls && _route.Tls == context.Routing.DefaultTls)
            tls = siteTls;
        var check = await context.TlsPolicies.ForConnectionAsync(_route, host, tls, context.Stopping);
        _lastTlsPolicy = check.PolicyName;
        _lastCheck = check;
        if (check.Refusal is not null)
            throw new SmtpSessionException(SmtpReply.Local(451, $"4.7.5 {check.Refusal}"), SmtpFailureStage.Tls)
                { TlsFailure = check.RefusalType };
        return new SmtpClientOptions
        {
            HeloName = _shaper.Source.Ehlo ?? context.Settings.Hostname,
            LocalAddress = _shaper.Source.Address,
            ConnectTimeout = TimeSpan.FromSeconds(options.ConnectTimeoutSeconds),
            CommandTimeout = TimeSpan.FromSeconds(options.CommandTimeoutSeconds),
            Tls = check.Policy,
            TlsHostName = IPAddress.TryParse(host.Name, out _) ? null : host.Name,
            PeerCheck = check,
        };
    }

    /// <summary>The hosts in preference order, with each run of equal preference shuffled (RFC 5321 5.1).</summary>
    private static RouteHost[] InAttemptOrder(IReadOnlyList<RouteHost> hosts)
    {
        var order = new RouteHost[hosts.Count];
        for (int i = 0; i < order.Length; i++)
            order[i] = hosts[i];
        int start = 0;
        while (start < order.Length)
        {
            int end = start + 1;
            while (end < order.Length && order[end].Preference == order[start].Preference)
                end++;
            if (end - start > 1)
                Random.Shared.Shuffle(order.AsSpan(start, end - start));
            start = end;
        }
        return order;
    }

    /// <summary>Returns true when the next hop accepted the message for at least one recipient.</summary>
    // Pooled builders here and on SendAllAsync: one transaction each per message, each awaited
    // once by its caller, and each would otherwise box its state machine.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> DeliverAsync(SmtpClientSession session, AttemptInfo peer, DeliveryJob job)
    {
        var context = _loop.Context;
        var message = job.Message;
        var envelope = message.Envelope;
        var results = new SmtpReply[job.Recipients.Length];

        MessageBuffer body;
        try
        {
            body = await message.AcquireBodyAsync(context.Spool);
        }
        catch (Exception e)
        {
            context.Log.Error($"{message.IdText}: cannot read from the spool: {ExceptionText.Of(e)}");
            Array.Fill(results, SmtpReply.Local(451, $"4.3.0 spool read failed: {e.Message}"));
            await context.Scheduler.CompleteJobAsync(job, results, peer with { ReplyFromRemote = false });
            return false;
        }

        bool dsnPassed = false;
        bool remote = true;
        try
        {
            if ((envelope.Flags & EnvelopeFlags.RequireTls) != 0
                && NativeRelay.TlsPolicies.RequireTlsRule.Refusal(session.TlsVerifiedBy, session.TlsProtocol is not null,
                       (session.Capabilities & SmtpCapabilities.RequireTls) != 0, $"{peer.Host}[{session.RemoteEndPoint.Address}]",
                       NextHopTrusted(session)) is { } refusal)
            {
                Array.Fill(results, SmtpReply.Local(550, refusal));
                remote = false;
            }
            else if ((envelope.Flags & EnvelopeFlags.SmtpUtf8) != 0 && (session.Capabilities & SmtpCapabilities.SmtpUtf8) == 0)
            {
                // RFC 6531 3.4: an SMTPUTF8 message cannot be passed to a server without the extension.
                Array.Fill(results, SmtpReply.Local(553, $"5.6.7 SMTPUTF8 is required, but was not offered by host {peer.Host}[{session.RemoteEndPoint.Address}]"));
                remote = false;
            }
            else if (session.MaxSize > 0 && body.ContentLength > session.MaxSize)
            {
                Array.Fill(results, SmtpReply.Local(552, $"5.3.4 message size {body.ContentLength} exceeds the size limit {session.MaxSize} of host {peer.Host}"));
                remote = false;
            }
            else
            {
                long started = System.Diagnostics.Stopwatch.GetTimestamp();
                dsnPassed = await SendAllAsync(session, envelope, body, job.Recipients, results, _shaper);
                Telemetry.RelayMetrics.DeliveryAttemptSeconds.ObserveSince(started);
            }
        }
        finally
        {
            body.Release();
        }
        var info = !dsnPassed && remote ? peer : peer with { DsnPassed = dsnPassed, ReplyFromRemote = remote };
        await context.Scheduler.CompleteJobAsync(job, results, info);
        foreach (var r in results)
            if (r.IsPositive)
                return true;
        return false;
    }

    /// <summary>
    /// RFC 8689 4.2.1: a REQUIRETLS message goes to a host found through MX only when the MX
    /// answer was DNSSEC-validated or an MTA-STS policy in enforce mode names the host (and its
    /// certificate verified under it). Hosts the operator configured (routes, relayTo) are trusted.
    /// </summary>
    private bool NextHopTrusted(SmtpClientSession session) =>
        !_route.FromMx || _route.MxAuthentic || session.PeerCheck is { StsEnforced: true, Verified: true };

    /// <summary>
    /// All of a job's recipients, in as many transactions as the peer's recipient limit needs
    /// (RFC 5321 4.5.3.1.10: after a 452 the rest go in a new transaction, on the same connection).
    /// </summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private static async ValueTask<bool> SendAllAsync(SmtpClientSession session, Envelope envelope, MessageBuffer body,
        int[] recipients, SmtpReply[] results, SiteShaper shaper)
    {
        IReadOnlyList<int> batch = recipients;
        int[]? positions = null; // where each of the batch's recipients sits in the job (null: the same place)
        bool dsnPassed = false;
        int perTransaction = shaper.Limits.RecipientsPerTransaction ?? 0;
        while (true)
        {
            var replies = new SmtpReply[batch.Count];
            try
            {
                dsnPassed = await session.SendAsync(envelope, body, batch, replies, perTransaction);
            }
            catch (SmtpSessionException e)
            {
                var reply = e.Reply.IsPositive ? SmtpReply.Local(451, "4.4.2 connection lost") : e.Reply;
                for (int k = 0; k < batch.Count; k++)
                    results[positions?[k] ?? k] = reply;
                return dsnPassed;
            }
            List<int>? next = null, nextPositions = null;
            SmtpReply observed = default;
            for (int k = 0; k < batch.Count; k++)
            {
                int position = positions?[k] ?? k;
                // The remote's refusals feed the automation rules (once per distinct reply of a transaction).
                if (replies[k].Code >= 400 && replies[k] != observed)
                {
                    observed = replies[k];
                    shaper.Observe(observed);
                }
                if (replies[k].Code == 0)
                {
                    (next ??= new()).Add(batch[k]);
                    (nextPositions ??= new()).Add(position);
                }
                else
                {
                    results[position] = replies[k];
                }
            }
            if (next is null)
                return dsnPassed;
            if (!session.IsUsable)
            {
                foreach (int position in nextPositions!)
                    results[position] = SmtpReply.Local(451, "4.5.3 the remote recipient limit was reached and the connection ended");
                return dsnPassed;
            }
            if (shaper.Gate(DeliveryScheduler.NowMs()) != PathGate.Open)
            {
                // A reply of this transaction suspended the path: the rest waits (deferred).
                foreach (int position in nextPositions!)
                    results[position] = SmtpReply.Local(451, $"4.7.0 delivery from source {shaper.Source.Name} to site {shaper.Site.Name} was suspended during the transaction");
                return dsnPassed;
            }
            batch = next;
            positions = nextPositions!.ToArray();
        }
    }

    private async Task CompleteFailedAsync(DeliveryJob job, SmtpSessionException e)
    {
        var results = new SmtpReply[job.Recipients.Length];
        // No session means no verdict on the recipients: even a 5xx greeting only says that this
        // host would not talk (Postfix: smtp_skip_5xx_greeting), so the mail waits and is retried.
        var reply = e.Reply.IsPermanent
            ? SmtpReply.Local(451, $"4.4.0 {_lastTriedHost}[{_lastTriedIp}] refused the session: {e.Reply}")
            : e.Reply;
        Array.Fill(results, reply);
        bool remote = e.Stage is SmtpFailureStage.Greeting or SmtpFailureStage.Hello;
        var info = new AttemptInfo(_lastTriedHost ?? _route.Key, _lastTriedIp ?? "", null, false, remote, _lastTlsPolicy, TlsFailure: e.TlsFailure,
            Source: _shaper.Source.Name, Site: _shaper.Site.Name);
        // Refused, or unreachable, from this source (its address may be the one blocked): another
        // source of the pool may get a session. A TLS failure is the site's, not the source's.
        if (e.Stage != SmtpFailureStage.Tls)
        {
            await _loop.Context.Scheduler.MoveOrDeferAsync(job, reply, info, countDeferred: false);
            return;
        }
        await _loop.Context.Scheduler.CompleteJobAsync(job, results, info);
    }

    /// <summary>The destination is unreachable now: defer everything waiting for it.</summary>
    private async Task DeferQueuedAsync(SmtpSessionException e)
    {
        while (_queue.TryDequeue(out var job))
            await CompleteFailedAsync(job, e);
    }
}
