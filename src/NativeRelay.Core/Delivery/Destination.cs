using System.Net;
using System.Net.Sockets;
using NativeRelay.Routing;
using NativeRelay.Smtp;
using NativeRelay.Spool;

namespace NativeRelay.Delivery;

/// <summary>
/// One next-hop destination inside its loop: a FIFO of messages and the connections draining it.
/// A connection delivers message after message, then waits idle for more (reuse) until the idle
/// timeout. How many connections may be open follows a slow-start window, as in Postfix: it begins
/// at <c>initialConnectionsPerDestination</c>, grows by one per successful delivery up to
/// <c>connectionsPerDestination</c>, and falls back to one when a connection attempt fails, so a
/// burst does not open a connection per message and a struggling host is not hammered. If the
/// destination cannot be reached, everything queued for it is deferred at once rather than each
/// message paying its own connect timeout; other destinations are unaffected.
/// </summary>
internal sealed class Destination
{
    private readonly Route _route;
    private readonly DeliveryLoop _loop;
    private readonly Queue<QueuedMessage> _queue = new();
    private readonly List<TaskCompletionSource<bool>> _idle = new();
    private readonly int _maxConnections;
    private int _connections;
    private int _connecting;   // opened but not yet ready to take a message
    private int _window;

    public Destination(Route route, DeliveryLoop loop)
    {
        _route = route;
        _loop = loop;
        var options = loop.Context.Settings.Delivery;
        _maxConnections = options.ConnectionsPerDestination;
        _window = Math.Min(options.InitialConnectionsPerDestination, _maxConnections);
    }

    public int ActiveConnections => _connections;

    public void Enqueue(QueuedMessage message)
    {
        _queue.Enqueue(message);
        if (_idle.Count > 0)
        {
            var waiter = _idle[^1];
            _idle.RemoveAt(_idle.Count - 1);
            waiter.TrySetResult(true);
            return;
        }
        TryOpenConnection();
    }

    // Another connection only helps if more messages wait than the connections still being set
    // up will take, and only within the slow-start window.
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
        try
        {
            // Connect before taking a message: while this runs, the message stays queued for
            // whichever connection is ready first.
            try
            {
                session = await ConnectAsync();
            }
            catch (SmtpSessionException e)
            {
                _window = 1;
                await DeferQueuedAsync(e.Reply.ToString());
                return;
            }
            finally
            {
                _connecting--;
            }
            string remote = session.RemoteEndPoint.ToString();

            while (!context.Stopping.IsCancellationRequested)
            {
                if (!_queue.TryDequeue(out var message))
                {
                    if (!await WaitForWorkAsync(TimeSpan.FromSeconds(options.IdleConnectionSeconds)))
                        break;
                    continue;
                }
                if (!session.IsUsable || session.TransactionsDone >= options.MessagesPerConnection)
                {
                    await CloseAsync(session);
                    session = null;
                    try
                    {
                        session = await ConnectAsync();
                        remote = session.RemoteEndPoint.ToString();
                    }
                    catch (SmtpSessionException e)
                    {
                        _window = 1;
                        await _loop.DeferAsync(message, e.Reply.ToString());
                        await DeferQueuedAsync(e.Reply.ToString());
                        return;
                    }
                }
                if (await DeliverAsync(session, message, remote))
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
            // Give the slot back before the (slow) goodbye, and look at the queue again: a
            // message that arrived while this connection was leaving must not wait for the next one.
            _connections--;
            if (!context.Stopping.IsCancellationRequested)
                TryOpenConnection();
            if (session is not null)
                await CloseAsync(session);
        }
    }

    private static async Task CloseAsync(SmtpClientSession session)
    {
        if (session.IsUsable)
            await session.QuitAsync();
        await session.DisposeAsync();
    }

