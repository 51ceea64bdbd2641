using System.CommandLine;
using System.Runtime.InteropServices;
using NativeRelay.Config;
using NativeRelay.Hosting;
using NativeRelay.Telemetry;

namespace NativeRelay.Cli;

/// <summary><c>nativerelay serve</c>: runs the relay until SIGTERM or SIGINT.</summary>
internal static class ServeCommand
{
    private static readonly RelayOptions Defaults = new();

    private static readonly Option<string> Config = Flags.Text("--config", "FILE",
        "read the configuration from FILE (docs/CONFIG.md); the other flags override it");

    // Every flag but --config, --local-domain and --maildir-root: what it sets in the options read
    // from the file (or the defaults), applied in this order when the flag is given. A new flag is
    // one entry here.
    private static readonly FlagSetter<RelayOptions>[] Settings =
    [
        Flag(Flags.Repeatable("--listen", "IP:PORT", "accept SMTP on this address", shown: string.Join(", ", Defaults.Listen)),
            (o, v) => o.Listen = [.. v]),
        Flag(Flags.Text("--spool", "DIR", "the spool directory (the queue and its state)", Defaults.Spool),
            (o, v) => o.Spool = v),
        Flag(Flags.Text("--hostname", "NAME", "the name in the greeting, EHLO and Received headers", "the machine's host name"),
            (o, v) => o.Hostname = v),
        Flag(Flags.Text("--relay-to", "HOST:PORT", "send every non-local message to this next hop instead of its MX hosts", "MX lookup"),
            (o, v) => o.RelayTo = v),
        Flag(Flags.Repeatable("--dns", "IP:PORT", "DNS server for MX lookups", shown: "the servers of /etc/resolv.conf"),
            (o, v) => o.Routing.Dns = [.. v]),
        Flag(Flags.Value("--remote-port", "N", "port of the next hops found by MX lookup",
                (flag, text) => FlagValues.Int(flag, text, 1, 65535), Defaults.Routing.RemotePort),
            (o, v) => o.Routing.RemotePort = v),
        Flag(Flags.Text("--tls-cert", "PEM", "certificate chain for STARTTLS and implicit TLS (with --tls-key)", "no TLS"),
            (o, v) => o.Tls.Certificate = v),
        Flag(Flags.Text("--tls-key", "PEM", "private key of --tls-cert"),
            (o, v) => o.Tls.Key = v),
        Flag(Flags.Text("--tls-policy", "none|opportunistic|required|verify",
                "STARTTLS to next hops: never, when offered, always, or always with a trusted certificate naming the MX host (routes may override)",
                Defaults.Delivery.TlsPolicy).Completing("none", "opportunistic", "required", "verify"),
            (o, v) => o.Delivery.TlsPolicy = v),
        Flag(Flags.Text("--ca-file", "PEM", "extra trust anchors for --tls-policy verify and MTA-STS policy fetches, beside the system store", "the system store only"),
            (o, v) => o.OutboundTls.CaFile = v),
        Flag(Flags.Switch("--dnssec", "the --dns servers validate DNSSEC: trust their AD bit (turns DANE on)"),
            (o, v) => o.Routing.Dnssec = v),
        Flag(Flags.Switch("--no-dane", "do not apply DANE (TLSA) even with --dnssec"),
            (o, v) => o.OutboundTls.Dane = !v),
        Flag(Flags.Switch("--no-mta-sts", "do not apply MTA-STS policies (RFC 8461) of recipient domains"),
            (o, v) => o.OutboundTls.MtaSts = !v),
        Flag(Flags.Repeatable("--listen-tls", "IP:PORT", "accept SMTP over implicit TLS (port 465 style) on this address"),
            (o, v) => o.Listeners.AddRange(v.Select(a => new ListenerOptions { Address = a, Kind = "implicit-tls" }))),
        Flag(Flags.Repeatable("--submission", "IP:PORT", "accept message submission (AUTH required) on this address"),
            (o, v) => o.Listeners.AddRange(v.Select(a => new ListenerOptions { Address = a, Kind = "submission" }))),
        Flag(Flags.Text("--users", "FILE", "users and password hashes for AUTH (lines made by 'nativerelay passwd')", "no AUTH"),
            (o, v) => o.UsersFile = v),
        Flag(Flags.Text("--metrics", "IP:PORT", "serve Prometheus metrics at http://IP:PORT/metrics", "off"),
            (o, v) => o.Metrics.Listen = v),
        Flag(Flags.Text("--http", "IP:PORT", "serve the HTTP API (POST /api/v1/messages, one-click unsubscribe) on this address (needs --tokens)", "off"),
            (o, v) => o.Http.Listen = v),
        Flag(Flags.Text("--tokens", "FILE", "the API's bearer tokens (lines made by 'nativerelay token add')"),
            (o, v) => o.Http.TokensFile = v),
        Flag(Flags.Switch("--http-tls", "serve the HTTP API over TLS with --tls-cert/--tls-key"),
            (o, v) => o.Http.Tls = v),
        Flag(Flags.Text("--log-format", "text|json", "one human-readable line per event, or one JSON object per line", Defaults.Log.Format).Completing("text", "json"),
            (o, v) => o.Log.Format = v),
        Flag(Flags.Text("--log-level", "LEVEL", "the least severe line written: debug, info, warn or error", Defaults.Log.Level).Completing("debug", "info", "warn", "error"),
            (o, v) => o.Log.Level = v),
        Flag(Flags.Value("--drain-seconds", "N", "on SIGTERM, how long transactions in progress may take to finish",
                (flag, text) => FlagValues.Int(flag, text, 0, int.MaxValue), Defaults.Shutdown.DrainSeconds),
            (o, v) => o.Shutdown.DrainSeconds = v),
        Flag(Flags.Text("--user", "NAME", "run as this user once the ports are bound (start as root)", "stay the user it is started as"),
            (o, v) => o.User = v),
        Flag(Flags.Repeatable("--dkim", "DOMAIN:SELECTOR:KEYFILE", "sign mail whose From: domain is DOMAIN with the PEM key in KEYFILE (two keys for a domain sign twice)",
                shown: "no signing"),
            (o, v) => o.Dkim.Keys.AddRange(v.Select(DkimCommand.ParseKeyFlag))),
        Flag(Flags.Text("--auth-check", "annotate|enforce", "check SPF, DKIM and DMARC of mail from strangers on the plain SMTP listeners: annotate adds Authentication-Results, enforce also refuses DMARC p=reject failures", "off").Completing("annotate", "enforce", "off"),
            (o, v) => o.InboundAuth.Mode = v),
        Flag(Flags.Text("--authserv-id", "NAME", "the name in Authentication-Results headers (RFC 8601)", "the host name"),
            (o, v) => o.InboundAuth.AuthservId = v),
        Flag(Flags.Repeatable("--webhook", "URL", "POST every event (reception, delivery, bounce, ...; docs/EVENTS.md) to URL as signed JSON batches, kept durably until it answers 2xx",
                shown: "no events"),
            (o, v) => o.Events.Webhooks.AddRange(v.Select(url => new WebhookOptions { Url = url }))),
        // After --webhook: the secret goes to every webhook that names no secret file of its own.
        Flag(Flags.Text("--webhook-secret-file", "FILE", "the secret that signs the --webhook POSTs (HMAC-SHA256 in X-NativeRelay-Signature); never give it on the command line"),
            (o, v) =>
            {
                foreach (var w in o.Events.Webhooks)
                    w.SecretFile ??= v;
            }),
        Flag(Flags.Repeatable("--source", "NAME=IP[/EHLO]",
                "an egress source: bind outgoing connections to IP and say EHLO from it; with no pool configured, every source is in the default pool with equal weight",
                static (flag, text) => ParseSource(flag, text), shown: "the system's default address"),
            (o, v) =>
            {
                foreach (var text in v)
                {
                    var (name, source) = ParseSource("--source", text);
                    o.Traffic.Sources[name] = source;
                }
            }),
        Flag(Flags.Text("--redis", "CONNECTION", "join a fleet of relays sharing limits, actions, suppression and idempotency keys through this Redis (a StackExchange.Redis connection string, e.g. 127.0.0.1:6379 or sentinel1:26379,serviceName=mymaster; no password in it)", "no fleet"),
            (o, v) => o.Cluster.Redis = v),
        Flag(Flags.Text("--redis-password-file", "FILE", "the Redis password (first line of FILE); never give it on the command line"),
            (o, v) => o.Cluster.PasswordFile = v),
        Flag(Flags.Text("--node", "NAME", "this relay's name in the fleet (with --redis)", "the host name"),
            (o, v) => o.Cluster.Node = v),
        Flag(Flags.Text("--shaping", "FILE", "the shaping rules file (JSON: limits by site, domain and source; automation; docs/examples/shaping.json)", "none"),
            (o, v) => o.Traffic.Shaping = v),
    ];

