using System.Text.Json;
using NativeRelay.Config;
using NativeRelay.Hosting;
using NativeRelay.Telemetry;

namespace NativeRelay.Tests.Unit;

/// <summary>SIGHUP's decisions: what changed between two configurations, and what needs a restart.</summary>
public sealed class ReloadPlanTests
{
    private static RelayOptions Options(Action<RelayOptions>? change = null)
    {
        var o = new RelayOptions { Hostname = "relay.test", Spool = "/tmp/spool-a" };
        change?.Invoke(o);
        return o;
    }

    private static RelaySettings Settings(Action<RelayOptions>? change = null) => RelaySettings.Validate(Options(change));

    [Fact]
    public void Identical_configurations_have_no_differences()
    {
        Assert.Empty(ConfigDiff.Compare(Options(), Options()));
    }

    [Fact]
    public void Differences_are_named_by_their_option_paths()
    {
        var changed = ConfigDiff.Compare(Options(), Options(o =>
        {
            o.AcceptedDomains = ["new.test"];
            o.Limits.MaxRecipients = 5;
            o.Delivery.RetryInitialSeconds = 10;
            o.Routing.Routes["partner.test"] = new RouteOptions { Hosts = ["192.0.2.1:25"] };
            o.Log.Format = "json";
        }));

        Assert.Equal(
            new[] { "acceptedDomains", "delivery.retryInitialSeconds", "limits.maxRecipients", "log.format", "routing.routes.partner.test" }.Order(),
            changed.Order());
    }

    [Theory]
    [InlineData("listen", true)]
    [InlineData("listeners", true)]
    [InlineData("spool", true)]
    [InlineData("spoolTuning.pageSizeBits", true)]
    [InlineData("delivery.loops", true)]
    [InlineData("delivery.logFile", true)]
    [InlineData("metrics.listen", true)]
    [InlineData("limits.maxConnections", true)]
    [InlineData("hostname", true)]
    [InlineData("user", true)]
    [InlineData("cluster", true)]
    [InlineData("cluster.redis", true)]
    [InlineData("cluster.node", true)]
    [InlineData("cluster.leaseSeconds", true)]
    [InlineData("events", true)]
    [InlineData("events.webhooks", true)]
    [InlineData("relayNetworks", false)]
    [InlineData("limits.maxRecipients", false)]
    [InlineData("limits.maxConnectionsPerIpX", false)]
    [InlineData("delivery.tlsPolicy", false)]
    [InlineData("routing.routes.example.com", false)]
    [InlineData("localDomains", false)]
    [InlineData("log.level", false)]
    [InlineData("shutdown.drainSeconds", false)]
    [InlineData("tls.certificate", false)]
    public void Only_what_is_fixed_at_start_needs_a_restart(string option, bool restart)
    {
        Assert.Equal(restart, ConfigDiff.NeedsRestart(option));
    }

    [Fact]
    public void A_plan_applies_live_options_and_keeps_restart_only_ones()
    {
        var started = Settings();
        var next = Settings(o =>
        {
            o.Listen = ["127.0.0.1:2600"];
            o.Spool = "/tmp/spool-b";
            o.Hostname = "other.test";
            o.Delivery.Loops = 3;
            o.RelayTo = "192.0.2.7:25";
            o.RelayNetworks = ["10.0.0.0/8"];
            o.Log.Level = "debug";
            o.Shutdown.DrainSeconds = 5;
        });

        var plan = ReloadPlan.Create(started, started, next);

        Assert.Equal(new[] { "delivery.loops", "hostname", "listen", "spool" }, plan.NeedsRestart.Order());
        Assert.Equal(new[] { "log.level", "relayNetworks", "relayTo", "shutdown.drainSeconds" }, plan.Changed.Order());
        // Kept from the start:
        Assert.Equal(started.Listen, plan.Settings.Listen);
        Assert.Equal(started.SpoolDirectory, plan.Settings.SpoolDirectory);
        Assert.Equal("relay.test", plan.Settings.Hostname);
        // Taken from the new file:
        Assert.Equal("192.0.2.7", plan.Settings.RelayTo!.Host);
        Assert.Single(plan.Settings.RelayNetworks);
        Assert.Equal(LogLevel.Debug, plan.Settings.Lifecycle.LogLevel);
        Assert.Equal(5, plan.Settings.Lifecycle.DrainSeconds);
    }

