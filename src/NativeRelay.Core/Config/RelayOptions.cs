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

    /// <summary>Listeners with a kind ("smtp", "submission", "implicit-tls"), beside the plain SMTP ones of <see cref="Listen"/>.</summary>
    public List<ListenerOptions> Listeners { get; set; } = [];

    /// <summary>Certificate and key for STARTTLS and implicit TLS; without them no TLS is offered.</summary>
    public TlsOptions Tls { get; set; } = new();

    /// <summary>Password file for AUTH (lines written by <c>nativerelay passwd</c>).</summary>
    public string? UsersFile { get; set; }

    /// <summary>Offer AUTH on connections that are not encrypted (off: AUTH only after STARTTLS or on implicit TLS).</summary>
    public bool AllowPlaintextAuth { get; set; }

    /// <summary>Domains whose mail is accepted from anyone; ".example.com" also matches every subdomain.</summary>
    public List<string> AcceptedDomains { get; set; } = [];

    /// <summary>Known recipients of the accepted domains ("user@domain", or "@domain" for all of a domain); when any is given, others get 550 5.1.1.</summary>
    public List<string> LocalRecipients { get; set; } = [];

    /// <summary>A file of more local recipients, one per line, read at start and on reload.</summary>
    public string? LocalRecipientsFile { get; set; }

    /// <summary>How often the certificate, users and recipient files are checked for changes (SIGHUP reloads at once).</summary>
    public int ReloadCheckSeconds { get; set; } = 30;

    public LimitsOptions Limits { get; set; } = new();

    public DeliveryOptions Delivery { get; set; } = new();

    /// <summary>Checks of next hops' certificates: the CA bundle of the verify policy (see OutboundTlsOptions.cs).</summary>
    public OutboundTlsOptions OutboundTls { get; set; } = new();

    /// <summary>SMTP TLS reporting, RFC 8460 (see TlsRptOptions.cs).</summary>
    public TlsRptOptions TlsRpt { get; set; } = new();

    /// <summary>Next-hop selection: DNS servers, remote port, static routes, address literals (see RoutingOptions.cs).</summary>
    public RoutingOptions Routing { get; set; } = new();

    /// <summary>Egress sources and pools, pool rules, and the shaping rules file (see TrafficOptions.cs); empty: the system's default address, no shaping beyond delivery and routes.</summary>
    public TrafficOptions Traffic { get; set; } = new();

    /// <summary>Delivery status notifications: how much of the message a bounce returns, delay warnings.</summary>
    public BounceOptions Bounces { get; set; } = new();

    public SpoolOptions SpoolTuning { get; set; } = new();

    /// <summary>Domains delivered on this host (Maildir or LMTP) instead of relayed (see LocalDomainOptions.cs).</summary>
    public List<LocalDomainOptions> LocalDomains { get; set; } = [];

    /// <summary>The Prometheus endpoint (off unless metrics.listen is set; see MetricsOptions.cs).</summary>
    public MetricsOptions Metrics { get; set; } = new();

    /// <summary>The HTTP API: injection, one-click unsubscribe (off unless http.listen is set; see HttpOptions.cs).</summary>
    public HttpOptions Http { get; set; } = new();

    /// <summary>SPF, DKIM and DMARC checks of inbound mail and the Authentication-Results header (off by default; see InboundAuthOptions.cs).</summary>
    public InboundAuthOptions InboundAuth { get; set; } = new();

    /// <summary>Log level and format (see LifecycleOptions.cs).</summary>
    public LogOptions Log { get; set; } = new();

    /// <summary>SIGTERM drain time (see LifecycleOptions.cs).</summary>
    public ShutdownOptions Shutdown { get; set; } = new();

    /// <summary>DKIM signing keys and the verifier's limits (see DkimOptions.cs); no keys: nothing is signed.</summary>
    public DkimOptions Dkim { get; set; } = new();

    /// <summary>Delivery events and the webhooks they are POSTed to (off unless a webhook is configured; see EventsOptions.cs, docs/EVENTS.md).</summary>
    public EventsOptions Events { get; set; } = new();
    /// <summary>A fleet of relays sharing limits, actions, suppression and idempotency keys through Redis (off unless cluster.redis is set; see ClusterOptions.cs).</summary>
    public ClusterOptions Cluster { get; set; } = new();

    /// <summary>The suppression list: automatic additions, the RCPT check, queued mail (see Traffic/Suppression/SuppressionOptions.cs).</summary>
    public NativeRelay.Traffic.Suppression.SuppressionOptions Suppression { get; set; } = new();

    /// <summary>Run as this user once the listeners are bound (the relay must be started as root). Default: stay as started.</summary>
    public string? User { get; set; }
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
    /// <summary>
    /// A connection that has sent no command at all this long after its greeting is closed (421):
    /// the cheap defence against connect-and-wait clients (scanners, slow botnets). Real senders
    /// say EHLO within a second.
    /// </summary>
    public int IdleBeforeCommandSeconds { get; set; } = 60;
    /// <summary>
    /// Postscreen's pregreet test, on plain SMTP listeners for clients outside relayNetworks: the
    /// greeting waits this long, and a client that talks before it is refused (554) and dropped.
    /// 0 (the default) greets at once.
    /// </summary>
    public int GreetingDelaySeconds { get; set; }
    /// <summary>RFC 5321 4.5.3.2.6: the server waits at least 10 minutes after the data terminator... and between data blocks.</summary>
    public int DataTimeoutSeconds { get; set; } = 600;
    /// <summary>Commands in one session before 421 and disconnect.</summary>
    public int MaxCommands { get; set; } = 100_000;
    /// <summary>Longest time from MAIL to the end of the message data.</summary>
    public int TransactionTimeoutSeconds { get; set; } = 3600;
    /// <summary>Longest line of message data, CRLF excluded (RFC 5322 2.1.1: 998).</summary>
    public int MaxLineLength { get; set; } = 998;
    /// <summary>Failed AUTH attempts in one session before 421 and disconnect.</summary>
    public int MaxAuthFailures { get; set; } = 3;
    /// <summary>The n-th failed AUTH of a session is answered after n times this delay.</summary>
    public double AuthFailureDelaySeconds { get; set; } = 2;
}

