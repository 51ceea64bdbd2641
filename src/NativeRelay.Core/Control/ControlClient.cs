using System.Net.Sockets;
using System.Text.Json;

namespace NativeRelay.Control;

/// <summary>No relay answers on the spool's control socket.</summary>
public sealed class NoRelayException(string message) : Exception(message);

/// <summary>
/// The CLI's end of the control socket: connects to the relay that owns a spool, checks that the
/// relay runs as this user or root (SO_PEERCRED), sends one request and reads the answer lines.
/// </summary>
public static class ControlClient
{
    public static async Task<(List<ControlEntry> Entries, ControlResponse Final)> SendAsync(string spoolDirectory, ControlRequest request, TimeSpan timeout)
    {
        var entries = new List<ControlEntry>();
        var final = await ExchangeAsync(spoolDirectory, request, line =>
        {
            if (line.Entry is not null)
                entries.Add(line.Entry);
        }, upload: null, timeout);
        return (entries, final);
    }

    /// <summary>
    /// Sends one request and hands every answer line before the last to <paramref name="onLine"/>;
    /// returns the last. With <paramref name="upload"/>, once the relay answers <c>ready</c> the
    /// stream's bytes follow the request and the client closes its side (suppress-import).
    /// </summary>
    public static async Task<ControlResponse> ExchangeAsync(string spoolDirectory, ControlRequest request, Action<ControlResponse> onLine,
        Stream? upload, TimeSpan timeout)
    {
        string path = ControlProtocol.SocketPath(spoolDirectory);
        if (!File.Exists(path))
            throw new NoRelayException($"no relay is running on the spool {spoolDirectory} (there is no control socket {path})");
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        using var cancel = new CancellationTokenSource(timeout);
        try
        {
            await socket.ConnectAsync(new UnixDomainSocketEndPoint(path), cancel.Token);
        }
        catch (SocketException e) when (e.SocketErrorCode is SocketError.ConnectionRefused or SocketError.AddressNotAvailable)
        {
            throw new NoRelayException($"no relay is running on the spool {spoolDirectory} (nothing answers on {path}; it is left over from a relay that stopped)");
        }
        catch (SocketException e) when (e.SocketErrorCode == SocketError.AccessDenied)
        {
            throw new UnauthorizedAccessException($"permission denied on {path}: run this as the relay's user or root");
        }
        int? relayUser = UnixPeer.UserId(socket);
        if (!UnixPeer.ClientTrusts(UnixPeer.EffectiveUserId, relayUser))
            throw new UnauthorizedAccessException($"the control socket {path} belongs to a process of uid {relayUser?.ToString() ?? "unknown"}, not this user or root; refusing to talk to it");

        await using var stream = new NetworkStream(socket, ownsSocket: false);
        var line = JsonSerializer.SerializeToUtf8Bytes(request, ControlJsonContext.Default.ControlRequest);
        await stream.WriteAsync(line, cancel.Token);
        await stream.WriteAsync("\n"u8.ToArray(), cancel.Token);

        using var reader = new StreamReader(stream);
        while (true)
        {
            string? text = await reader.ReadLineAsync(cancel.Token);
            if (text is null)
                throw new IOException("the relay closed the control connection without an answer");
            var response = JsonSerializer.Deserialize(text, ControlJsonContext.Default.ControlResponse)
                           ?? throw new IOException("empty answer from the relay");
            if (response.Done)
                return response;
            if (response.Ready == true && upload is not null)
            {
                await upload.CopyToAsync(stream, cancel.Token);
                socket.Shutdown(SocketShutdown.Send);
                upload = null;
                continue;
            }
            onLine(response);
        }
    }
}
