using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using NativeRelay.Delivery;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Control;

/// <summary>
/// The relay's end of <c>nativerelay queue ...</c>: a Unix domain socket in the spool directory,
/// mode 0600, that answers only its own user and root (checked again per connection with
/// SO_PEERCRED). It is not opened when the spool directory is writable by other users, since they
/// could put their own socket in its place. Every request is one JSON line; see <see cref="ControlProtocol"/>.
/// </summary>
public sealed class ControlServer : IAsyncDisposable
{
    private static readonly TimeSpan RequestTimeout = TimeSpan.FromSeconds(10);

    private readonly Socket _socket;
    private readonly string _path;
    private readonly IQueueAdmin? _admin;
    private readonly NativeRelay.Traffic.ITrafficAdmin? _traffic;
    private readonly SpoolLog _spool;
    private readonly Log _log;
    private readonly int _user = UnixPeer.EffectiveUserId;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Task _accepting;
    private readonly NativeRelay.Traffic.Suppression.SuppressionList? _suppression;

    private ControlServer(Socket socket, string path, IQueueAdmin? admin, SpoolLog spool, Log log,
        NativeRelay.Traffic.Suppression.SuppressionList? suppression, NativeRelay.Traffic.ITrafficAdmin? traffic)
    {
        _suppression = suppression;
        _socket = socket;
        _path = path;
        _admin = admin;
        _traffic = traffic;
        _spool = spool;
        _log = log;
        _accepting = AcceptLoopAsync();
    }

    public string Path => _path;

    private ClusterCommands? _cluster;

    /// <summary>Answers cluster-status for the fleet this relay is a node of (called once after start; without it: "not part of a fleet").</summary>
    public void AttachCluster(NativeRelay.Cluster.ClusterNode node) => Volatile.Write(ref _cluster, new ClusterCommands(node));

