using NativeRelay.Config;
using NativeRelay.Delivery;
using NativeRelay.Message;
using NativeRelay.Routing;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Tests.Support;

/// <summary>
/// The delivery side in process, on a real spool (FasterLog files in a temp dir), with a test DNS
/// responder and SMTP peers on loopback: messages are appended and committed like a session does,
/// then handed to a real <see cref="DeliveryScheduler"/>. <see cref="RestartAsync"/> closes the
/// spool and recovers it into a new scheduler, to check that what was decided is durable.
/// </summary>
public sealed class DeliveryWorld : IAsyncDisposable
{
    private readonly Action<RelayOptions>? _configure;

    private DeliveryWorld(TempDir dir, TestDnsServer dns, PeerGroup peers, Action<RelayOptions>? configure)
    {
        Dir = dir;
        Dns = dns;
        Peers = peers;
        _configure = configure;
        _errorsWriter = TextWriter.Synchronized(_errors);
        _log = new Log(_errorsWriter, LogLevel.Error);
    }

    public TempDir Dir { get; }
    public TestDnsServer Dns { get; }
    public PeerGroup Peers { get; }
    public RelaySettings Settings { get; private set; } = null!;
    public SpoolLog Spool { get; private set; } = null!;
    public DeliveryScheduler Scheduler { get; private set; } = null!;
    public QueueIdGenerator Ids { get; } = new();
    public List<RecoveredMessage> Recovered { get; private set; } = new();
    private DeliveryLog _deliveryLog = DeliveryLog.Null;
    // The scheduler's error lines (over restarts), for tests that assert nothing went wrong.
    private readonly StringWriter _errors = new();
    private readonly TextWriter _errorsWriter; // synchronized: its writes hold its own lock
    private readonly Log _log;

    public string DeliveryLogPath => Dir.File("delivery.log");

    /// <summary>What the scheduler logged at error level so far.</summary>
    public string LoggedErrors
    {
        get
        {
            _log.Flush();
            lock (_errorsWriter)
                return _errors.ToString();
        }
    }

    /// <summary>
    /// DNS: origin.test (the senders' domain) → 127.0.0.4 and dest.test → 127.0.0.2; peers on
    /// 127.0.0.2 and 127.0.0.4 (Peers[0] and Peers[1]) and any more addresses given.
    /// </summary>
    public static async Task<DeliveryWorld> StartAsync(Action<RelayOptions>? configure = null, params string[] moreAddresses)
    {
        var dir = new TempDir("nativerelay-unit");
        var dns = new TestDnsServer();
        dns.Mx("origin.test", (10, "mx.origin.test")).A("mx.origin.test", "127.0.0.4")
           .Mx("dest.test", (10, "mx.dest.test")).A("mx.dest.test", "127.0.0.2");
        var peers = PeerGroup.Start(new[] { "127.0.0.2", "127.0.0.4" }.Concat(moreAddresses).ToArray());
        var world = new DeliveryWorld(dir, dns, peers, configure);
        await world.OpenAsync().ConfigureAwait(false);
        return world;
    }

    private async Task OpenAsync()
    {
        var options = new RelayOptions
        {
            Hostname = "relay.test",
            Spool = Dir.Spool,
            Listen = ["127.0.0.1:2525"],
        };
        options.Delivery.RetryInitialSeconds = 1;
        options.Delivery.RetryMaxSeconds = 2;
        options.Delivery.Loops = 2;
        options.Delivery.ConnectTimeoutSeconds = 10;
        options.Delivery.CommandTimeoutSeconds = 60;
        options.Delivery.LogFile = DeliveryLogPath;
        options.Routing.Dns = [Dns.Address];
        options.Routing.RemotePort = Peers.Port;
        options.Routing.DnsTimeoutSeconds = 2;
        _configure?.Invoke(options);
        Settings = RelaySettings.Validate(options);
        Spool = SpoolLog.Open(Settings.SpoolDirectory, Settings.SpoolTuning, Log.Null);
        Recovered = SpoolRecovery.Recover(Spool, Ids, Log.Null);
        _deliveryLog = DeliveryLog.Open(Settings.Routing.DeliveryLogPath);
        Scheduler = new DeliveryScheduler(Settings, Spool, new Router(Settings.Routing, Settings.Hostname), _log, Ids, _deliveryLog);
        Scheduler.Start();
        await Scheduler.EnqueueRecoveredAsync(Recovered).ConfigureAwait(false);
    }

