using System.Text;
using NativeRelay.Config;
using NativeRelay.Delivery;
using NativeRelay.Net;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Smtp;

/// <summary>
/// What every receiving session shares: settings, the spool, the hand-off to delivery, and the
/// fixed replies rendered once at start (greeting, EHLO capabilities) so sessions only copy bytes.
/// </summary>
public sealed class SmtpServer : IConnectionHandler
{
    public SmtpServer(RelaySettings settings, SpoolLog spool, IQueueIntake intake, QueueIdGenerator ids, Log log)
    {
        Settings = settings;
        Spool = spool;
        Intake = intake;
        Ids = ids;
        Log = log;
        HostnameBytes = Encoding.ASCII.GetBytes(settings.Hostname);
        Greeting = Encoding.ASCII.GetBytes($"220 {settings.Hostname} ESMTP NativeRelay\r\n");
        EhloCapabilities = Encoding.ASCII.GetBytes(
            "250-PIPELINING\r\n" +
            $"250-SIZE {settings.Limits.MaxMessageSize}\r\n" +
            "250-8BITMIME\r\n" +
            "250-ENHANCEDSTATUSCODES\r\n" +
            "250 HELP\r\n");
        TooManyConnectionsReply = SmtpReplies.TooManyConnections.ToArray();
    }

    internal RelaySettings Settings { get; }
    internal SpoolLog Spool { get; }
    internal IQueueIntake Intake { get; }
    internal QueueIdGenerator Ids { get; }
    internal Log Log { get; }
    internal byte[] HostnameBytes { get; }
    internal byte[] Greeting { get; }
    /// <summary>The EHLO reply after its first line ("250-hostname greets ...").</summary>
    internal byte[] EhloCapabilities { get; }

    public ReadOnlyMemory<byte> TooManyConnectionsReply { get; }

    private long _messagesAccepted;
    private long _bytesAccepted;
    public long MessagesAccepted => Interlocked.Read(ref _messagesAccepted);
    public long BytesAccepted => Interlocked.Read(ref _bytesAccepted);

    internal void CountAccepted(long bytes)
    {
        Interlocked.Increment(ref _messagesAccepted);
        Interlocked.Add(ref _bytesAccepted, bytes);
    }

    public Task HandleAsync(SocketConnection connection, ListenerInfo listener, CancellationToken stopping) =>
        new SmtpServerSession(this, connection, listener).RunAsync(stopping);

    internal bool MayRelay(System.Net.IPAddress client)
    {
        if (client.IsIPv4MappedToIPv6)
            client = client.MapToIPv4();
        foreach (var network in Settings.RelayNetworks)
            if (network.Contains(client))
                return true;
        return false;
    }
}