    /// <summary>"NAME=IP" or "NAME=IP/EHLO" (an IPv6 address has no '/', so the last one splits).</summary>
    internal static (string Name, SourceOptions Source) ParseSource(string flag, string text)
    {
        int eq = text.IndexOf('=');
        if (eq <= 0 || eq == text.Length - 1)
            throw new ConfigException($"{flag}: '{text}' is not NAME=IP[/EHLO] (e.g. ip2=192.0.2.2/mta2.example.com)");
        string name = text[..eq].Trim();
        string rest = text[(eq + 1)..].Trim();
        int slash = rest.LastIndexOf('/');
        string address = slash < 0 ? rest : rest[..slash];
        string? ehlo = slash < 0 ? null : rest[(slash + 1)..];
        if (!System.Net.IPAddress.TryParse(address, out _))
            throw new ConfigException($"{flag}: '{address}' in '{text}' is not an IPv4 or IPv6 address");
        if (ehlo is not null && !RelaySettings.IsValidHostname(ehlo))
            throw new ConfigException($"{flag}: '{ehlo}' in '{text}' is not a host name");
        return (name, new SourceOptions { Address = address, Ehlo = ehlo });
    }

    private static readonly Option<string[]> LocalDomain = Flags.Repeatable("--local-domain", "DOMAIN",
        "deliver this domain's mail into Maildirs under --maildir-root instead of relaying it", shown: "none");