/// <summary>One listener of <see cref="RelayOptions.Listeners"/>.</summary>
public sealed class ListenerOptions
{
    /// <summary>IP:PORT.</summary>
    public string Address { get; set; } = "";
    /// <summary>"smtp" (MTA, STARTTLS offered), "submission" (RFC 6409, AUTH required), "implicit-tls" (submission over TLS from the first byte, RFC 8314).</summary>
    public string Kind { get; set; } = "smtp";
    /// <summary>This listener's mail authentication mode ("off", "annotate", "enforce"); default: inboundAuth.mode for "smtp" listeners, off for the others.</summary>
    public string? InboundAuth { get; set; }
}

/// <summary>The server certificate (PEM files), reloaded on SIGHUP or when the files change.</summary>
public sealed class TlsOptions
{
    /// <summary>PEM file with the certificate, intermediates after it.</summary>
    public string? Certificate { get; set; }
    /// <summary>PEM file with the private key (PKCS#8, RSA or EC).</summary>
    public string? Key { get; set; }
}

/// <summary>How queued mail is moved on.</summary>
public sealed class DeliveryOptions
{
    /// <summary>Delivery loops; 0 means one per core.</summary>
    public int Loops { get; set; }
    /// <summary>
    /// Open connections to one destination at most. 32, KumoMTA's default egress connection
    /// limit, rather than Postfix's 20: one transaction per connection is two round trips with
    /// DATA, and a relay taking mail from 50 reused sessions on 2 cores fell behind its intake at
    /// 20 (e2e 5,013 against 5,837 msg/s at 32, perf/RESULTS.md). Still a modest load on a
    /// receiving MTA; lower it per route for a fragile one.
    /// </summary>
    public int ConnectionsPerDestination { get; set; } = 32;
    /// <summary>
    /// Slow start (as Postfix's initial_destination_concurrency): a destination begins with this
    /// many connections at most and gains one per successful delivery, up to the limit above.
    /// </summary>
    public int InitialConnectionsPerDestination { get; set; } = 5;
    public int MessagesPerConnection { get; set; } = 1000;
    /// <summary>
    /// Messages being attempted at once, at most (as Postfix's qmgr_message_active_limit): each
    /// costs its envelope and recipient states in memory; the rest wait in the spool index.
    /// </summary>
    public int ActiveLimit { get; set; } = 20_000;
    /// <summary>
    /// Inflow control (as Postfix's in_flow_delay): while more new messages than this wait for the
    /// end of their first delivery attempt, a receiver pauses before taking the next one. 256: the
    /// bodies a destination keeps in memory, beyond which queued mail is read back from the spool.
    /// </summary>
    public int InFlowBacklog { get; set; } = 256;
    /// <summary>The longest such pause per message, then the message is taken anyway; 0 turns inflow control off.</summary>
    public double InFlowDelaySeconds { get; set; } = 1;
    public int IdleConnectionSeconds { get; set; } = 10;
    /// <summary>Delay before the first retry of a deferred message; later retries back off exponentially.</summary>
    public int RetryInitialSeconds { get; set; } = 60;
    public int RetryMaxSeconds { get; set; } = 3600;
    /// <summary>A message not delivered within this time fails (RFC 5321 4.5.4.1 suggests 4-5 days).</summary>
    public double MaxLifetimeHours { get; set; } = 120;
    public int ConnectTimeoutSeconds { get; set; } = 30;
    /// <summary>Applies to every reply from the next hop; RFC 5321 4.5.3.2 gives 2-10 minutes per stage.</summary>
    public int CommandTimeoutSeconds { get; set; } = 300;
    /// <summary>STARTTLS to next hops: none, opportunistic (when offered), required, or verify (a trusted certificate naming the MX host); routes may override.</summary>
    public string TlsPolicy { get; set; } = "opportunistic";
    /// <summary>Messages per second to one destination at most; 0: no rate limit (routes may override).</summary>
    public double MaxMessagesPerSecond { get; set; }
    /// <summary>The JSON delivery log: a file (default: delivery.log in the spool directory), "-" for standard output, "none" for off.</summary>
    public string? LogFile { get; set; }
}

