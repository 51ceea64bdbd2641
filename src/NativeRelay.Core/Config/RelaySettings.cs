using System.Net;
using System.Text.Json;

namespace NativeRelay.Config;

/// <summary>
/// The validated configuration the relay runs on. Built once from <see cref="RelayOptions"/> (file
/// and flags merged); every value here has been checked, so the stages never re-validate.
/// </summary>
public sealed record RelaySettings
{
    public required string Hostname { get; init; }
    public required IReadOnlyList<IPEndPoint> Listen { get; init; }
    public required string SpoolDirectory { get; init; }
    public required NextHop? RelayTo { get; init; }
    public required IReadOnlyList<IPNetwork> RelayNetworks { get; init; }
    public required LimitsOptions Limits { get; init; }
    public required DeliveryOptions Delivery { get; init; }
    public required SpoolOptions SpoolTuning { get; init; }

    /// <summary>Every listener: those of <c>listen</c> (kind smtp), then those of <c>listeners</c>.</summary>
    public IReadOnlyList<NativeRelay.Net.ListenerSettings> Listeners { get; init; } = [];

    /// <summary>Next hops (DNS, remote port, static routes), TLS policy to them, bounces, the delivery log.</summary>
    public NativeRelay.Routing.RoutingSettings Routing { get; init; } = NativeRelay.Routing.RoutingSettings.Default;
    /// <summary>Null when no certificate is configured (no STARTTLS, no implicit TLS).</summary>
    public NativeRelay.Net.TlsSettings? Tls { get; init; }
    public string? UsersFile { get; init; }
    public bool AllowPlaintextAuth { get; init; }
    /// <summary>Lower-case; ".example.com" entries match subdomains.</summary>
    public IReadOnlyList<string> AcceptedDomains { get; init; } = [];
    public IReadOnlyList<string> LocalRecipients { get; init; } = [];
    public string? LocalRecipientsFile { get; init; }
    public int ReloadCheckSeconds { get; init; } = 30;
    /// <summary>Local domains (Maildir/LMTP); empty when none. Aliases files are loaded by LocalDeliveryAgent.Create.</summary>
    public NativeRelay.Local.LocalDeliverySettings LocalDelivery { get; init; } = NativeRelay.Local.LocalDeliverySettings.Empty;
    /// <summary>Null when the metrics endpoint is off.</summary>
    public NativeRelay.Telemetry.MetricsSettings? Metrics { get; init; }
    /// <summary>The HTTP API (injection, unsubscribe); null when http.listen is not set.</summary>
    public NativeRelay.Api.HttpSettings? Http { get; init; }
    /// <summary>Log level and format, SIGTERM drain time, the user to run as.</summary>
    public LifecycleSettings Lifecycle { get; init; } = LifecycleSettings.Default;
    /// <summary>Mail authentication of inbound mail (inboundAuth); null only for settings built by hand.</summary>
    public InboundAuthSettings? InboundAuth { get; init; }
    /// <summary>DKIM signing keys (files named, loaded by the receiving side) and verification limits.</summary>
    public NativeRelay.MailAuth.Dkim.DkimSettings Dkim { get; init; } = NativeRelay.MailAuth.Dkim.DkimSettings.Off;

    /// <summary>The event journal and its webhooks (off: no webhook).</summary>
    public NativeRelay.Events.EventsSettings Events { get; init; } = NativeRelay.Events.EventsSettings.Off;
    /// <summary>Egress sources, pools, pool rules and shaping rules (the traffic section and its shaping file).</summary>
    public NativeRelay.Traffic.TrafficSettings Traffic { get; init; } = NativeRelay.Traffic.TrafficSettings.Default;
    /// <summary>The options this was validated from (file and flags merged); null when built by hand. SIGHUP compares them.</summary>
    public RelayOptions? Options { get; init; }

    /// <summary>The fleet this relay is a node of (null: a relay on its own).</summary>
    public NativeRelay.Cluster.ClusterSettings? Cluster { get; init; }

    /// <summary>How failed and deferred replies are classified: <c>bounces.classRules</c>, then the shipped rules.</summary>
    public NativeRelay.Traffic.Bounces.BounceClassifier BounceClasses { get; init; } = NativeRelay.Traffic.Bounces.BounceClassifier.Default;

    /// <summary>The suppression list's options (the list itself is opened by the host).</summary>
    public NativeRelay.Traffic.Suppression.SuppressionSettings Suppression { get; init; } = NativeRelay.Traffic.Suppression.SuppressionSettings.Default;

    /// <summary>Reads a configuration file. Any problem becomes a one-line <see cref="ConfigException"/>.</summary>
    public static RelayOptions LoadFile(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"cannot read config file {path}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
        return ParseText(text, path);
    }

    /// <summary>Reads the text of a configuration file (<paramref name="path"/> names it in errors); the fuzz harness starts here.</summary>
    internal static RelayOptions ParseText(string text, string path)
    {
        try
        {
            return JsonSerializer.Deserialize(text, RelayOptionsJsonContext.Default.RelayOptions)
                   ?? throw new ConfigException($"config file {path} is empty (null)");
        }
        catch (JsonException e)
        {
            throw new ConfigException($"config file {path}: {OneLine(e.Message)}");
        }
    }