    /// <summary>Appends, commits and queues a message, as a receiving session does; returns its queue entry.</summary>
    public async Task<QueuedMessage> QueueAsync(Envelope envelope, byte[] data)
    {
        var body = MessageBuffer.Rent();
        body.Write(data);
        ulong id = Ids.Next();
        Scheduler.ReserveSpool(id);
        var (head, first) = await Spool.AppendMessageAsync(id, envelope, body).ConfigureAwait(false);
        await Spool.WaitForCommitAsync(head).ConfigureAwait(false);
        var message = new QueuedMessage
        {
            Id = id,
            HeadAddress = head,
            FirstAddress = first,
            Envelope = envelope,
            Recipients = new RecipientState[envelope.Recipients.Length],
            Body = body,
        };
        await Scheduler.EnqueueAsync(message).ConfigureAwait(false);
        return message;
    }

    public static Envelope Envelope(string sender, string[] recipients, EnvelopeFlags flags = EnvelopeFlags.None,
        DsnNotify[]? notify = null, string?[]? orcpt = null, string? envId = null) => new()
    {
        Sender = System.Text.Encoding.UTF8.GetBytes(sender),
        Recipients = recipients.Select(r => System.Text.Encoding.UTF8.GetBytes(r)).ToArray(),
        Notify = notify,
        OriginalRecipients = orcpt?.Select(o => o is null ? null : System.Text.Encoding.UTF8.GetBytes(o)).ToArray(),
        EnvelopeId = envId is null ? null : System.Text.Encoding.UTF8.GetBytes(envId),
        ClientAddress = "127.0.0.1",
        HeloName = "client.test",
        ArrivalUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
        Flags = flags,
    };

    /// <summary>Waits (bounded) until the message has left the queue.</summary>
    public async Task WaitUntilGoneAsync(QueuedMessage message)
    {
        var deadline = DateTime.UtcNow + Waits.Delivery;
        while (Scheduler.Show(message.IdText) is not null)
        {
            if (DateTime.UtcNow > deadline)
                throw new Xunit.Sdk.XunitException($"{message.IdText} is still queued: {Scheduler.Show(message.IdText)}\n{Peers.Describe()}");
            await Task.Delay(50).ConfigureAwait(false);
        }
    }

    /// <summary>Waits (bounded) for a condition about the queue.</summary>
    public async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Waits.Delivery;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
                throw new Xunit.Sdk.XunitException($"Not reached within {Waits.Delivery.TotalSeconds:0} s: {what}\n{Peers.Describe()}");
            await Task.Delay(50).ConfigureAwait(false);
        }
    }

    /// <summary>Stops delivery, closes the spool, and recovers it into a new scheduler.</summary>
    public async Task RestartAsync()
    {
        await CloseAsync().ConfigureAwait(false);
        await OpenAsync().ConfigureAwait(false);
    }

    private async Task CloseAsync()
    {
        await Scheduler.DisposeAsync().ConfigureAwait(false);
        await Spool.DisposeAsync().ConfigureAwait(false);
        _deliveryLog.Dispose();
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await CloseAsync().ConfigureAwait(false);
        }
        finally
        {
            await Peers.DisposeAsync().ConfigureAwait(false);
            await Dns.DisposeAsync().ConfigureAwait(false);
            _log.Dispose();
            Dir.Dispose();
        }
    }
}