/// <summary>FasterLog sizing. The defaults suit a small edge relay; a bulk gateway may raise them.</summary>
public sealed class SpoolOptions
{
    /// <summary>
    /// log2 of the FasterLog page size; a message larger than a quarter page is split into chunk
    /// records. 1 MiB: a 100 KiB message stays one record (256 KiB pages split it, and relayed
    /// 100 KiB mail 20 % slower), while the pages FasterLog allocates and zeroes when it opens
    /// stay cheap for start-up (2 MiB pages cost tens of ms on a loaded machine). Fixed per spool
    /// (SpoolFormat). Measured in perf/RESULTS.md.
    /// </summary>
    public int PageSizeBits { get; set; } = 20;
    /// <summary>log2 of the in-memory part of the log (a ring of pages).</summary>
    public int MemorySizeBits { get; set; } = 24;
    /// <summary>log2 of one log file's size; space is reclaimed a whole file at a time.</summary>
    public int SegmentSizeBits { get; set; } = 28;
    /// <summary>
    /// Free space the spool keeps on its disk: a new message is refused (452 4.3.1) when taking it
    /// would leave less, so the status records of mail already queued still fit and delivery goes on.
    /// </summary>
    public long MinFreeBytes { get; set; } = 64L * 1024 * 1024;
    /// <summary>
    /// Write the log O_DIRECT | O_DSYNC into blocks prepared ahead of its tail (LogFileDevice):
    /// a group commit is then one data write and one cache flush. False: FASTER's own managed
    /// device (O_SYNC through the page cache), for a file system where O_DIRECT misbehaves.
    /// </summary>
    public bool DirectWrites { get; set; } = true;
}