    [Fact]
    public void Live_changes_are_compared_with_what_runs_and_restart_ones_with_the_start()
    {
        var started = Settings();
        var running = Settings(o => { o.AcceptedDomains = ["a.test"]; o.Listen = ["127.0.0.1:2600"]; });
        var next = Settings(o => { o.AcceptedDomains = ["a.test"]; o.Listen = ["127.0.0.1:2600"]; });

        var plan = ReloadPlan.Create(started, running, next);

        Assert.Empty(plan.Changed); // acceptedDomains is what already runs
        Assert.Equal(["listen"], plan.NeedsRestart); // still not what the sockets are bound to
    }

    [Fact]
    public void The_cluster_section_needs_a_restart_and_the_node_keeps_its_start_settings()
    {
        var started = Settings(o => { o.Cluster.Redis = "127.0.0.1:6379"; o.Cluster.Node = "n1"; });
        var next = Settings(o => { o.Cluster.Redis = "127.0.0.1:6380"; o.Cluster.Node = "n2"; o.Cluster.LeaseSeconds = 10; });

        var plan = ReloadPlan.Create(started, started, next);

        Assert.Equal(["cluster.leaseSeconds", "cluster.node", "cluster.redis"], plan.NeedsRestart.Order());
        Assert.Empty(plan.Changed);
        Assert.Equal("n1", plan.Settings.Cluster!.Node);
        Assert.Equal("127.0.0.1:6379", plan.Settings.Cluster.Redis);
    }

    [Fact]
    public void The_events_section_needs_a_restart_and_the_running_events_settings_are_kept()
    {
        // Webhooks added by a reload: nothing starts sending, so the settings must not say so
        // (StartupChecks would also refuse the reload without OpenSSL for a feature not running).
        var started = Settings();
        var added = ReloadPlan.Create(started, started, Settings(o => o.Events.Webhooks.Add(new WebhookOptions { Url = "http://127.0.0.1:9/hook", SecretFile = "/etc/nativerelay/hook-secret" })));

        Assert.Contains(added.NeedsRestart, p => p.StartsWith("events", StringComparison.Ordinal));
        Assert.DoesNotContain(added.Changed, p => p.StartsWith("events", StringComparison.Ordinal));
        Assert.False(added.Settings.Events.Enabled);
        Assert.Same(started.Events, added.Settings.Events);

        // Webhooks removed by a reload: the running ones keep sending until a restart.
        var withHook = Settings(o => o.Events.Webhooks.Add(new WebhookOptions { Url = "http://127.0.0.1:9/hook", SecretFile = "/etc/nativerelay/hook-secret" }));
        var removed = ReloadPlan.Create(withHook, withHook, Settings());

        Assert.Contains(removed.NeedsRestart, p => p.StartsWith("events", StringComparison.Ordinal));
        Assert.True(removed.Settings.Events.Enabled);
        Assert.Same(withHook.Events, removed.Settings.Events);
    }

    [Fact]
    public void The_user_stays_the_one_the_relay_started_as()
    {
        var plan = ReloadPlan.Create(Settings(o => o.User = "nobody"), Settings(o => o.User = "nobody"), Settings(o => o.User = "mail"));

        Assert.Equal("nobody", plan.Settings.Lifecycle.User);
        Assert.Equal(["user"], plan.NeedsRestart);
    }

    [Theory]
    [InlineData("""{ "log": { "level": "loud" } }""", "log.level")]
    [InlineData("""{ "log": { "format": "xml" } }""", "log.format")]
    [InlineData("""{ "shutdown": { "drainSeconds": -1 } }""", "shutdown.drainSeconds")]
    [InlineData("""{ "user": "no body" }""", "user")]
    public void Lifecycle_options_are_validated(string json, string option)
    {
        var options = JsonSerializer.Deserialize(json, RelayOptionsJsonContext.Default.RelayOptions)!;
        var e = Assert.Throws<ConfigException>(() => RelaySettings.Validate(options));
        Assert.StartsWith(option, e.Message);
    }

    [Fact]
    public void Json_log_lines_are_one_object_each_with_time_level_and_message()
    {
        var output = new StringWriter();
        using (var log = new Log(output, LogLevel.Info, LogFormat.Json))
        {
            log.Info("a \"quoted\" line\twith a tab");
            log.Debug("not written");
            log.Configure(LogLevel.Debug, LogFormat.Text);
            log.Debug("now in text");
        }

        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        using var doc = JsonDocument.Parse(lines[0]);
        Assert.Equal("info", doc.RootElement.GetProperty("level").GetString());
        Assert.Equal("a \"quoted\" line\twith a tab", doc.RootElement.GetProperty("message").GetString());
        Assert.True(DateTime.TryParse(doc.RootElement.GetProperty("time").GetString(), out _));
        Assert.EndsWith(" debug now in text", lines[1]);
    }
}
