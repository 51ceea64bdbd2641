namespace NativeRelay.Net;

/// <summary>Runs the protocol over one accepted connection. Returns when the conversation is over.</summary>
public interface IConnectionHandler
{
    Task HandleAsync(SocketConnection connection, ListenerInfo listener, CancellationToken stopping);

    /// <summary>Answers a client refused before any session starts (too many connections).</summary>
    ReadOnlyMemory<byte> TooManyConnectionsReply { get; }
}
