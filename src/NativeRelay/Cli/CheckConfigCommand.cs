using System.CommandLine;
using System.Text;
using NativeRelay.Config;
using NativeRelay.Local;
using NativeRelay.Net;

namespace NativeRelay.Cli;

/// <summary>
/// <c>nativerelay check-config FILE</c>: reads and validates a configuration exactly as
/// <c>serve --config FILE</c> would (aliases files and the files it names included, but no port
/// is bound and the spool is not opened), then prints what the relay would do. Exit 0 when valid;
/// otherwise one line on standard error and exit 2.
/// </summary>
internal static class CheckConfigCommand
{
    private static readonly Argument<string> File = Flags.Argument("FILE", "the configuration file (JSON, docs/CONFIG.md)", static (_, text) => text);

    public static Command Build()
    {
        var command = new VerbCommand("check-config", "Validate a configuration file and print what the relay would do.",
            """
            Reads FILE exactly as 'serve --config FILE' would (aliases files and the files it names included,
            but no port is bound and the spool is not opened). Exit 0 when valid; otherwise one line on
            standard error and exit 2.
            """)
        {
            File,
        };
        command.SetAction(result => Run(result.GetValue(File)!));
        return command;
    }

    private static int Run(string path)
    {
        var options = RelaySettings.LoadFile(path);
        RelaySettings settings;
        LocalDeliveryAgent local;
        try
        {
            settings = RelaySettings.Validate(options);
            CheckFiles(settings);
            NativeRelay.Hosting.StartupChecks.Check(settings);
            local = LocalDeliveryAgent.Create(settings.LocalDelivery, settings.Hostname,
                TimeSpan.FromSeconds(settings.Delivery.ConnectTimeoutSeconds), TimeSpan.FromSeconds(settings.Delivery.CommandTimeoutSeconds));
        }
        catch (ConfigException e)
        {
            throw new ConfigException($"{path}: {e.Message}");
        }

        Console.Out.Write(Describe(path, settings, local));
        return 0;
    }

    /// <summary>The files the configuration names must exist (their contents are checked by loading them).</summary>
    internal static void CheckFiles(RelaySettings settings)
    {
        // Reading keys, users and tokens needs OpenSSL: without it, one line here rather than an abort.
        NativeRelay.Hosting.StartupChecks.CheckOpenSsl(settings);
        CheckFile(settings.Tls?.CertificatePath, "tls.certificate");
        CheckFile(settings.Tls?.KeyPath, "tls.key");
        CheckFile(settings.UsersFile, "usersFile");
        CheckFile(settings.LocalRecipientsFile, "localRecipientsFile");
        CheckFile(settings.Cluster?.PasswordFile, "cluster.passwordFile");
        CheckFile(settings.Cluster?.CaFile, "cluster.caFile");
        // The tokens file is read, not only found (a malformed line is named here); so is a configured unsubscribe key.
        if (settings.Http is { } http)
        {
            NativeRelay.Api.TokenStore.Load(http.TokensFile);
            if (http.Unsubscribe is { SecretIsGenerated: false } u)
                NativeRelay.Api.UnsubscribeLinks.Load(u);
        }
        // DKIM keys are read, not only found: a malformed key is named here rather than at start.
        if (settings.Dkim.Signs)
            NativeRelay.MailAuth.Dkim.DkimSigner.Create(settings.Dkim).Dispose();
        // Webhook secrets are read (never printed): a missing or empty one is named here.
        foreach (var w in settings.Events.Webhooks)
            w.ReadSecret();
    }

    private static void CheckFile(string? file, string what)
    {
        if (file is not null && !System.IO.File.Exists(file))
            throw new ConfigException($"{what}: {file} does not exist");
    }

    /// <summary>The cluster section in one line: the connection string redacted, the password only as the file it is read from.</summary>
    internal static string DescribeCluster(NativeRelay.Cluster.ClusterSettings? c) => c is null
        ? "off (no cluster.redis: limits, actions and the suppression list are this relay's own)"
        : $"node {c.Node} of the fleet sharing Redis {NativeRelay.Cluster.RedisConnectionString.Redact(c.Redis)}"
          + (c.PasswordFile is null ? ", no password" : $", password read from {c.PasswordFile}")
          + (c.CaFile is null ? "" : $", Redis's certificate checked against {c.CaFile}")
          + $"; keys {c.KeyPrefix}:*, heartbeat every {c.Heartbeat.TotalSeconds:0}s (gone after {c.NodeExpiry.TotalSeconds:0}s), "
          + $"connection leases {c.Lease.TotalSeconds:0}s, rate tokens in batches of up to {c.RateBatch}, "
          + $"Redis away after {c.Timeout.TotalMilliseconds:0} ms without an answer (then each limit at its share)";