    public static RelaySettings Validate(RelayOptions o)
    {
        var listen = new List<IPEndPoint>();
        foreach (var text in o.Listen)
            listen.Add(ParseEndPoint(text, "listen"));
        if (listen.Count == 0 && o.Listeners.Count == 0)
            throw new ConfigException("listen: at least one address is needed");
        var receiving = NativeRelay.Net.ReceivingSettings.Validate(o, listen);

        var networks = new List<IPNetwork>();
        foreach (var text in o.RelayNetworks)
        {
            if (!IPNetwork.TryParse(text, out var network))
                throw new ConfigException($"relayNetworks: '{text}' is not a CIDR network (e.g. 192.0.2.0/24)");
            networks.Add(network);
        }

        var hostname = string.IsNullOrWhiteSpace(o.Hostname) ? DefaultHostname() : o.Hostname.Trim();
        if (!IsValidHostname(hostname))
            throw new ConfigException($"hostname: '{hostname}' is not a valid host name");

        if (string.IsNullOrWhiteSpace(o.Spool))
            throw new ConfigException("spool: a directory is needed");

        var l = o.Limits;
        Positive(l.MaxMessageSize, "limits.maxMessageSize");
        if (l.MaxMessageSize > 1L << 30)
            throw new ConfigException("limits.maxMessageSize: at most 1 GiB");
        Positive(l.MaxRecipients, "limits.maxRecipients");
        Positive(l.MaxConnections, "limits.maxConnections");
        Positive(l.MaxConnectionsPerIp, "limits.maxConnectionsPerIp");
        Positive(l.MaxErrors, "limits.maxErrors");
        Positive(l.MaxReceivedHeaders, "limits.maxReceivedHeaders");
        Positive(l.CommandTimeoutSeconds, "limits.commandTimeoutSeconds");
        Positive(l.DataTimeoutSeconds, "limits.dataTimeoutSeconds");
        Positive(l.IdleBeforeCommandSeconds, "limits.idleBeforeCommandSeconds");
        if (l.GreetingDelaySeconds is < 0 or > 60)
            throw new ConfigException("limits.greetingDelaySeconds: 0 (off) to 60");
        Positive(l.MaxCommands, "limits.maxCommands");
        Positive(l.TransactionTimeoutSeconds, "limits.transactionTimeoutSeconds");
        if (l.MaxLineLength is < 78 or > 65536)
            throw new ConfigException("limits.maxLineLength: 78 to 65536 (RFC 5322 2.1.1 says 998)");
        Positive(l.MaxAuthFailures, "limits.maxAuthFailures");
        if (!(l.AuthFailureDelaySeconds >= 0 && l.AuthFailureDelaySeconds <= 60))
            throw new ConfigException("limits.authFailureDelaySeconds: 0 to 60");

        var d = o.Delivery;
        if (d.Loops < 0 || d.Loops > 256)
            throw new ConfigException("delivery.loops: 0 (one per core) to 256");
        Positive(d.ConnectionsPerDestination, "delivery.connectionsPerDestination");
        Positive(d.InitialConnectionsPerDestination, "delivery.initialConnectionsPerDestination");
        Positive(d.MessagesPerConnection, "delivery.messagesPerConnection");
        Positive(d.ActiveLimit, "delivery.activeLimit");
        Positive(d.InFlowBacklog, "delivery.inFlowBacklog");
        if (!(d.InFlowDelaySeconds >= 0 && d.InFlowDelaySeconds <= 60))
            throw new ConfigException("delivery.inFlowDelaySeconds: 0 (off) to 60");
        Positive(d.IdleConnectionSeconds, "delivery.idleConnectionSeconds");
        Positive(d.RetryInitialSeconds, "delivery.retryInitialSeconds");
        Positive(d.RetryMaxSeconds, "delivery.retryMaxSeconds");
        if (d.RetryMaxSeconds < d.RetryInitialSeconds)
            throw new ConfigException("delivery.retryMaxSeconds must not be below delivery.retryInitialSeconds");
        if (!(d.MaxLifetimeHours > 0))
            throw new ConfigException("delivery.maxLifetimeHours must be positive");
        Positive(d.ConnectTimeoutSeconds, "delivery.connectTimeoutSeconds");
        Positive(d.CommandTimeoutSeconds, "delivery.commandTimeoutSeconds");

        var s = o.SpoolTuning;
        if (s.PageSizeBits is < 16 or > 28)
            throw new ConfigException("spoolTuning.pageSizeBits: 16 to 28");
        if (s.MemorySizeBits < s.PageSizeBits + 1 || s.MemorySizeBits > 34)
            throw new ConfigException("spoolTuning.memorySizeBits: at least pageSizeBits + 1, at most 34");
        if (s.SegmentSizeBits < s.PageSizeBits || s.SegmentSizeBits > 36)
            throw new ConfigException("spoolTuning.segmentSizeBits: at least pageSizeBits, at most 36");
        if (s.MinFreeBytes < 0)
            throw new ConfigException("spoolTuning.minFreeBytes must not be negative");
        // A message's head lists the address of each of its chunks (half a page each); the list must fit in the head's page.
        if (l.MaxMessageSize / ((1L << s.PageSizeBits) / 2 - 64) * 8 > (1L << s.PageSizeBits) / 4)
            throw new ConfigException($"limits.maxMessageSize: {l.MaxMessageSize} bytes is too large for spoolTuning.pageSizeBits {s.PageSizeBits} (raise pageSizeBits)");

        return new RelaySettings
        {
            Hostname = hostname,
            Listen = listen,
            SpoolDirectory = Path.GetFullPath(o.Spool),
            RelayTo = o.RelayTo is null ? null : NextHop.Parse(o.RelayTo, "relayTo"),
            RelayNetworks = networks,
            Limits = l,
            Delivery = d,
            SpoolTuning = s,
            Routing = NativeRelay.Routing.RoutingSettings.Validate(o, Path.GetFullPath(o.Spool)),
            Listeners = receiving.Listeners,
            Tls = receiving.Tls,
            UsersFile = receiving.UsersFile,
            AllowPlaintextAuth = o.AllowPlaintextAuth,
            AcceptedDomains = receiving.AcceptedDomains,
            LocalRecipients = receiving.LocalRecipients,
            LocalRecipientsFile = receiving.LocalRecipientsFile,
            ReloadCheckSeconds = receiving.ReloadCheckSeconds,
            LocalDelivery = NativeRelay.Local.LocalDeliverySettings.Validate(o.LocalDomains),
            Metrics = NativeRelay.Telemetry.MetricsSettings.Validate(o.Metrics),
            Http = NativeRelay.Api.HttpSettings.Validate(o.Http, Path.GetFullPath(o.Spool), receiving.Tls is not null),
            Lifecycle = LifecycleSettings.Validate(o),
            InboundAuth = InboundAuthSettings.Validate(o, hostname),
            Dkim = NativeRelay.MailAuth.Dkim.DkimSettings.Validate(o.Dkim),
            Events = NativeRelay.Events.EventsSettings.Validate(o.Events),
            BounceClasses = NativeRelay.Traffic.Bounces.BounceClassifier.Create(o.Bounces.ClassRules),
            Suppression = NativeRelay.Traffic.Suppression.SuppressionSettings.Validate(o.Suppression),
            Traffic = NativeRelay.Traffic.TrafficSettings.Validate(o),
            Cluster = NativeRelay.Cluster.ClusterSettings.Validate(o.Cluster, hostname),
            Options = o,
        };
    }

