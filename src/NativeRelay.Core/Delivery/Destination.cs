using System.Net;
using System.Net.Sockets;
using NativeRelay.Routing;
using NativeRelay.Smtp;
using NativeRelay.Spool;

namespace NativeRelay.Delivery;

/// <summary>
/// One next-hop destination inside its loop: a FIFO of messages and up to
/// <c>connectionsPerDestination</c> connections draining it. A connection delivers message after
/// message, then waits idle for more (reuse) until the idle timeout. If the destination cannot be
/// reached, everything queued for it is deferred at once rather than each message paying its own
/// connect timeout; other destinations are unaffected because each has its own workers.
/// </summary>
internal sealed class Destination
{
    private readonly Route _route;
    private readonly DeliveryLoop _loop;
    private readonly Queue<QueuedMessage> _queue = new();
    private readonly List<TaskCompletionSource<bool>> _idle = new();
    private int _connections;

    public Destination(Route route, DeliveryLoop loop)
    {
        _route = route;
        _loop = loop;
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
        var options = _loop.Context.Settings.Delivery;
        // Open another connection only if the ones already open have more than they can take now.
        if (_connections < options.ConnectionsPerDestination && _queue.Count > 0)
        {
            _connections++;
            _ = RunConnectionAsync();
        }
    }

    private async Task RunConnectionAsync()
    {
        var context = _loop.Context;
        var options = context.Settings.Delivery;
        SmtpClientSession? session = null;
        string remote = "";
        try
        {
            while (!context.Stopping.IsCancellationRequested)
            {
                if (!_queue.TryDequeue(out var message))
                {
                    if (session is null || !await WaitForWorkAsync(TimeSpan.FromSeconds(options.IdleConnectionSeconds)))
                        break;
                    continue;
                }

                if (session is not null && (!session.IsUsable || session.TransactionsDone >= options.MessagesPerConnection))
                {
                    if (session.IsUsable)
                        await session.QuitAsync();
                    await session.DisposeAsync();
                    session = null;
                }
                if (session is null)
                {
                    try
                    {
                        session = await ConnectAsync();
                        remote = $"{session.RemoteEndPoint}";
                    }
                    catch (SmtpSessionException e)
                    {
                        await DeferAllAsync(message, e.Reply.ToString());
                        break;
                    }
                }
                await DeliverAsync(session, message, remote);
            }
        }
        catch (Exception e)
        {
            context.Log.Error($"delivery to {_route.Key} failed unexpectedly: {e}");
        }
        finally
        {
            _connections--;
            if (session is not null)
            {
                if (session.IsUsable)
                    await session.QuitAsync();
                await session.DisposeAsync();
            }
        }
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

    private async Task DeliverAsync(SmtpClientSession session, QueuedMessage message, string remote)
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
                return;
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
    }

    /// <summary>The destination is unreachable now: defer this message and everything waiting behind it.</summary>
    private async Task DeferAllAsync(QueuedMessage first, string reason)
    {
        await _loop.DeferAsync(first, reason);
        while (_queue.TryDequeue(out var message))
            await _loop.DeferAsync(message, reason);
    }
}
