using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;

namespace NativeRelay.Net;

/// <summary>
/// One TCP connection exposed as a pair of pipes. A receive loop reads from the socket straight
/// into the input pipe's pooled memory; a send loop drains the output pipe into the socket with
/// gathered writes. Protocol code (server or client session) only sees <see cref="Transport"/>,
/// so it never touches the socket and costs no copies: the Kestrel transport's shape.
/// </summary>
public sealed class SocketConnection : IAsyncDisposable
{
    // Pipe thresholds: the reader side pauses the socket when a client sends faster than the
    // session parses (backpressure instead of unbounded buffering).
    private const int PauseWriterThreshold = 1024 * 1024;
    private const int ResumeWriterThreshold = PauseWriterThreshold / 2;
    private const int MinReceiveBuffer = 4096;
    // The pipes' block size (the default is 4 KiB). A 100 KiB message then takes 7 receives instead
    // of 25, and the delivery side's dot-stuffed copy 7 blocks: with 4 KiB blocks the relay spent
    // 630-773 µs of CPU per relayed 100 KiB message, with 16 KiB 480-663 (perf/RESULTS.md); 1 KiB
    // mail did not change. The price: an idle connection holds one 16 KiB block for its pending
    // receive.
    private const int SegmentSize = 16 * 1024;
    private static readonly TimeSpan SendDrainTimeout = TimeSpan.FromSeconds(10);

    private readonly Socket _socket;
    private readonly Pipe _input;
    private readonly Pipe _output;
    private readonly SocketAwaitableEventArgs _receiveArgs;
    private readonly SocketAwaitableEventArgs _sendArgs;
    private readonly List<ArraySegment<byte>> _sendSegments = new();
    private Task? _receiving;
    private Task? _sending;
    private int _disposed;

    public SocketConnection(Socket socket, MemoryPool<byte>? pool = null)
    {
        _socket = socket;
        _socket.NoDelay = true;
        pool ??= MemoryPool<byte>.Shared;
        // Run to completion: the session reads a command on the thread whose receive completed it
        // (inline), and a reply it flushes is sent on the session's own thread (inline), so a round
        // trip costs no thread hop (see SocketEngineTuning). A reader that captured a
        // synchronization context (a delivery loop's client session) still resumes on that context.
        _input = new Pipe(new PipeOptions(pool, PipeScheduler.Inline, PipeScheduler.Inline,
            PauseWriterThreshold, ResumeWriterThreshold, SegmentSize, useSynchronizationContext: true));
        _output = new Pipe(new PipeOptions(pool, PipeScheduler.Inline, PipeScheduler.ThreadPool,
            PauseWriterThreshold, ResumeWriterThreshold, SegmentSize, useSynchronizationContext: true));
        _receiveArgs = new SocketAwaitableEventArgs(PipeScheduler.Inline);
        _sendArgs = new SocketAwaitableEventArgs(PipeScheduler.Inline);
        Transport = new DuplexPipe(_input.Reader, _output.Writer);
        RemoteEndPoint = socket.RemoteEndPoint as IPEndPoint ?? new IPEndPoint(IPAddress.None, 0);
        LocalEndPoint = socket.LocalEndPoint as IPEndPoint ?? new IPEndPoint(IPAddress.None, 0);
    }

    /// <summary>What the protocol reads from and writes to.</summary>
    public IDuplexPipe Transport { get; }

    public IPEndPoint RemoteEndPoint { get; }

    public IPEndPoint LocalEndPoint { get; }

    /// <summary>Set by <see cref="DisposeAsync"/> when the peer did not take the last bytes in time and the socket was closed on them.</summary>
    public bool DrainTimedOut { get; private set; }

    public void Start()
    {
        _receiving = ReceiveLoopAsync();
        _sending = SendLoopAsync();
    }