    /// <summary>Opens the socket, or logs why not and returns null (the relay runs on without queue commands).</summary>
    public static ControlServer? Start(SpoolLog spool, IQueueAdmin? admin, Log log,
        NativeRelay.Traffic.Suppression.SuppressionList? suppression = null, NativeRelay.Traffic.ITrafficAdmin? traffic = null)
    {
        if (OperatingSystem.IsWindows())
            return null;
        string directory = spool.Directory;
        string path = ControlProtocol.SocketPath(directory);
        var mode = File.GetUnixFileMode(directory);
        if ((mode & (UnixFileMode.GroupWrite | UnixFileMode.OtherWrite)) != 0)
        {
            log.Error($"control socket not opened: the spool directory {directory} is writable by other users (mode {Convert.ToString((int)mode, 8)}); queue commands are unavailable");
            return null;
        }
        if (Encoding.UTF8.GetByteCount(path) >= 108)
        {
            log.Warn($"control socket not opened: {path} is longer than a Unix socket path may be; queue commands are unavailable");
            return null;
        }
        // The spool lock is held, so no other relay owns this path: a leftover from a crash.
        File.Delete(path);
        var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        try
        {
            socket.Bind(new UnixDomainSocketEndPoint(path));
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            socket.Listen(16);
        }
        catch (Exception e) when (e is SocketException or IOException or UnauthorizedAccessException)
        {
            socket.Dispose();
            log.Error($"control socket not opened at {path}: {ExceptionText.Of(e)}; queue commands are unavailable");
            return null;
        }
        if (admin is null)
            log.Warn("control socket open, but this build's delivery side offers no queue administration yet");
        return new ControlServer(socket, path, admin, spool, log, suppression, traffic);
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stopping.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _socket.AcceptAsync(_stopping.Token);
            }
            catch (Exception) when (_stopping.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException e)
            {
                _log.Warn($"control socket: accept failed: {e.Message}");
                await Task.Delay(100);
                continue;
            }
            _ = ServeAsync(client);
        }
    }

    private async Task ServeAsync(Socket client)
    {
        using var _ = client;
        await using var stream = new NetworkStream(client, ownsSocket: false);
        try
        {
            int? peer = UnixPeer.UserId(client);
            if (!UnixPeer.RelayServes(_user, peer))
            {
                _log.Warn($"control socket: refused a client of uid {peer?.ToString() ?? "unknown"}");
                await WriteAsync(stream, new ControlResponse { Done = true, Error = "permission denied" });
                return;
            }
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stopping.Token);
            timeout.CancelAfter(RequestTimeout);
            var line = await ReadLineAsync(stream, timeout.Token);
            ControlRequest? request = null;
            try
            {
                request = line is null ? null : JsonSerializer.Deserialize(line, ControlJsonContext.Default.ControlRequest);
            }
            catch (JsonException)
            {
            }
            if (request is null)
            {
                await WriteAsync(stream, new ControlResponse { Done = true, Error = "bad request: expected one JSON line" });
                return;
            }
            await HandleAsync(request, stream);
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            // The client went away or never spoke.
        }
    }

    private async Task HandleAsync(ControlRequest request, Stream stream)
    {
        if (request.Command.StartsWith("suppress-", StringComparison.Ordinal))
        {
            try
            {
                await SuppressionCommands.HandleAsync(request, stream, _suppression, _log, WriteAsync, _stopping.Token);
            }
            catch (Exception e) when (e is IOException or ArgumentException && !_stopping.IsCancellationRequested)
            {
                // The journal could not be written or synced (a full disk): say so; nothing was acknowledged.
                _log.Warn($"control socket: {request.Command} failed: {ExceptionText.Of(e)}");
                await WriteAsync(stream, new ControlResponse { Done = true, Error = $"the suppression list could not be changed: {e.Message}" });
            }
            return;
        }
        if (request.Command is ControlProtocol.Commands.TrafficStatus or ControlProtocol.Commands.TrafficResume)
        {
            await HandleTrafficAsync(request, stream);
            return;
        }
        if (request.Command == ControlProtocol.Commands.ClusterStatus)
        {
            await WriteAsync(stream, Volatile.Read(ref _cluster) is { } cluster
                ? await cluster.StatusAsync()
                : new ControlResponse { Done = true, Error = ClusterCommands.NotAFleet });
            return;
        }
        var admin = _admin;
        if (request.Command == ControlProtocol.Commands.Stats)
        {
            await WriteAsync(stream, new ControlResponse
            {
                Done = true,
                Ok = true,
                Stats = admin is null ? null : ToStats(admin.Stats()),
                Spool = SpoolStats(),
                Error = admin is null ? "queue administration is not available in this build" : null,
            });
            return;
        }
        if (admin is null)
        {
            await WriteAsync(stream, new ControlResponse { Done = true, Error = "queue administration is not available in this build" });
            return;
        }
        if (request.Id is not null && !QueueIdGenerator.TryParse(request.Id, out _))
        {
            await WriteAsync(stream, new ControlResponse { Done = true, Error = $"'{request.Id}' is not a queue id (16 hex digits)" });
            return;
        }
        var selector = new QueueSelector(request.Id?.ToUpperInvariant(), string.IsNullOrEmpty(request.Domain) ? null : request.Domain.ToLowerInvariant());
        try
        {
            switch (request.Command)
            {
                case ControlProtocol.Commands.List:
                    var entries = admin.List(selector.Domain,
                        request.OlderThanSeconds is long s ? TimeSpan.FromSeconds(s) : null);
                    foreach (var entry in entries)
                        await WriteAsync(stream, new ControlResponse { Entry = ToEntry(entry) });
                    await WriteAsync(stream, new ControlResponse { Done = true, Ok = true, Count = entries.Count });
                    return;
                case ControlProtocol.Commands.Show:
                    if (selector.Id is null)
                        throw new ArgumentException("show needs a queue id");
                    var found = admin.Show(selector.Id);
                    if (found is null)
                    {
                        await WriteAsync(stream, new ControlResponse { Done = true, Error = $"no message {selector.Id} in the queue", Count = 0 });
                        return;
                    }
                    await WriteAsync(stream, new ControlResponse { Entry = ToEntry(found) });
                    await WriteAsync(stream, new ControlResponse { Done = true, Ok = true, Count = 1 });
                    return;
                case ControlProtocol.Commands.Flush:
                    await Touched(stream, "flush", selector, await admin.FlushAsync(selector));
                    return;
                case ControlProtocol.Commands.Delete:
                    await Touched(stream, "delete", Required(selector, "delete"), await admin.DeleteAsync(selector));
                    return;
                case ControlProtocol.Commands.Bounce:
                    await Touched(stream, "bounce", Required(selector, "bounce"), await admin.BounceAsync(selector));
                    return;
                case ControlProtocol.Commands.Hold:
                    await Touched(stream, "hold", Required(selector, "hold"), await admin.HoldAsync(selector));
                    return;
                case ControlProtocol.Commands.Release:
                    await Touched(stream, "release", Required(selector, "release"), await admin.ReleaseAsync(selector));
                    return;
                default:
                    await WriteAsync(stream, new ControlResponse { Done = true, Error = $"unknown command '{request.Command}'" });
                    return;
            }
        }
        catch (ArgumentException e)
        {
            await WriteAsync(stream, new ControlResponse { Done = true, Error = e.Message });
        }
        catch (Exception e) when (e is IOException or InvalidOperationException)
        {
            _log.Warn($"control socket: {request.Command} failed: {ExceptionText.Of(e)}");
            await WriteAsync(stream, new ControlResponse { Done = true, Error = e.Message });
        }
    }

    /// <summary>nativerelay traffic status|resume.</summary>
    private async Task HandleTrafficAsync(ControlRequest request, Stream stream)
    {
        var traffic = _traffic;
        if (traffic is null)
        {
            await WriteAsync(stream, new ControlResponse { Done = true, Error = "traffic control is not available in this build" });
            return;
        }
        if (request.Command == ControlProtocol.Commands.TrafficStatus)
        {
            await WriteAsync(stream, new ControlResponse { Done = true, Ok = true, Traffic = ToTraffic(traffic.Status()) });
            return;
        }
        if (string.IsNullOrWhiteSpace(request.Site))
        {
            await WriteAsync(stream, new ControlResponse { Done = true, Error = "traffic resume needs a site" });
            return;
        }
        int lifted = traffic.Resume(request.Site.Trim(), string.IsNullOrWhiteSpace(request.Source) ? null : request.Source.Trim());
        _log.Info($"control socket: traffic resume site {request.Site}{(request.Source is null ? "" : $" source {request.Source}")}: {lifted} action(s) lifted");
        await WriteAsync(stream, new ControlResponse { Done = true, Ok = true, Count = lifted, Traffic = ToTraffic(traffic.Status()) });
    }

    internal static ControlTraffic ToTraffic(NativeRelay.Traffic.TrafficStatus s) => new()
    {
        Actions = s.Actions.Select(a => new ControlTrafficAction
        {
            Source = a.Source, Site = a.Site, Rule = a.Rule, Action = a.Action, StartedUnixMs = a.StartedUnixMs,
            UntilUnixMs = a.UntilUnixMs, Reply = a.Reply, Limits = a.Limits,
        }).ToList(),
        Paths = s.Paths.Select(p => new ControlTrafficPath { Source = p.Source, Site = p.Site, Connections = p.Connections, Queued = p.Queued, Limits = p.Limits }).ToList(),
        Sources = s.Sources.ToList(),
        Pools = s.Pools.ToList(),
    };

    private static QueueSelector Required(QueueSelector selector, string command) =>
        selector.Id is null && selector.Domain is null ? throw new ArgumentException($"{command} needs a queue id or a domain") : selector;

    private async Task Touched(Stream stream, string command, QueueSelector selector, int count)
    {
        _log.Info($"control socket: {command} {selector.Id ?? (selector.Domain is null ? "all" : "domain " + selector.Domain)}: {count} message(s)");
        await WriteAsync(stream, new ControlResponse { Done = true, Ok = true, Count = count });
    }

    private ControlSpoolStats SpoolStats() => new()
    {
        LiveMessages = _spool.LiveMessages,
        LogBytes = _spool.TailAddress - _spool.BeginAddress,
        SizeOnDisk = _spool.SizeOnDisk(),
        FreeBytes = new DriveInfo(_spool.Directory).AvailableFreeSpace,
        RefusingMail = _spool.IsFull,
        Problem = _spool.Problem,
    };

    internal static ControlEntry ToEntry(QueueEntry e) => new()
    {
        Id = e.Id,
        ArrivalUnixMs = e.Arrival.ToUnixTimeMilliseconds(),
        Size = e.Size,
        Sender = e.Sender,
        Recipients = e.PendingRecipients.ToList(),
        NextAttemptUnixMs = e.NextAttempt?.ToUnixTimeMilliseconds(),
        Attempts = e.Attempts,
        LastError = e.LastError,
        Held = e.Held,
    };

    internal static ControlStats ToStats(QueueStats s) => new()
    {
        Active = s.Active,
        Deferred = s.Deferred,
        Held = s.Held,
        ByDestination = new Dictionary<string, int>(s.ByDestination),
    };

    internal static async Task WriteAsync(Stream stream, ControlResponse response)
    {
        var bytes = JsonSerializer.SerializeToUtf8Bytes(response, ControlJsonContext.Default.ControlResponse);
        await stream.WriteAsync(bytes);
        await stream.WriteAsync("\n"u8.ToArray());
    }

    /// <summary>Reads one line (up to <see cref="ControlProtocol.MaxRequestBytes"/>); null if the client closed first.</summary>
    internal static async Task<string?> ReadLineAsync(Stream stream, CancellationToken cancel)
    {
        var buffer = new byte[ControlProtocol.MaxRequestBytes];
        int used = 0;
        while (used < buffer.Length)
        {
            int n = await stream.ReadAsync(buffer.AsMemory(used), cancel);
            if (n == 0)
                return used == 0 ? null : Encoding.UTF8.GetString(buffer, 0, used);
            int newline = Array.IndexOf(buffer, (byte)'\n', used, n);
            used += n;
            if (newline >= 0)
                return Encoding.UTF8.GetString(buffer, 0, newline);
        }
        return null; // too long
    }

    public async ValueTask DisposeAsync()
    {
        _stopping.Cancel();
        _socket.Dispose();
        await _accepting;
        try
        {
            File.Delete(_path);
        }
        catch (IOException)
        {
        }
        _stopping.Dispose();
    }
}
