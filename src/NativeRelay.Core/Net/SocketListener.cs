using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using NativeRelay.Telemetry;

namespace NativeRelay.Net;

/// <summary>
/// Accepts TCP connections on one endpoint and runs a session per connection, enforcing the
/// total and per-client-IP connection limits before any protocol work is done.
/// </summary>
public sealed class SocketListener : IAsyncDisposable
{
    private readonly ListenerInfo _info;
    private readonly IConnectionHandler _handler;
    private readonly ConnectionLimiter _limiter;
    private readonly Log _log;
    private readonly Socket _socket;
    // Sessions running: a count and one signal for the drain, instead of a task set with a
    // continuation per connection (a few hundred bytes each for thousands of idle connections).
    private int _active;
    private readonly TaskCompletionSource _allEnded = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _stopAccepting = new();
    private Task? _acceptLoop;

    public SocketListener(IPEndPoint endPoint, IConnectionHandler handler, ConnectionLimiter limiter, Log log,
        ListenerKind kind = ListenerKind.Smtp)
    {
        _handler = handler;
        _limiter = limiter;
        _log = log;
        _socket = new Socket(endPoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        if (endPoint.AddressFamily == AddressFamily.InterNetworkV6)
            _socket.DualMode = endPoint.Address.Equals(IPAddress.IPv6Any);
        ExclusiveBind.Bind(_socket, endPoint);
        _socket.Listen(1024);
        _info = new ListenerInfo((IPEndPoint)_socket.LocalEndPoint!, kind);
    }

    public IPEndPoint EndPoint => _info.EndPoint;

    public ListenerKind Kind => _info.Kind;

    /// <summary>Sessions still running (after a drain: those the deadline cut short).</summary>
    public int SessionCount => Volatile.Read(ref _active);

    public void Start(CancellationToken stopping)
    {
        _acceptLoop = AcceptLoopAsync(stopping);
    }

    private async Task AcceptLoopAsync(CancellationToken stopping)
    {
        while (!_stopAccepting.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _socket.AcceptAsync(_stopAccepting.Token);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            catch (ObjectDisposedException)
            {
                break;
            }
            catch (SocketException e)
            {
                // EMFILE and friends: log and keep accepting rather than let the listener die.
                _log.Warn($"accept on {_info.EndPoint} failed: {e.SocketErrorCode}");
                await Task.Delay(50, CancellationToken.None);
                continue;
            }

            Interlocked.Increment(ref _active);
            _ = RunSessionAsync(client, stopping);
        }
    }

    private async Task RunSessionAsync(Socket client, CancellationToken stopping)
    {
        // No hop to the pool: the session runs on the accept's own thread until its first real
        // wait (the greeting is sent, the first read is pending), then the loop accepts again.
        // Nothing before that wait blocks (see SocketEngineTuning).
        var remote = client.RemoteEndPoint as IPEndPoint;
        var address = remote?.Address ?? IPAddress.None;
        var connection = new SocketConnection(client, log: _log);
        connection.Start();
        var admitted = _limiter.TryAcquire(address);
        try
        {
            if (admitted != ConnectionLimiter.Admission.Admitted)
            {
                Telemetry.RelayMetrics.ConnectionsRefused.Increment();
                _log.Info($"refused {remote}: {(admitted == ConnectionLimiter.Admission.TooManyTotal ? "connection limit" : "per-IP connection limit")}");
                // On an implicit-TLS listener a plain-text reply would only confuse the handshake: just close.
                if (!_info.IsImplicitTls)
                    await connection.Transport.Output.WriteAsync(_handler.TooManyConnectionsReply, CancellationToken.None);
                return;
            }
            Telemetry.RelayMetrics.ConnectionsAccepted.Increment();
            Telemetry.RelayMetrics.ConnectionsActive.Increment();
            await _handler.HandleAsync(connection, _info, stopping);
        }
        catch (Exception e)
        {
            // A session bug must cost one connection, never the listener.
            _log.Error($"session from {remote} ended with an error: {e}");
        }
        finally
        {
            if (admitted == ConnectionLimiter.Admission.Admitted)
            {
                _limiter.Release(address);
                Telemetry.RelayMetrics.ConnectionsActive.Decrement();
            }
            await connection.DisposeAsync(); // never throws: its pump loops record why they ended instead
            if (connection.DrainTimedOut)
                _log.Info($"{remote}: connection closed with bytes unsent (the peer stopped reading)");
            // The last session to end after the listener stopped accepting releases the drain.
            if (Interlocked.Decrement(ref _active) == 0 && _stopAccepting.IsCancellationRequested)
                _allEnded.TrySetResult();
        }
    }

    /// <summary>Stops accepting; sessions in progress continue.</summary>
    public void StopAccepting()
    {
        _stopAccepting.Cancel();
        _socket.Dispose();
    }

    /// <summary>Waits for the sessions in progress, up to the deadline.</summary>
    public async Task DrainAsync(TimeSpan deadline)
    {
        if (_acceptLoop is not null)
            await _acceptLoop;
        if (Volatile.Read(ref _active) == 0)
            return;
        await Task.WhenAny(_allEnded.Task, Task.Delay(deadline));
    }

    public async ValueTask DisposeAsync()
    {
        StopAccepting();
        await DrainAsync(TimeSpan.FromSeconds(1));
        _stopAccepting.Dispose();
    }
}