    private static readonly Option<string> MaildirRoot = Flags.Text("--maildir-root", "DIR",
        "root of the Maildirs of the --local-domain domains: user U of any of them goes to DIR/U/");

    private static FlagSetter<RelayOptions> Flag<T>(Option<T> option, Action<RelayOptions, T> apply) => FlagSetter<RelayOptions>.Of(option, apply);

    public static Command Build()
    {
        var command = new VerbCommand("serve", "Run the relay.",
            """
            Runs until SIGTERM or SIGINT (transactions in progress may finish for --drain-seconds). SIGHUP reads
            the configuration file again and applies these flags over it, as at start; a broken file is refused
            and the running configuration stays. Flags override the file (--config); the defaults shown are
            those without a file.
            """)
        {
            Config,
        };
        FlagSetter<RelayOptions>.AddAll(command, Settings);
        command.Options.Add(LocalDomain);
        command.Options.Add(MaildirRoot);
        command.SetAction((result, _) => RunAsync(result));
        return command;
    }

    private static async Task<int> RunAsync(ParseResult args)
    {
        var settings = BuildSettings(args);
        StartupChecks.Check(settings);
        using var log = new Log(Console.OpenStandardOutput(), settings.Lifecycle.LogLevel, settings.Lifecycle.LogFormat);
        // SIGHUP reads the file and applies the flags again, exactly as at start (and as check-config does).
        var host = new RelayHost(settings, log, reloadSource: () => BuildSettings(args, checkFiles: true));
        var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.TrySetResult(); });
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.TrySetResult(); });

        try
        {
            await host.StartAsync();
        }
        catch (ConfigException)
        {
            await host.DisposeAsync();
            throw;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            log.Dispose();
            await host.DisposeAsync();
            throw new ConfigException($"cannot open the spool {settings.SpoolDirectory}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
        log.Flush();

        await stop.Task;
        // shutdown.drainSeconds of the configuration in force (a reload may have changed it).
        var drain = TimeSpan.FromSeconds(host.Settings.Lifecycle.DrainSeconds);
        log.Info($"stopping: no new connections, finishing transactions in progress (up to {drain.TotalSeconds:0} s)");
        await host.StopAsync(drain);
        log.Flush();
        return 0;
    }

    /// <summary>Defaults, then the config file, then flags (flags win).</summary>
    /// <param name="checkFiles">Also check that the files the configuration names exist, as check-config does (the reload path).</param>
    internal static RelaySettings BuildSettings(ParseResult args, bool checkFiles = false)
    {
        var configFile = args.ValueOrNull(Config);
        var options = configFile is null ? new RelayOptions() : RelaySettings.LoadFile(configFile);
        FlagSetter<RelayOptions>.ApplyAll(args, Settings, options);
        NativeRelay.Local.LocalDeliverySettings.ApplyFlags(options, args.ValueOrNull(LocalDomain), args.ValueOrNull(MaildirRoot));
        var settings = RelaySettings.Validate(options);
        if (checkFiles)
            CheckConfigCommand.CheckFiles(settings);
        return settings;
    }
}
