namespace NativeRelay.Config;

/// <summary>
/// The configuration file as the operator writes it (camelCase JSON). Every property has the
/// built-in default that <c>nativerelay serve</c> uses with no arguments; <see cref="RelaySettings"/>
/// is the validated, parsed form the relay runs on.
/// </summary>
public sealed class RelayOptions
{
    /// <summary>The name the relay gives itself in the greeting, EHLO and Received headers. Default: the machine's host name.</summary>
    public string? Hostname { get; set; }

    /// <summary>Addresses to accept SMTP on, as IP:PORT ("[::1]:25" for IPv6).</summary>
    public List<string> Listen { get; set; } = ["127.0.0.1:2525"];

    /// <summary>The spool directory (the FasterLog files and the queue's state).</summary>
    public string Spool { get; set; } = "./var/spool";

    /// <summary>When set, every non-local message goes to this HOST:PORT instead of its MX hosts.</summary>
    public string? RelayTo { get; set; }

    /// <summary>Clients in these networks may relay to any domain. Default: loopback only.</summary>
    public List<string> RelayNetworks { get; set; } = ["127.0.0.0/8", "::1/128"];

    public LimitsOptions Limits { get; set; } = new();

    public DeliveryOptions Delivery { get; set; } = new();

    public SpoolOptions SpoolTuning { get; set; } = new();
}

/// <summary>Resource limits of the receiving side. Defaults follow RFC 5321 4.5.3 where it sets one.</summary>
public sealed class LimitsOptions
{
    public long MaxMessageSize { get; set; } = 25L * 1024 * 1024;
    public int MaxRecipients { get; set; } = 1000;
    public int MaxConnections { get; set; } = 2000;
    public int MaxConnectionsPerIp { get; set; } = 200;
    public int MaxErrors { get; set; } = 10;
    public int MaxReceivedHeaders { get; set; } = 50;
    /// <summary>RFC 5321 4.5.3.2.7: the server waits at least 5 minutes for a command.</summary>
    public int CommandTimeoutSeconds { get; set; } = 300;
    /// <summary>RFC 5321 4.5.3.2.6: the server waits at least 10 minutes after the data terminator... and between data blocks.</summary>
    public int DataTimeoutSeconds { get; set; } = 600;
}

/// <summary>How queued mail is moved on.</summary>
public sealed class DeliveryOptions
{
    /// <summary>Delivery loops; 0 means one per core.</summary>
    public int Loops { get; set; }
    public int ConnectionsPerDestination { get; set; } = 20;
    /// <summary>
    /// Slow start (as Postfix's initial_destination_concurrency): a destination begins with this
    /// many connections at most and gains one per successful delivery, up to the limit above.
    /// </summary>
    public int InitialConnectionsPerDestination { get; set; } = 5;
    public int MessagesPerConnection { get; set; } = 1000;
    public int IdleConnectionSeconds { get; set; } = 10;
    /// <summary>Delay before the first retry of a deferred message; later retries back off exponentially.</summary>
    public int RetryInitialSeconds { get; set; } = 60;
    public int RetryMaxSeconds { get; set; } = 3600;
    /// <summary>A message not delivered within this time fails (RFC 5321 4.5.4.1 suggests 4-5 days).</summary>
    public double MaxLifetimeHours { get; set; } = 120;
    public int ConnectTimeoutSeconds { get; set; } = 30;
    /// <summary>Applies to every reply from the next hop; RFC 5321 4.5.3.2 gives 2-10 minutes per stage.</summary>
    public int CommandTimeoutSeconds { get; set; } = 300;
}

/// <summary>FasterLog sizing. The defaults suit a small edge relay; a bulk gateway may raise them.</summary>
public sealed class SpoolOptions
{
    /// <summary>log2 of the FasterLog page size; a message larger than half a page is split into chunk records.</summary>
    public int PageSizeBits { get; set; } = 21;
    /// <summary>log2 of the in-memory part of the log (a ring of pages).</summary>
    public int MemorySizeBits { get; set; } = 24;
    /// <summary>log2 of one log file's size; space is reclaimed a whole file at a time.</summary>
    public int SegmentSizeBits { get; set; } = 28;
}
