using System.Net;
using System.Runtime.CompilerServices;
using NativeRelay.Message;
using NativeRelay.Routing;
using NativeRelay.Smtp;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

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
/// All of this runs on the owning loop's thread: nothing here is locked.
/// </summary>
internal sealed class Destination
{
    /// <summary>Addresses tried per connection attempt (Postfix: smtp_mx_address_limit).</summary>
    internal const int MaxAddressesPerAttempt = 5;
    /// <summary>Beyond this many queued jobs, queued messages drop their cached bytes (read again from the spool when their turn comes).</summary>
    private const int CachedBodiesLimit = 256;

    private Route _route;
    private readonly DeliveryLoop _loop;
    private readonly Queue<DeliveryJob> _queue = new();
    private readonly List<IdleWait> _idle = new();
    private readonly int _maxConnections;
    private readonly long _sendIntervalTicks;  // 0: no rate limit
    private long _nextSendTicks;
    private int _connections;
    private int _connecting;   // opened but not yet ready to take a job
    private int _window;
    private long _lastActiveMs = Environment.TickCount64;
    private string? _lastTriedHost;
    private string? _lastTriedIp;
    private string? _lastTlsPolicy;
    private NativeRelay.TlsPolicies.PeerCertificateCheck? _lastCheck;

    public Destination(Route route, DeliveryLoop loop)
    {
        _route = route;
        _loop = loop;
        var options = loop.Context.Settings.Delivery;
        _maxConnections = route.MaxConnections ?? options.ConnectionsPerDestination;
        _window = Math.Min(options.InitialConnectionsPerDestination, _maxConnections);
        if (route.MaxMessagesPerSecond > 0)
            _sendIntervalTicks = (long)(TimeSpan.TicksPerSecond / route.MaxMessagesPerSecond);
    }

    public int ActiveConnections => _connections;

    public int Queued => _queue.Count;

    public bool IsIdleSince(long tickMs) => _queue.Count == 0 && _connections == 0 && _lastActiveMs < tickMs;

    public void Enqueue(DeliveryJob job)
    {
        _route = job.Route; // the newest resolution (same key, maybe new addresses)
        _lastActiveMs = Environment.TickCount64;
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
    // will take, and only within the slow-start window.
    private void TryOpenConnection()
    {
        if (_connections < _window && _queue.Count > _connecting)
        {
            _connections++;
            _connecting++;
            _ = RunConnectionAsync();
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

            while (!context.Stopping.IsCancellationRequested)
            {
                if (_queue.Count == 0)
                {
                    idleWait ??= new IdleWait(_loop.Sync, context.Stopping, ForgetIdle);
                    if (!await WaitForWorkAsync(idleWait, TimeSpan.FromSeconds(options.IdleConnectionSeconds)))
                        break;
                    continue;
                }
                if (_sendIntervalTicks > 0)
                    await WaitForRateAsync(context.Stopping);
                if (!_queue.TryDequeue(out var job))
                    continue; // another connection took it while this one waited its turn
                _lastActiveMs = Environment.TickCount64;
                if (job.Message.IsStopped)
                {
                    await context.Scheduler.CompleteJobAsync(job, null, null);
                    continue;
                }
                // A new MTA-STS record id means a new policy: connections opened under the old one are not reused.
                if (!session.IsUsable || session.TransactionsDone >= options.MessagesPerConnection
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
                if (await DeliverAsync(session, peer!, job))
                {
                    _window = Math.Min(_window + 1, _maxConnections);
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
                // leaving must not wait for the next one.
                _connections--;
                _lastActiveMs = Environment.TickCount64;
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

    /// <summary>The rate limit: each transaction takes the next free slot, one interval after the last.</summary>
    private async Task WaitForRateAsync(CancellationToken stopping)
    {
        long now = DateTime.UtcNow.Ticks;
        long slot = Math.Max(now, _nextSendTicks);
        _nextSendTicks = slot + _sendIntervalTicks;
        if (slot > now)
            await Task.Delay(TimeSpan.FromTicks(slot - now), stopping);
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
        foreach (var host in InAttemptOrder(_route.Hosts))
        {
            foreach (var address in host.Addresses)
            {
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
                    last = e;
                }
            }
        }
    exhausted:
        throw last ?? new SmtpSessionException(SmtpReply.Local(451, $"4.4.4 no address to connect to for {_route.Key}"), SmtpFailureStage.Connect);
    }

    /// <summary>What every delivery on this connection reports (built once per connection, not per message).</summary>
    private static (SmtpClientSession, AttemptInfo) Connected(SmtpClientSession session, RouteHost host, SmtpClientOptions options,
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
            options.PeerCheck?.PolicyName ?? RoutingSettings.TlsName(options.Tls), verified));
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
        var check = await context.TlsPolicies.ForConnectionAsync(_route, host, tls, context.Stopping);
        _lastTlsPolicy = check.PolicyName;
        _lastCheck = check;
        if (check.Refusal is not null)
            throw new SmtpSessionException(SmtpReply.Local(451, $"4.7.5 {check.Refusal}"), SmtpFailureStage.Tls)
                { TlsFailure = check.RefusalType };
        return new SmtpClientOptions
        {
            HeloName = context.Settings.Hostname,
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
                dsnPassed = await SendAllAsync(session, envelope, body, job.Recipients, results);
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
        int[] recipients, SmtpReply[] results)
    {
        IReadOnlyList<int> batch = recipients;
        int[]? positions = null; // where each of the batch's recipients sits in the job (null: the same place)
        bool dsnPassed = false;
        while (true)
        {
            var replies = new SmtpReply[batch.Count];
            try
            {
                dsnPassed = await session.SendAsync(envelope, body, batch, replies);
            }
            catch (SmtpSessionException e)
            {
                var reply = e.Reply.IsPositive ? SmtpReply.Local(451, "4.4.2 connection lost") : e.Reply;
                for (int k = 0; k < batch.Count; k++)
                    results[positions?[k] ?? k] = reply;
                return dsnPassed;
            }
            List<int>? next = null, nextPositions = null;
            for (int k = 0; k < batch.Count; k++)
            {
                int position = positions?[k] ?? k;
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
        await _loop.Context.Scheduler.CompleteJobAsync(job, results,
            new AttemptInfo(_lastTriedHost ?? _route.Key, _lastTriedIp ?? "", null, false, remote, _lastTlsPolicy, TlsFailure: e.TlsFailure));
    }

    /// <summary>The destination is unreachable now: defer everything waiting for it.</summary>
    private async Task DeferQueuedAsync(SmtpSessionException e)
    {
        while (_queue.TryDequeue(out var job))
            await CompleteFailedAsync(job, e);
    }
}