    /// <summary>Connects to a remote endpoint and starts the pump loops.</summary>
    public static async ValueTask<SocketConnection> ConnectAsync(EndPoint remote, IPEndPoint? local, CancellationToken cancel)
    {
        var socket = new Socket(remote.AddressFamily == AddressFamily.Unspecified ? AddressFamily.InterNetwork : remote.AddressFamily,
            SocketType.Stream, ProtocolType.Tcp);
        try
        {
            if (local is not null)
                socket.Bind(local);
            await socket.ConnectAsync(remote, cancel).ConfigureAwait(false);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        var connection = new SocketConnection(socket);
        connection.Start();
        return connection;
    }

    private async Task ReceiveLoopAsync()
    {
        var writer = _input.Writer;
        Exception? error = null;
        try
        {
            while (true)
            {
                var memory = writer.GetMemory(MinReceiveBuffer);
                int received = await _receiveArgs.ReceiveAsync(_socket, memory);
                if (received == 0)
                    break; // orderly shutdown by the peer
                writer.Advance(received);
                var flush = await writer.FlushAsync();
                if (flush.IsCompleted || flush.IsCanceled)
                    break; // the session stopped reading
                // The session ran inline in that flush and may have ended the connection (QUIT):
                // asking a closed socket for more would only throw.
                if (Volatile.Read(ref _disposed) != 0)
                    break;
            }
        }
        catch (SocketException e) when (IsConnectionEnd(e.SocketErrorCode))
        {
            // A reset or an abort is the ordinary end of many SMTP conversations.
        }
        catch (ObjectDisposedException)
        {
        }
        catch (Exception e)
        {
            error = e;
        }
        await writer.CompleteAsync(error);
    }

    private async Task SendLoopAsync()
    {
        var reader = _output.Reader;
        try
        {
            while (true)
            {
                var result = await reader.ReadAsync();
                var buffer = result.Buffer;
                if (!buffer.IsEmpty)
                {
                    await SendAsync(buffer);
                }
                reader.AdvanceTo(buffer.End);
                if (result.IsCompleted || result.IsCanceled)
                    break;
            }
        }
        catch (SocketException e) when (IsConnectionEnd(e.SocketErrorCode))
        {
        }
        catch (ObjectDisposedException)
        {
        }
        finally
        {
            await reader.CompleteAsync();
            // Nothing more to send: tell the peer, then stop receiving. Session end closes the socket.
            try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
            _input.Writer.CancelPendingFlush();
        }
    }

    private async ValueTask SendAsync(ReadOnlySequence<byte> buffer)
    {
        if (buffer.IsSingleSegment)
        {
            var memory = buffer.First;
            while (!memory.IsEmpty)
            {
                int sent = await _sendArgs.SendAsync(_socket, memory);
                memory = memory[sent..];
            }
            return;
        }

        // Several segments: one gathered send for all (common after a pipelined burst of replies
        // or a message body that spans pool blocks).
        while (!buffer.IsEmpty)
        {
            _sendSegments.Clear();
            foreach (var segment in buffer)
            {
                if (!System.Runtime.InteropServices.MemoryMarshal.TryGetArray(segment, out var array))
                    throw new InvalidOperationException("pipe memory must be array-backed");
                _sendSegments.Add(array);
            }
            int sent = await _sendArgs.SendAsync(_socket, _sendSegments);
            buffer = buffer.Slice(sent);
        }
    }

    private static bool IsConnectionEnd(SocketError error) =>
        error is SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.Shutdown
            or SocketError.OperationAborted or SocketError.Interrupted or SocketError.InvalidArgument
            or SocketError.NotConnected;

    /// <summary>Stops both loops and closes the socket. The session completes its pipe ends first.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        // Let queued replies (a 221, a 421) go out before the socket closes, but only for a
        // while: a peer that stops reading must not keep the connection (and its slot) forever.
        await Transport.Output.CompleteAsync();
        if (_sending is not null && !_sending.IsCompleted)
        {
            try
            {
                await _sending.WaitAsync(SendDrainTimeout);
            }
            catch (TimeoutException)
            {
                DrainTimedOut = true;
            }
        }
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
        _socket.Dispose();
        if (_sending is not null)
            await _sending; // ends now: the socket is gone
        if (_receiving is not null)
            await _receiving;
        await Transport.Input.CompleteAsync();
        _receiveArgs.Dispose();
        _sendArgs.Dispose();
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;
        public PipeWriter Output { get; } = output;
    }
}