    /// <summary>Parks an open connection until a message arrives (true) or the idle time passes (false).</summary>
    private async Task<bool> WaitForWorkAsync(TimeSpan idle)
    {
        var waiter = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
        _idle.Add(waiter);
        var timeout = Task.Delay(idle, _loop.Context.Stopping);
        var first = await Task.WhenAny(waiter.Task, timeout);
        if (first == waiter.Task)
            return true;
        _idle.Remove(waiter);
        return false;
    }

    private async Task<SmtpClientSession> ConnectAsync()
    {
        var context = _loop.Context;
        var options = context.Settings.Delivery;
        SmtpSessionException? last = null;
        foreach (var host in _route.Hosts)
        {
            IPAddress[] addresses;
            if (IPAddress.TryParse(host.Host, out var literal))
                addresses = [literal];
            else
            {
                try
                {
                    addresses = await Dns.GetHostAddressesAsync(host.Host, context.Stopping);
                }
                catch (SocketException e)
                {
                    last = new SmtpSessionException(SmtpReply.Local(451, $"4.4.4 cannot resolve {host.Host}: {e.SocketErrorCode}"));
                    continue;
                }
            }
            foreach (var address in addresses)
            {
                try
                {
                    return await SmtpClientSession.ConnectAsync(new IPEndPoint(address, host.Port), context.Settings.Hostname,
                        TimeSpan.FromSeconds(options.ConnectTimeoutSeconds), TimeSpan.FromSeconds(options.CommandTimeoutSeconds),
                        context.Stopping);
                }
                catch (SmtpSessionException e)
                {
                    last = e;
                }
            }
        }
        throw last ?? new SmtpSessionException(SmtpReply.Local(451, "4.4.4 no address to connect to"));
    }

    /// <summary>Returns true when the next hop accepted the message for at least one recipient.</summary>
    private async Task<bool> DeliverAsync(SmtpClientSession session, QueuedMessage message, string remote)
    {
        var context = _loop.Context;
        if (message.Body is null)
        {
            try
            {
                var (_, body) = await context.Spool.ReadMessageAsync(message.HeadAddress);
                message.Body = body;
            }
            catch (Exception e)
            {
                context.Log.Error($"{message.IdText}: cannot read from the spool: {e.Message}");
                await _loop.DeferAsync(message, $"4.3.0 spool read failed: {e.Message}");
                return false;
            }
        }

        var pending = new List<byte[]>(message.Recipients.Length);
        var indexes = new List<int>(message.Recipients.Length);
        for (int i = 0; i < message.Recipients.Length; i++)
        {
            if (message.Recipients[i] != RecipientState.Pending)
                continue;
            pending.Add(message.Envelope.Recipients[i]);
            indexes.Add(i);
        }

        var results = new SmtpReply[message.Recipients.Length];
        if (session.MaxSize > 0 && message.Body.ContentLength > session.MaxSize)
        {
            var tooBig = SmtpReply.Local(552, $"5.3.4 message size {message.Body.ContentLength} exceeds the remote limit {session.MaxSize}");
            foreach (int i in indexes)
                results[i] = tooBig;
        }
        else
        {
            try
            {
                var replies = await session.SendAsync(message.Envelope.Sender, pending, message.Body,
                    (message.Envelope.Flags & EnvelopeFlags.EightBitMime) != 0);
                for (int k = 0; k < indexes.Count; k++)
                    results[indexes[k]] = replies[k];
            }
            catch (SmtpSessionException e)
            {
                foreach (int i in indexes)
                    results[i] = e.Reply.IsPositive ? SmtpReply.Local(451, "4.4.2 connection lost") : e.Reply;
            }
        }
        await _loop.RecordOutcomeAsync(message, results, remote);
        foreach (var r in results)
            if (r.IsPositive)
                return true;
        return false;
    }

    /// <summary>The destination is unreachable now: defer everything waiting for it.</summary>
    private async Task DeferQueuedAsync(string reason)
    {
        while (_queue.TryDequeue(out var message))
            await _loop.DeferAsync(message, reason);
    }
}
