using NativeRelay.Net;

namespace NativeRelay.Smtp;

/// <summary>
/// The listeners' connection handler across reloads. Each <see cref="SmtpServer"/> is one
/// configuration (settings, policy, certificate, users, rendered replies) and never changes;
/// a reload builds a whole new one and swaps it in here with one reference write. A session is
/// created by the server current when its connection is accepted and keeps it to the end, so
/// sessions in progress finish under the settings they started with and new ones get the new.
/// </summary>
public sealed class SmtpServerSwitch : IConnectionHandler
{
    private static readonly byte[] TooManyConnections = SmtpReplies.TooManyConnections.ToArray();
    private SmtpServer? _current;

    /// <summary>Null until the host has built the first server (listeners are bound before that, but do not accept yet).</summary>
    public SmtpServer? Current => Volatile.Read(ref _current);

    /// <summary>Installs the server new connections get; returns the one it replaces.</summary>
    public SmtpServer? Swap(SmtpServer next) => Interlocked.Exchange(ref _current, next);

    public Task HandleAsync(SocketConnection connection, ListenerInfo listener, CancellationToken stopping) =>
        (Current ?? throw new InvalidOperationException("no SMTP server installed")).HandleAsync(connection, listener, stopping);

    public ReadOnlyMemory<byte> TooManyConnectionsReply => TooManyConnections;
}
