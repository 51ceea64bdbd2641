using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using NativeRelay.Telemetry;

namespace NativeRelay.Net;

/// <summary>
/// One TCP connection exposed as a pair of pipes. A receive loop reads from the socket straight
/// into the input pipe's pooled memory; a send loop drains the output pipe into the socket with
/// gathered writes. Protocol code (server or client session) only sees <see cref="Transport"/>,
/// so it never touches the socket and costs no copies: the Kestrel transport's shape.
/// <para>
/// The pump loops never fault, as Kestrel's do not: each records why the connection ended (the
/// first reason wins, see <see cref="EndReason"/>), an error nobody expects (anything but the
/// ordinary ways a peer goes away) is logged once with its type and stack, and
/// <see cref="DisposeAsync"/> always finishes its cleanup: both loops end, both pipes complete,
/// the socket and the receive event args are disposed, every pipe block goes back to the pool.
/// </para>
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
    // mail did not change. An idle connection holds none: see the receive loop.
    private const int SegmentSize = 16 * 1024;
    private static readonly TimeSpan SendDrainTimeout = TimeSpan.FromSeconds(10);

    private readonly Socket _socket;
    private readonly Pipe _input;
    private readonly Pipe _output;
    private readonly SocketAwaitableEventArgs _receiveArgs;
    private List<ArraySegment<byte>>? _sendSegments; // made on the first gathered send
    private readonly Log? _log;
    private Task? _receiving;
    private Task? _sending;
    private int _disposed;
    private volatile bool _peerNotReading;
    private string? _endReason;
    private static long s_nextId;

    public SocketConnection(Socket socket, MemoryPool<byte>? pool = null, Log? log = null)
    {
        _socket = socket;
        _log = log;
        Id = Interlocked.Increment(ref s_nextId);
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
        Transport = new DuplexPipe(_input.Reader, _output.Writer);
        RemoteEndPoint = socket.RemoteEndPoint as IPEndPoint ?? new IPEndPoint(IPAddress.None, 0);
        LocalEndPoint = socket.LocalEndPoint as IPEndPoint ?? new IPEndPoint(IPAddress.None, 0);
    }

    /// <summary>A number for this connection in log lines (unique in the process).</summary>
    public long Id { get; }

    /// <summary>
    /// Why the connection ended, once it has: "closed by the peer", "reset by the peer", "closed
    /// by us", "timed out", or the unexpected error's type and message. The first reason wins.
    /// </summary>
    public string? EndReason => Volatile.Read(ref _endReason);

    /// <summary>For tests: an exception to throw in place of the next receive or send ("receive" or "send").</summary>
    internal Func<string, Exception?>? InjectFault { get; set; }

    /// <summary>What the protocol reads from and writes to.</summary>
    public IDuplexPipe Transport { get; }

    public IPEndPoint RemoteEndPoint { get; }

    public IPEndPoint LocalEndPoint { get; }

    /// <summary>Set by <see cref="DisposeAsync"/> when the peer did not take the last bytes in time and the socket was closed on them.</summary>
    public bool DrainTimedOut { get; private set; }

    /// <summary>
    /// The protocol gave the peer its timeout to take what was sent and it did not: closing then
    /// does not wait <see cref="SendDrainTimeout"/> more for bytes it will not take either (issue
    /// 30: a client that never read held its descriptor and buffers 10 s past its command timeout).
    /// </summary>
    public void PeerStoppedReading() => _peerNotReading = true;

    public void Start()
    {
        _receiving = ReceiveLoopAsync();
        _sending = SendLoopAsync();
    }

    /// <summary>Connects to a remote endpoint and starts the pump loops.</summary>
    public static async ValueTask<SocketConnection> ConnectAsync(EndPoint remote, IPEndPoint? local, CancellationToken cancel, Log? log = null)
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
        var connection = new SocketConnection(socket, log: log);
        connection.Start();
        return connection;
    }

    private async Task ReceiveLoopAsync()
    {
        var writer = _input.Writer;
        try
        {
            while (true)
            {
                // Wait until there is something to read before renting a block (Kestrel's
                // WaitForDataBeforeAllocatingBuffer): a zero-byte receive completes when data
                // arrives, and the pipe holds no block while the input is drained, so an idle
                // connection costs no buffer. The price is one more (non-blocking) recv per read.
                await _receiveArgs.ReceiveAsync(_socket, Memory<byte>.Empty);
                if (InjectFault?.Invoke("receive") is { } fault)
                    throw fault;
                var memory = writer.GetMemory(MinReceiveBuffer);
                int received = await _receiveArgs.ReceiveAsync(_socket, memory);
                if (received == 0)
                {
                    RecordEnd("closed by the peer");
                    break;
                }
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
        catch (Exception e)
        {
            Ended(e, "receive");
        }
        // The session sees the end of its input; why is in EndReason (and logged when unexpected),
        // so it is not reported a second time as the session's own error.
        try
        {
            await writer.CompleteAsync();
        }
        catch (Exception e)
        {
            Ended(e, "completing the input");
        }
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
                    if (InjectFault?.Invoke("send") is { } fault)
                        throw fault;
                    await SendAsync(buffer);
                }
                reader.AdvanceTo(buffer.End);
                if (result.IsCompleted || result.IsCanceled)
                    break;
            }
        }
        catch (Exception e)
        {
            Ended(e, "send");
        }
        try
        {
            await reader.CompleteAsync();
        }
        catch (Exception e)
        {
            Ended(e, "completing the output");
        }
        // Nothing more to send: tell the peer, then stop receiving. Session end closes the socket.
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
        _input.Writer.CancelPendingFlush();
    }

    /// <summary>Sends the whole buffer with event args taken from the shared pool for the length of the send.</summary>
    private async ValueTask SendAsync(ReadOnlySequence<byte> buffer)
    {
        var sender = SocketSenderPool.Rent();
        try
        {
            if (buffer.IsSingleSegment)
            {
                var memory = buffer.First;
                while (!memory.IsEmpty)
                {
                    int sent = await sender.SendAsync(_socket, memory);
                    memory = memory[sent..];
                }
                return;
            }

            // Several segments: one gathered send for all (common after a pipelined burst of replies
            // or a message body that spans pool blocks).
            var segments = _sendSegments ??= new List<ArraySegment<byte>>();
            while (!buffer.IsEmpty)
            {
                segments.Clear();
                foreach (var segment in buffer)
                {
                    if (!System.Runtime.InteropServices.MemoryMarshal.TryGetArray(segment, out var array))
                        throw new InvalidOperationException("pipe memory must be array-backed");
                    segments.Add(array);
                }
                int sent = await sender.SendAsync(_socket, segments);
                buffer = buffer.Slice(sent);
            }
            segments.Clear();
        }
        finally
        {
            // A send that threw (reset, socket disposed) has completed too: the args are free.
            SocketSenderPool.Return(sender);
        }
    }

    /// <summary>Records why a pump loop ended; an error nobody expects is logged once, with its stack.</summary>
    private void Ended(Exception e, string where)
    {
        string? expected = e switch
        {
            SocketException { SocketErrorCode: SocketError.ConnectionReset or SocketError.NetworkReset } => "reset by the peer",
            SocketException { SocketErrorCode: SocketError.TimedOut } => "timed out",
            SocketException { SocketErrorCode: SocketError.HostUnreachable or SocketError.NetworkUnreachable or SocketError.NetworkDown } s => s.SocketErrorCode.ToString(),
            SocketException s when IsConnectionEnd(s.SocketErrorCode) => "closed by us",
            ObjectDisposedException => "closed by us",
            _ => null,
        };
        if (expected is not null)
        {
            RecordEnd(expected);
            return;
        }
        if (RecordEnd($"{e.GetType().Name} in {where}: {e.Message}"))
            _log?.Error($"connection {Id} ({RemoteEndPoint}): unexpected error in {where}, connection closed: {e}");
    }

    private bool RecordEnd(string reason) => Interlocked.CompareExchange(ref _endReason, reason, null) is null;

    private static bool IsConnectionEnd(SocketError error) =>
        error is SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.Shutdown
            or SocketError.OperationAborted or SocketError.Interrupted or SocketError.InvalidArgument
            or SocketError.NotConnected;

    /// <summary>
    /// Stops both loops and closes the socket. The session completes its pipe ends first. Never
    /// throws: every step runs whatever the one before it did.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        // Let queued replies (a 221, a 421) go out before the socket closes, but only for a
        // while: a peer that stops reading must not keep the connection (and its slot) forever.
        try
        {
            await Transport.Output.CompleteAsync();
        }
        catch (Exception e)
        {
            Ended(e, "completing the output");
        }
        if (_sending is not null && !_sending.IsCompleted && _peerNotReading)
        {
            DrainTimedOut = true;
            RecordEnd("the peer stopped reading");
        }
        else if (_sending is not null && !_sending.IsCompleted)
        {
            try
            {
                await _sending.WaitAsync(SendDrainTimeout);
            }
            catch (TimeoutException)
            {
                DrainTimedOut = true;
                RecordEnd("the peer stopped reading");
            }
        }
        RecordEnd("closed by us");
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
        _socket.Dispose();
        // The loops catch everything, so these only wait (the socket is gone: they end now).
        if (_sending is not null)
            await _sending;
        if (_receiving is not null)
            await _receiving;
        try
        {
            await Transport.Input.CompleteAsync();
        }
        catch (Exception e)
        {
            Ended(e, "completing the input");
        }
        _receiveArgs.Dispose();
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;
        public PipeWriter Output { get; } = output;
    }
}
