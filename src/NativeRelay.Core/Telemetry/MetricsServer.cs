using System.Net;
using System.Net.Sockets;
using System.Text;

namespace NativeRelay.Telemetry;

/// <summary>
/// The Prometheus endpoint: a minimal HTTP/1.1 server on a plain socket. GET (or HEAD) /metrics
/// answers the registry in the text format 0.0.4; any other path is 404, any other method 405.
/// Connections are kept alive between scrapes and closed after an idle time without
/// a request (<see cref="DefaultIdleTimeout"/>); at most <see cref="MaxConnections"/> are served at once, the rest are closed at accept.
/// </summary>
public sealed class MetricsServer : IAsyncDisposable
{
    public static readonly TimeSpan DefaultIdleTimeout = TimeSpan.FromSeconds(30);
    public const int MaxConnections = 16;
    private const int MaxRequestHead = 8 * 1024;

    private readonly Socket _listener;
    private readonly MetricsRegistry _registry;
    private readonly Log? _log;
    private readonly TimeSpan _idleTimeout;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _connections = [];
    private Task? _accepting;
    private int _open;

    public MetricsServer(IPEndPoint endpoint, MetricsRegistry registry, Log? log = null, TimeSpan? idleTimeout = null)
    {
        _registry = registry;
        _idleTimeout = idleTimeout ?? DefaultIdleTimeout;
        _log = log;
        _listener = new Socket(endpoint.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        try
        {
            NativeRelay.Net.ExclusiveBind.Bind(_listener, endpoint);
            _listener.Listen(64);
        }
        catch
        {
            _listener.Dispose();
            throw;
        }
        EndPoint = (IPEndPoint)_listener.LocalEndPoint!;
    }

    /// <summary>Where it listens (with the real port when 0 was asked for).</summary>
    public IPEndPoint EndPoint { get; }

    public void Start() => _accepting = AcceptLoopAsync();

    /// <summary>
    /// Starts the endpoint of <c>metrics.listen</c> on <see cref="RelayMetrics.Registry"/>, or
    /// returns null when it is off. A port that cannot be bound is a one-line ConfigException.
    /// </summary>
    public static MetricsServer? StartConfigured(NativeRelay.Config.RelaySettings settings, Log log)
    {
        if (settings.Metrics is not { } m)
            return null;
        RelayMetrics.SetMaxDestinations(m.MaxDestinations);
        MetricsServer server;
        try
        {
            server = new MetricsServer(m.Listen, RelayMetrics.Registry, log);
        }
        catch (SocketException e)
        {
            throw new NativeRelay.Config.ConfigException($"metrics.listen: {NativeRelay.Net.ExclusiveBind.Describe(m.Listen, e)}");
        }
        server.Start();
        log.Info($"metrics on http://{server.EndPoint}/metrics{(m.IsLoopback ? "" : " (not loopback: reachable from the network)")}");
        return server;
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptAsync(_stop.Token).ConfigureAwait(false);
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
                _log?.Warn($"metrics: accept failed: {e.SocketErrorCode}");
                continue;
            }
            if (Interlocked.Increment(ref _open) > MaxConnections)
            {
                Interlocked.Decrement(ref _open);
                socket.Dispose();
                continue;
            }
            var task = ServeAsync(socket);
            lock (_connections)
            {
                _connections.RemoveAll(t => t.IsCompleted);
                _connections.Add(task);
            }
        }
    }

    private async Task ServeAsync(Socket socket)
    {
        try
        {
            socket.NoDelay = true;
            var buffer = new byte[MaxRequestHead];
            int filled = 0;
            while (!_stop.IsCancellationRequested)
            {
                int headEnd = FindHeadEnd(buffer.AsSpan(0, filled));
                while (headEnd < 0)
                {
                    if (filled == buffer.Length)
                    {
                        await SendAsync(socket, 431, "Request Header Fields Too Large", "request head too large\n", close: true, head: false).ConfigureAwait(false);
                        return;
                    }
                    using var idle = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                    idle.CancelAfter(_idleTimeout);
                    int n;
                    try
                    {
                        n = await socket.ReceiveAsync(buffer.AsMemory(filled), SocketFlags.None, idle.Token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        return; // idle (or stopping): close
                    }
                    if (n == 0)
                        return;
                    filled += n;
                    headEnd = FindHeadEnd(buffer.AsSpan(0, filled));
                }

                var head = Encoding.ASCII.GetString(buffer, 0, headEnd);
                int consumed = headEnd + 4;
                Buffer.BlockCopy(buffer, consumed, buffer, 0, filled - consumed);
                filled -= consumed;
                if (!await HandleAsync(socket, head).ConfigureAwait(false))
                    return;
            }
        }
        catch (Exception e) when (e is SocketException or IOException or ObjectDisposedException)
        {
        }
        finally
        {
            try { socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
            socket.Dispose();
            Interlocked.Decrement(ref _open);
        }
    }

    /// <summary>Answers one request; false when the connection is to be closed.</summary>
    private async Task<bool> HandleAsync(Socket socket, string head)
    {
        var lines = head.Split("\r\n");
        var parts = lines[0].Split(' ');
        if (parts.Length != 3 || !parts[2].StartsWith("HTTP/1.", StringComparison.Ordinal))
        {
            await SendAsync(socket, 400, "Bad Request", "bad request\n", close: true, head: false).ConfigureAwait(false);
            return false;
        }
        string method = parts[0], target = parts[1], version = parts[2];
        bool close = version == "HTTP/1.0";
        for (int i = 1; i < lines.Length; i++)
        {
            int colon = lines[i].IndexOf(':');
            if (colon <= 0)
                continue;
            var name = lines[i].AsSpan(0, colon).Trim();
            var value = lines[i].AsSpan(colon + 1).Trim();
            if (name.Equals("Connection", StringComparison.OrdinalIgnoreCase))
                close = value.Equals("close", StringComparison.OrdinalIgnoreCase) || (close && !value.Equals("keep-alive", StringComparison.OrdinalIgnoreCase));
            else if ((name.Equals("Content-Length", StringComparison.OrdinalIgnoreCase) && !value.SequenceEqual("0"))
                     || name.Equals("Transfer-Encoding", StringComparison.OrdinalIgnoreCase))
                close = true; // a body we do not read: do not try to find the next request after it
        }
        int query = target.IndexOf('?');
        string path = query >= 0 ? target[..query] : target;
        bool isHead = method == "HEAD";
        if (method != "GET" && !isHead)
        {
            await SendAsync(socket, 405, "Method Not Allowed", "only GET\n", close, isHead, "Allow: GET, HEAD\r\n").ConfigureAwait(false);
            return !close;
        }
        if (path != "/metrics")
        {
            await SendAsync(socket, 404, "Not Found", "not found; the metrics are at /metrics\n", close, isHead).ConfigureAwait(false);
            return !close;
        }
        string body;
        try
        {
            body = _registry.Render();
        }
        catch (Exception e)
        {
            _log?.Error($"metrics: rendering failed: {ExceptionText.Of(e)}");
            await SendAsync(socket, 500, "Internal Server Error", "rendering failed\n", close: true, isHead).ConfigureAwait(false);
            return false;
        }
        await SendAsync(socket, 200, "OK", body, close, isHead, contentType: "text/plain; version=0.0.4; charset=utf-8").ConfigureAwait(false);
        return !close;
    }

    private static async Task SendAsync(Socket socket, int status, string reason, string body, bool close, bool head,
        string extraHeaders = "", string contentType = "text/plain; charset=utf-8")
    {
        var bodyBytes = Encoding.UTF8.GetBytes(body);
        var headBytes = Encoding.ASCII.GetBytes(
            $"HTTP/1.1 {status} {reason}\r\nContent-Type: {contentType}\r\nContent-Length: {bodyBytes.Length}\r\n" +
            $"{extraHeaders}Connection: {(close ? "close" : "keep-alive")}\r\n\r\n");
        var all = new byte[headBytes.Length + (head ? 0 : bodyBytes.Length)];
        headBytes.CopyTo(all, 0);
        if (!head)
            bodyBytes.CopyTo(all, headBytes.Length);
        int sent = 0;
        while (sent < all.Length)
            sent += await socket.SendAsync(all.AsMemory(sent), SocketFlags.None).ConfigureAwait(false);
    }

    private static int FindHeadEnd(ReadOnlySpan<byte> data) => data.IndexOf("\r\n\r\n"u8);

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
            return;
        _stop.Cancel();
        _listener.Dispose();
        if (_accepting is not null)
            await _accepting.ConfigureAwait(false);
        Task[] open;
        lock (_connections)
            open = _connections.ToArray();
        await Task.WhenAll(open).ConfigureAwait(false);
        _stop.Dispose();
    }
}
