using System.Collections.Concurrent;
using System.IO.Pipelines;

namespace NativeRelay.Net;

/// <summary>
/// Send event args shared by every connection and taken only while a send is in flight (the
/// shape of Kestrel's SocketSenderPool). Receives need their event args for the whole life of a
/// connection, sends only for microseconds, so an idle connection holds none: a few hundred bytes
/// less for each of thousands of idle connections. Bounded: beyond <see cref="MaxPooled"/> free
/// ones, a returned one is disposed.
/// </summary>
internal static class SocketSenderPool
{
    private const int MaxPooled = 1024;

    private static readonly ConcurrentQueue<SocketAwaitableEventArgs> s_free = new();
    private static int s_count;

    public static SocketAwaitableEventArgs Rent()
    {
        if (s_free.TryDequeue(out var sender))
        {
            Interlocked.Decrement(ref s_count);
            return sender;
        }
        return new SocketAwaitableEventArgs(PipeScheduler.Inline);
    }

    /// <summary>Gives back an event args whose send has completed; it must not be used after this.</summary>
    public static void Return(SocketAwaitableEventArgs sender)
    {
        sender.ClearBuffers(); // hold no reference to a connection's pipe blocks while pooled
        if (Interlocked.Increment(ref s_count) > MaxPooled)
        {
            Interlocked.Decrement(ref s_count);
            sender.Dispose();
            return;
        }
        s_free.Enqueue(sender);
    }
}