    public static IPEndPoint ParseEndPoint(string text, string what)
    {
        if (IPEndPoint.TryParse(text, out var ep) && ep.Port != 0 && HasExplicitPort(text))
            return ep;
        throw new ConfigException($"{what}: '{text}' is not IP:PORT (e.g. 127.0.0.1:2525 or [::1]:2525)");
    }

    // IPEndPoint.TryParse accepts a bare address with port 0; a listener needs an explicit port.
    private static bool HasExplicitPort(string text)
    {
        int colon = text.LastIndexOf(':');
        int bracket = text.LastIndexOf(']');
        return colon > 0 && colon > bracket && (bracket >= 0 || text.IndexOf(':') == colon);
    }

    public static bool IsValidHostname(string name)
    {
        if (name.Length is 0 or > 253)
            return false;
        foreach (var label in name.Split('.'))
        {
            if (label.Length is 0 or > 63 || label[0] == '-' || label[^1] == '-')
                return false;
            foreach (char c in label)
                if (!(char.IsAsciiLetterOrDigit(c) || c == '-' || c == '_'))
                    return false;
        }
        return true;
    }

    private static string DefaultHostname()
    {
        try
        {
            var name = Dns.GetHostName();
            return IsValidHostname(name) ? name : "localhost";
        }
        catch (System.Net.Sockets.SocketException)
        {
            return "localhost";
        }
    }

    private static void Positive(long value, string name)
    {
        if (value <= 0)
            throw new ConfigException($"{name} must be positive (got {value})");
    }

    private static string OneLine(string s) => s.ReplaceLineEndings(" ");
}

/// <summary>A configured next hop: a host name or IP literal and a port.</summary>
public sealed record NextHop(string Host, int Port)
{
    public static NextHop Parse(string text, string what)
    {
        if (IPEndPoint.TryParse(text, out var ep) && ep.Port != 0)
            return new NextHop(ep.Address.ToString(), ep.Port);
        int colon = text.LastIndexOf(':');
        if (colon > 0 && int.TryParse(text.AsSpan(colon + 1), out int port) && port is > 0 and < 65536
            && RelaySettings.IsValidHostname(text[..colon]))
            return new NextHop(text[..colon], port);
        throw new ConfigException($"{what}: '{text}' is not HOST:PORT (e.g. smtp.example.com:25 or 127.0.0.1:2526)");
    }

    public override string ToString() => Host.Contains(':') ? $"[{Host}]:{Port}" : $"{Host}:{Port}";
}
