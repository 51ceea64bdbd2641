using System.IO.Pipelines;
using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using NativeRelay.Net;

namespace NativeRelay.Tools;

/// <summary>
/// The load generator's side of one connection, as a pair of pipes. Plain connections use the
/// project's <see cref="SocketConnection"/> (socket event-args loops feeding pipes, no per-read
/// allocation). A connection that will do STARTTLS runs over a <see cref="NetworkStream"/> instead,
/// because its byte stream has to be handed to an <see cref="SslStream"/> midway.
/// </summary>
internal sealed class ClientConnection : IAsyncDisposable
{
    private readonly SocketConnection? _plain;
    private readonly Socket? _socket;
    private readonly NetworkStream? _network;
    private SslStream? _tls;
    private PipeReader _input;
    private PipeWriter _output;

    private ClientConnection(SocketConnection plain)
    {
        _plain = plain;
        _input = plain.Transport.Input;
        _output = plain.Transport.Output;
    }

    private ClientConnection(Socket socket)
    {
        _socket = socket;
        _network = new NetworkStream(socket, ownsSocket: true);
        _input = PipeReader.Create(_network, new StreamPipeReaderOptions(leaveOpen: true));
        _output = PipeWriter.Create(_network, new StreamPipeWriterOptions(leaveOpen: true));
    }

    public PipeReader Input => _input;
    public PipeWriter Output => _output;
    public bool IsTls => _tls is not null;

    public static async Task<ClientConnection> ConnectAsync(IPEndPoint remote, bool forTls, CancellationToken cancel)
    {
        if (!forTls)
            return new ClientConnection(await SocketConnection.ConnectAsync(remote, null, cancel));
        var socket = new Socket(remote.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            await socket.ConnectAsync(remote, cancel);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return new ClientConnection(socket);
    }

    /// <summary>After the server's 220 to STARTTLS: handshake, then the pipes run over TLS.</summary>
    public async Task UpgradeToTlsAsync(string targetHost, CancellationToken cancel)
    {
        if (_network is null)
            throw new InvalidOperationException("this connection was not opened for TLS");
        // Anything the server sent after its 220 is discarded (RFC 3207 5: it must not send any).
        await _input.CompleteAsync();
        await _output.CompleteAsync();
        _tls = new SslStream(_network, leaveInnerStreamOpen: true);
        await _tls.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = targetHost,
            // A load generator talks to test servers with self-made certificates.
            RemoteCertificateValidationCallback = static (_, _, _, _) => true,
        }, cancel);
        _input = PipeReader.Create(_tls, new StreamPipeReaderOptions(leaveOpen: true));
        _output = PipeWriter.Create(_tls, new StreamPipeWriterOptions(leaveOpen: true));
    }

    public async ValueTask DisposeAsync()
    {
        if (_plain is not null)
        {
            await _plain.Transport.Input.CompleteAsync();
            await _plain.DisposeAsync();
            return;
        }
        try
        {
            await _output.CompleteAsync();
            await _input.CompleteAsync();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or SocketException)
        {
        }
        try { _socket?.Shutdown(SocketShutdown.Both); } catch (Exception e) when (e is SocketException or ObjectDisposedException) { }
        if (_tls is not null)
            await _tls.DisposeAsync();
        if (_network is not null)
            await _network.DisposeAsync();
    }
}