    internal static string Describe(string path, RelaySettings s, LocalDeliveryAgent local)
    {
        var sb = new StringBuilder();
        void Line(string key, string value) => sb.Append(key.PadRight(18)).Append(value).Append('\n');

        sb.Append($"{Path.GetFullPath(path)}: valid\n\n");
        Line("hostname", s.Hostname);
        foreach (var l in s.Listeners.Count > 0 ? s.Listeners : s.Listen.Select(e => new ListenerSettings(e, ListenerKind.Smtp)).ToList())
            Line("listen", $"{l.EndPoint} ({ListenerSettings.KindName(l.Kind)}{(l.Kind == ListenerKind.Smtp ? "" : ", AUTH required")})");
        Line("tls", s.Tls is null ? "off (no certificate: no STARTTLS, no implicit TLS)" : $"certificate {s.Tls.CertificatePath}, key {s.Tls.KeyPath}");
        Line("auth", s.UsersFile is null ? "off (no usersFile)" : $"users from {s.UsersFile}{(s.AllowPlaintextAuth ? ", also without TLS" : ", only under TLS")}");
        Line("http api", s.Http is null ? "off (no http.listen)" : $"{(s.Http.Tls ? "https" : "http")}://{s.Http.Listen}/api/v1/messages, tokens from {s.Http.TokensFile}, at most {s.Http.MaxRecipients} recipients a request"
            + (s.Http.Unsubscribe is { } u ? $", one-click unsubscribe for pools {string.Join(", ", u.Pools)}" : ""));
        Line("relay networks", s.RelayNetworks.Count == 0 ? "none (only authenticated clients may relay)" : string.Join(", ", s.RelayNetworks));
        var accepted = s.AcceptedDomains.Concat(s.LocalDelivery.Domains.Select(d => d.Name)).Distinct().ToList();
        Line("accepted from all", accepted.Count == 0 ? "no domains (mail from outside the relay networks is refused)" : string.Join(", ", accepted));
        if (s.LocalRecipients.Count > 0 || s.LocalRecipientsFile is not null)
            Line("known recipients", $"{s.LocalRecipients.Count} listed{(s.LocalRecipientsFile is null ? "" : $", more in {s.LocalRecipientsFile}")} (others get 550 5.1.1)");

        var routes = s.Routing.Routes.All;
        if (routes.Count == 0)
            Line("routing", $"MX lookup for every domain (port {s.Routing.RemotePort})");
        else
        {
            foreach (var r in routes.OrderBy(r => r.Pattern == "*" ? 1 : 0).ThenBy(r => r.Pattern, StringComparer.Ordinal))
            {
                string to = r.Local ? "local delivery" : r.HasHosts ? string.Join(", ", r.Hosts.Select(h => $"{h.Host}:{h.Port}")) : "MX lookup";
                Line("route", $"{(r.Pattern == "*" ? "everything else" : r.Pattern)} -> {to}");
            }
            if (!routes.Any(r => r.Pattern == "*"))
                Line("route", $"everything else -> MX lookup (port {s.Routing.RemotePort})");
        }
        if (s.LocalDelivery.IsEmpty)
            Line("local domains", "none");
        foreach (var d in s.LocalDelivery.Domains)
        {
            var aliases = local.Resolver.AliasesOf(d);
            string note = d.AliasesFile is null ? "" : $" ({aliases.Count} alias{(aliases.Count == 1 ? "" : "es")})";
            if (d.Transport == LocalTransport.Maildir && !Directory.Exists(d.MaildirRoot))
                note += " (root does not exist yet: made on first delivery)";
            Line("local domain", $"{d.Name} -> {d.Describe()}{note}");
        }

        if (!s.Dkim.Signs)
            Line("dkim", "no keys: nothing is signed");
        foreach (var k in s.Dkim.Keys)
        {
            using var key = NativeRelay.MailAuth.Dkim.DkimSigningKey.Load(k.Domain, k.Selector, k.KeyFile);
            Line("dkim", $"signs {k.Domain}{(k.Subdomains ? " and its subdomains" : "")} with {key.Describe()}");
        }
        if (s.Dkim.Signs)
            Line("dkim signing", $"c={NativeRelay.MailAuth.Dkim.DkimCanonicalizer.Name(s.Dkim.HeaderCanonicalization)}/{NativeRelay.MailAuth.Dkim.DkimCanonicalizer.Name(s.Dkim.BodyCanonicalization)}, "
                + $"key by {string.Join(", then ", s.Dkim.SignBy.Select(b => b.ToString().ToLowerInvariant()))}, h={string.Join(":", s.Dkim.Headers)}"
                + (s.Dkim.ExpirationSeconds > 0 ? $", x= after {s.Dkim.ExpirationSeconds}s" : ""));

        var l2 = s.Limits;
        Line("limits", $"message {l2.MaxMessageSize} bytes, {l2.MaxRecipients} recipients, {l2.MaxConnections} connections ({l2.MaxConnectionsPerIp} per IP), " +
                       $"{l2.MaxErrors} errors, command timeout {l2.CommandTimeoutSeconds}s, data timeout {l2.DataTimeoutSeconds}s");
        var d2 = s.Delivery;
        Line("delivery", $"{(d2.Loops == 0 ? $"{Environment.ProcessorCount} loops (one per core)" : $"{d2.Loops} loops")}, " +
                         $"{d2.InitialConnectionsPerDestination}..{d2.ConnectionsPerDestination} connections per destination, " +
                         $"retry {d2.RetryInitialSeconds}s..{d2.RetryMaxSeconds}s, give up after {d2.MaxLifetimeHours}h");
        if (s.Traffic.IsConfigured)
        {
            foreach (var (key, value) in s.Traffic.Describe())
                Line(key, value);
        }
        else
        {
            Line("traffic", "the system's default source; no shaping file (delivery and route limits); default automation");
        }
        Line("cluster", DescribeCluster(s.Cluster));
        var t = s.SpoolTuning;
        Line("spool", $"{s.SpoolDirectory} (pages {1L << t.PageSizeBits} bytes, memory {1L << t.MemorySizeBits} bytes, files {1L << t.SegmentSizeBits} bytes)");
        if (s.Routing.DeliveryLogPath is { } log)
            Line("delivery log", log == "-" ? "standard output" : log);
        if (!s.Events.Enabled)
            Line("events", "off (no webhook)");
        foreach (var w in s.Events.Webhooks)
        {
            var types = NativeRelay.Events.RelayEventTypes.All.Where(n => NativeRelay.Events.RelayEventTypes.TryParse(n, out var t) && (w.Types & NativeRelay.Events.RelayEventTypes.Bit(t)) != 0).ToList();
            Line("webhook", $"{w.Name}: POST to {w.Url.GetLeftPart(UriPartial.Path)} signed with the secret in {w.SecretFile}; "
                + $"{(types.Count == NativeRelay.Events.RelayEventTypes.All.Count() ? "every type" : string.Join(", ", types))}, "
                + $"{(w.Pools is null ? "every pool" : "pools " + string.Join(", ", w.Pools))}; batches of {w.BatchSize} or {w.BatchDelay.TotalMilliseconds:0} ms, "
                + $"at most {w.MaxBacklog} waiting");
        }
        var bc = s.BounceClasses;
        Line("bounce classes", bc.OperatorRuleCount == 0
            ? $"the {bc.RuleCount} shipped rules"
            : $"{bc.OperatorRuleCount} rule(s) from {s.Options?.Bounces.ClassRules}, then the {bc.RuleCount - bc.OperatorRuleCount} shipped ones");
        var sup = s.Suppression;
        var autoAdd = NativeRelay.Traffic.Bounces.BounceClassNames.All.Where((_, i) => sup.AutoAdd[i]).ToList();
        Line("suppression", !sup.Enabled ? "off (no list is kept)"
            : $"{Path.Combine(s.SpoolDirectory, NativeRelay.Traffic.Suppression.SuppressionList.DirectoryName)}; "
              + (autoAdd.Count == 0 ? "nothing added by itself" : $"hard bounces of {string.Join(", ", autoAdd)} added ({(sup.AutoAddPerPool ? "per pool" : "global")})")
              + $"; RCPT {(sup.RefuseAtRcpt ? "refused with 550 5.7.1" : "accepted")}; queued mail {(sup.BounceQueued ? "bounced" : "sent")}");
        Line("metrics", s.Metrics is null ? "off" : $"http://{s.Metrics.Listen}/metrics{(s.Metrics.IsLoopback ? "" : " (not loopback: reachable from the network)")}, {s.Metrics.MaxDestinations} destinations");
        var life = s.Lifecycle;
        Line("log", $"{(life.LogFormat == NativeRelay.Telemetry.LogFormat.Json ? "json" : "text")} lines from level {NativeRelay.Telemetry.Log.LevelName(life.LogLevel)}");
        Line("shutdown", $"SIGTERM lets transactions in progress finish for up to {life.DrainSeconds}s; SIGHUP reloads this file");
        Line("user", life.User is null ? "stays the user it is started as" : $"{life.User} (after binding the listeners; start as root)");
        return sb.ToString();
    }
}
