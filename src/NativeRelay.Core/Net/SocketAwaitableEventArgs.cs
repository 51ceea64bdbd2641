using System.Diagnostics;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Threading.Tasks.Sources;

namespace NativeRelay.Net;

/// <summary>
/// A <see cref="SocketAsyncEventArgs"/> that can be awaited as a <see cref="ValueTask{Int32}"/>.
/// One instance is reused for every receive (or every send) of a connection, so steady-state
/// socket I/O allocates nothing: no Task, no closure, no per-operation event args. This is the
/// pattern of Kestrel's socket transport.
/// </summary>
internal sealed class SocketAwaitableEventArgs : SocketAsyncEventArgs, IValueTaskSource<int>
{
    // Marks "the operation finished before anyone awaited it".
    private static readonly Action<object?> s_completedSentinel = _ => { };

    private readonly PipeScheduler _ioScheduler;
    private Action<object?>? _continuation;

    public SocketAwaitableEventArgs(PipeScheduler ioScheduler)
        : base(unsafeSuppressExecutionContextFlow: true)
    {
        _ioScheduler = ioScheduler;
    }

    public ValueTask<int> ReceiveAsync(Socket socket, Memory<byte> buffer)
    {
        SetBuffer(buffer);
        return socket.ReceiveAsync(this) ? new ValueTask<int>(this, 0) : CompletedSynchronously();
    }

    public ValueTask<int> SendAsync(Socket socket, ReadOnlyMemory<byte> buffer)
    {
        if (BufferList is not null)
            BufferList = null;
        SetBuffer(System.Runtime.InteropServices.MemoryMarshal.AsMemory(buffer));
        return socket.SendAsync(this) ? new ValueTask<int>(this, 0) : CompletedSynchronously();
    }

    /// <summary>Gathers several pipe segments into one sendmsg call.</summary>
    public ValueTask<int> SendAsync(Socket socket, List<ArraySegment<byte>> buffers)
    {
        if (Buffer is not null || MemoryBuffer.Length != 0)
            SetBuffer(null, 0, 0);
        BufferList = buffers;
        return socket.SendAsync(this) ? new ValueTask<int>(this, 0) : CompletedSynchronously();
    }

    /// <summary>Drops the buffer or buffer list of the last operation (before the args go back to a pool).</summary>
    public void ClearBuffers()
    {
        if (BufferList is not null)
            BufferList = null;
        else
            SetBuffer(Memory<byte>.Empty);
    }

    private ValueTask<int> CompletedSynchronously() =>
        SocketError == SocketError.Success
            ? new ValueTask<int>(BytesTransferred)
            : ValueTask.FromException<int>(new SocketException((int)SocketError));

    protected override void OnCompleted(SocketAsyncEventArgs _)
    {
        var continuation = _continuation;
        if (continuation != null
            || (continuation = Interlocked.CompareExchange(ref _continuation, s_completedSentinel, null)) != null)
        {
            var state = UserToken;
            UserToken = null;
            _continuation = s_completedSentinel;
            _ioScheduler.Schedule(continuation, state);
        }
    }

    public int GetResult(short token)
    {
        _continuation = null;
        if (SocketError != SocketError.Success)
            throw new SocketException((int)SocketError);
        return BytesTransferred;
    }

    public ValueTaskSourceStatus GetStatus(short token)
    {
        if (!ReferenceEquals(_continuation, s_completedSentinel))
            return ValueTaskSourceStatus.Pending;
        return SocketError == SocketError.Success ? ValueTaskSourceStatus.Succeeded : ValueTaskSourceStatus.Faulted;
    }

    public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags)
    {
        UserToken = state;
        var previous = Interlocked.CompareExchange(ref _continuation, continuation, null);
        if (ReferenceEquals(previous, s_completedSentinel))
        {
            // The I/O finished between the start and this registration: run the continuation now.
            UserToken = null;
            ThreadPool.UnsafeQueueUserWorkItem(continuation, state, preferLocal: true);
        }
        else
        {
            Debug.Assert(previous is null, "one await at a time per event args");
        }
    }
}
