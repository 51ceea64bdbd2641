using System.Diagnostics;
using System.Net;
using System.Text;
using NativeRelay.Config;
using NativeRelay.Message;
using NativeRelay.Net;
using NativeRelay.Routing;
using NativeRelay.Smtp;
using NativeRelay.Spool;
using NativeRelay.Telemetry;
using NativeRelay.Traffic;
using NativeRelay.Traffic.Automation;
using NativeRelay.Traffic.Shaping;
using NativeRelay.Traffic.Sites;
using NativeRelay.Traffic.Sources;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// Traffic control's parts without the network: pools and their weights, sites (MX rollup,
/// labels, domains of their own), shaping rules and their precedence, the token buckets, the
/// automation rules (the defaults included: a mailbox-full reply is not a throttle), the action
/// table, the pool rules of the receiving side, the configuration's validation, the pool in the
/// spool's head record, and taking a header field out of a received message.
/// </summary>
public sealed class TrafficTests
{
    private static RelayOptions Options(Action<TrafficOptions>? traffic = null)
    {
        var o = new RelayOptions { Hostname = "relay.test", Listen = ["127.0.0.1:2525"], Spool = "/tmp/unused-spool", RelayTo = "127.0.0.1:2526" };
        traffic?.Invoke(o.Traffic);
        return o;
    }

    private static TrafficSettings Settings(Action<TrafficOptions>? traffic = null) => TrafficSettings.Validate(Options(traffic));

    private static Route MxRoute(string domain, params string[] hosts) =>
        new($"mx:{string.Join(',', hosts)}:25", RouteKind.Smtp, hosts.Select((h, i) => new RouteHost(h, 25, i, [IPAddress.Loopback])).ToList(),
            TlsPolicy.Opportunistic, domain: domain);

    // ---- Pools --------------------------------------------------------------------------------

    [Fact]
    public void A_pool_gives_each_source_exactly_its_weight_interleaved()
    {
        var settings = Settings(t =>
        {
            t.Sources["a"] = new SourceOptions { Address = "127.0.0.2" };
            t.Sources["b"] = new SourceOptions { Address = "127.0.0.3" };
            t.Pools["p"] = new PoolOptions { Sources = new() { ["a"] = 3, ["b"] = 1 } };
        });
        var pool = settings.Pools["p"];
        var picks = Enumerable.Range(0, 10_000).Select(_ => pool.Next().Name).ToList();
        Assert.Equal(7500, picks.Count(p => p == "a"));
        Assert.Equal(2500, picks.Count(p => p == "b"));
        // Smooth: never four a in a row.
        Assert.DoesNotContain("aaaa", string.Concat(picks));

        var schedule = EgressPool.Schedule([(settings.Sources[0], 6), (settings.Sources[1], 4)]);
        Assert.Equal(5, schedule.Length); // 6:4 is 3:2
        Assert.Equal(3, schedule.Count(s => s.Name == "a"));
    }

    [Fact]
    public void Another_source_of_the_pool_is_taken_in_schedule_order_skipping_the_unusable()
    {
        var settings = Settings(t =>
        {
            t.Sources["a"] = new SourceOptions { Address = "127.0.0.2" };
            t.Sources["b"] = new SourceOptions { Address = "127.0.0.3" };
            t.Sources["c"] = new SourceOptions { Address = "127.0.0.4" };
        });
        var pool = settings.DefaultPool; // --source without pools: every source, equal weights
        Assert.Equal(["a", "b", "c"], pool.Members.Select(m => m.Source.Name).OrderBy(n => n));
        Assert.All(pool.Members, m => Assert.Equal(1, m.Weight));
        var a = settings.Sources.Single(s => s.Name == "a");
        for (int i = 0; i < 20; i++)
            Assert.Equal("c", pool.NextOther(a, s => s.Name != "b")!.Name);
        Assert.Null(pool.NextOther(a, _ => false));
        Assert.Null(new EgressPool("one", [(a, 1)]).NextOther(a, _ => true));
    }

    [Fact]
    public void Without_a_traffic_section_every_message_leaves_from_the_system_default_source()
    {
        var settings = Settings();
        Assert.False(settings.IsConfigured);
        Assert.Empty(settings.Sources);
        var only = Assert.Single(settings.DefaultPool.Members);
        Assert.Equal(EgressSource.DefaultName, only.Source.Name);
        Assert.Null(only.Source.Address);
        Assert.Same(settings.DefaultPool, settings.PoolOf(null));
        Assert.Same(settings.DefaultPool, settings.PoolOf("no-such-pool"));
        Assert.Equal(AutomationRule.Defaults, settings.Shaping.Automation);
    }

    [Theory]
    [InlineData("bad name", "127.0.0.2", "is not a source name")]
    [InlineData("x", "not-an-ip", "traffic.sources.x.address")]
    [InlineData("x", "0.0.0.0", "wildcard")]
    [InlineData("x", "127.0.0.2/24", "traffic.sources.x.address")]
    public void A_bad_source_is_a_configuration_error_naming_it(string name, string address, string expected)
    {
        var e = Assert.Throws<ConfigException>(() => Settings(t => t.Sources[name] = new SourceOptions { Address = address }));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Pools_and_the_default_pool_must_name_what_exists()
    {
        var e = Assert.Throws<ConfigException>(() => Settings(t => t.Pools["p"] = new PoolOptions { Sources = new() { ["ghost"] = 1 } }));
        Assert.Contains("traffic.pools.p.sources: no source 'ghost'", e.Message);
        e = Assert.Throws<ConfigException>(() => Settings(t =>
        {
            t.Sources["a"] = new SourceOptions { Address = "127.0.0.2" };
            t.Pools["p"] = new PoolOptions { Sources = new() { ["a"] = 0 } };
        }));
        Assert.Contains("a weight from 1 to 1000", e.Message);
        e = Assert.Throws<ConfigException>(() => Settings(t => t.DefaultPool = "nowhere"));
        Assert.Contains("traffic.defaultPool: no pool 'nowhere'", e.Message);
        e = Assert.Throws<ConfigException>(() => Settings(t =>
        {
            t.Sources["a"] = new SourceOptions { Address = "127.0.0.2" };
            t.Sources["b"] = new SourceOptions { Address = "127.0.0.2" };
        }));
        Assert.Contains("also the address of source a", e.Message);
        // The system's default source may be named in a pool beside configured ones.
        var mixed = Settings(t =>
        {
            t.Sources["a"] = new SourceOptions { Address = "127.0.0.2" };
            t.Pools["mix"] = new PoolOptions { Sources = new() { ["a"] = 1, ["default"] = 1 } };
            t.DefaultPool = "mix";
        });
        Assert.Contains(mixed.DefaultPool.Members, m => m.Source.Address is null);
    }

    [Fact]
    public void A_source_whose_address_is_not_on_this_host_cannot_bind_and_the_error_names_it()
    {
        var settings = Settings(t =>
        {
            t.Sources["good"] = new SourceOptions { Address = "127.0.0.2" };
            t.Sources["ghost"] = new SourceOptions { Address = "192.0.2.77" }; // TEST-NET-1
        });
        var e = Assert.Throws<ConfigException>(settings.CheckBind);
        Assert.StartsWith("traffic.sources.ghost: cannot bind 192.0.2.77", e.Message);
        Settings(t => t.Sources["good"] = new SourceOptions { Address = "127.0.0.2" }).CheckBind();
    }

    [Fact]
    public void A_sources_own_connection_limit_is_shared_by_every_thread()
    {
        var source = Settings(t => t.Sources["a"] = new SourceOptions { Address = "127.0.0.2", MaxConnections = 3 }).Sources[0];
        int taken = 0;
        Parallel.For(0, 100, _ =>
        {
            if (source.TryTakeConnection())
                Interlocked.Increment(ref taken);
        });
        Assert.Equal(3, taken);
        source.ReleaseConnection();
        Assert.True(source.TryTakeConnection());
        Assert.False(source.TryTakeConnection());
    }

    // ---- Sites --------------------------------------------------------------------------------

    [Fact]
    public void Domains_with_the_same_mx_hosts_in_any_order_share_a_site_named_by_the_sorted_hosts()
    {
        var sites = new SiteResolver([], new HashSet<string>(), 25);
        var a = sites.SiteOf(MxRoute("a.test", "mx2.example.net", "MX1.example.net."));
        var b = sites.SiteOf(MxRoute("b.test", "mx1.example.net", "mx2.example.net"));
        Assert.Same(a, b);
        Assert.Equal("mx1.example.net,mx2.example.net", a.Name);
        Assert.Null(a.Label);
        var other = sites.SiteOf(MxRoute("c.test", "mx1.example.net"));
        Assert.NotSame(a, other);
        // A port other than the routing port is part of the name.
        var routed = new Route("route:smart:2526", RouteKind.Smtp, [new RouteHost("smart.example.net", 2526, 0, [IPAddress.Loopback])], TlsPolicy.None);
        Assert.Equal("smart.example.net:2526", sites.SiteOf(routed).Name);
    }

    [Fact]
    public void A_label_names_every_site_whose_mx_hosts_all_end_with_its_suffixes()
    {
        var sites = new SiteResolver([new SiteLabel("gmail", ["google.com", "googlemail.com"])], new HashSet<string>(), 25);
        var workspace = sites.SiteOf(MxRoute("corp.test", "aspmx.l.google.com", "alt1.aspmx.l.google.com"));
        var gmail = sites.SiteOf(MxRoute("gmail.com", "gmail-smtp-in.l.google.com", "alt1.gmail-smtp-in.l.googlemail.com"));
        Assert.Same(workspace, gmail);
        Assert.Equal("gmail", gmail.Name);
        Assert.Equal("gmail", gmail.Label);
        // One backup MX elsewhere: not the provider's site. A look-alike name: not either.
        Assert.Equal("aspmx.l.google.com,backup.example.net", sites.SiteOf(MxRoute("mixed.test", "aspmx.l.google.com", "backup.example.net")).Name);
        Assert.Equal("mx.notgoogle.com", sites.SiteOf(MxRoute("fake.test", "mx.notgoogle.com")).Name);
        Assert.True(SiteLabel.HostEndsWith("google.com", "google.com"));
        Assert.True(SiteLabel.HostEndsWith("mx.google.com:2526", "google.com"));
        Assert.False(SiteLabel.HostEndsWith("xgoogle.com", "google.com"));
    }

    [Fact]
    public void A_domain_a_rule_names_is_a_site_of_its_own()
    {
        var sites = new SiteResolver([new SiteLabel("gmail", ["google.com"])], new HashSet<string> { "vip.test" }, 25);
        Assert.Equal("vip.test", sites.SiteOf(MxRoute("vip.test", "aspmx.l.google.com")).Name);
        Assert.Equal("vip.test", sites.SiteOf(MxRoute("vip.test", "aspmx.l.google.com")).Domain);
        Assert.Equal("gmail", sites.SiteOf(MxRoute("other.test", "aspmx.l.google.com")).Name);
    }

    // ---- Shaping rules ------------------------------------------------------------------------

    private static ShapingRules Rules(string json, params string[] sources) =>
        ShapingRules.Validate(ShapingFile.Parse(json, "shaping.json"), "shaping.json", sources.Append("default").ToHashSet());

    [Fact]
    public void Per_limit_the_most_specific_rule_that_sets_it_wins()
    {
        var rules = Rules("""
            {
              "sites": { "gmail": { "mxSuffixes": [".google.com"] } },
              "default": { "maxConnections": 10, "messagesPerConnection": 100, "idleSeconds": 30 },
              "rules": [
                { "domain": "vip.test", "maxConnections": 2 },
                { "source": "ip2", "messagesPerHour": 1000 },
                { "mxSuffix": "l.google.com", "messagesPerSecond": 7, "maxConnections": 8 },
                { "mxSuffix": "google.com", "messagesPerSecond": 9, "recipientsPerTransaction": 50 },
                { "site": "gmail", "maxConnections": 5, "tls": "required" },
                { "site": "gmail", "source": "ip2", "maxConnections": 3 },
              ]
            }
            """, "ip2", "ip3");
        var sites = new SiteResolver(rules.Labels, rules.OwnSiteDomains, 25);
        var s = Settings(t =>
        {
            t.Sources["ip2"] = new SourceOptions { Address = "127.0.0.2" };
            t.Sources["ip3"] = new SourceOptions { Address = "127.0.0.3" };
        });
        var ip2 = s.Sources.Single(x => x.Name == "ip2");
        var ip3 = s.Sources.Single(x => x.Name == "ip3");
        var gmail = sites.SiteOf(MxRoute("gmail.com", "gmail-smtp-in.l.google.com"));

        var g3 = rules.Resolve(gmail, ip3);
        Assert.Equal(5, g3.MaxConnections);          // site beats both MX suffixes
        Assert.Equal(7, g3.MessagesPerSecond);       // the longer suffix beats the shorter
        Assert.Equal(50, g3.RecipientsPerTransaction);
        Assert.Equal(100, g3.MessagesPerConnection); // the default
        Assert.Equal(TlsPolicy.Required, g3.Tls);
        Assert.Null(g3.MessagesPerHour);

        var g2 = rules.Resolve(gmail, ip2);
        Assert.Equal(3, g2.MaxConnections);          // site + source beats site
        Assert.Equal(1000, g2.MessagesPerHour);      // the source-only rule

        var vip = rules.Resolve(sites.SiteOf(MxRoute("vip.test", "aspmx.l.google.com")), ip3);
        Assert.Equal(2, vip.MaxConnections);         // a domain beats everything
        Assert.Equal(30, vip.IdleSeconds);

        var other = rules.Resolve(sites.SiteOf(MxRoute("x.test", "mx.example.net")), ip3);
        Assert.Equal(10, other.MaxConnections);
        Assert.Null(other.MessagesPerSecond);
    }

    [Theory]
    [InlineData("""{ "rules": [ { "maxConnections": 3 } ] }""", "needs domain, site, mxSuffix or source")]
    [InlineData("""{ "rules": [ { "site": "gmail" } ] }""", "sets no limit")]
    [InlineData("""{ "rules": [ { "source": "ghost", "maxConnections": 1 } ] }""", "no source 'ghost'")]
    [InlineData("""{ "rules": [ { "site": "x", "maxConnections": 0 } ] }""", "maxConnections must be positive")]
    [InlineData("""{ "rules": [ { "site": "x", "messagesPerSecond": -1 } ] }""", "messagesPerSecond must be a positive number")]
    [InlineData("""{ "rules": [ { "site": "x", "tls": "sometimes" } ] }""", "is not one of none, opportunistic, required, verify")]
    [InlineData("""{ "rules": [ { "domain": "a.test", "site": "x", "maxConnections": 1 } ] }""", "site of its own")]
    [InlineData("""{ "sites": { "g": { "mxSuffixes": [] } } }""", "mxSuffixes is needed")]
    [InlineData("""{ "default": { "site": "x", "maxConnections": 1 } }""", "default applies everywhere")]
    [InlineData("""{ "rules": [ { "site": "x", "maxConections": 1 } ] }""", "maxConections")]
    [InlineData("""{ "automation": [ { "name": "a", "code": 421, "action": "suspend" } ] }""", "a duration from 1s to 30d")]
    [InlineData("""{ "automation": [ { "name": "a", "action": "suspend", "duration": "5m" } ] }""", "needs code, enhanced or text")]
    [InlineData("""{ "automation": [ { "name": "a", "code": 421, "action": "pause", "duration": "5m" } ] }""", "is not one of suspend, throttle, bounce")]
    [InlineData("""{ "automation": [ { "name": "a", "code": 421, "action": "throttle", "duration": "5m" } ] }""", "a throttle needs the limits")]
    [InlineData("""{ "automation": [ { "name": "a", "code": 421, "action": "suspend", "duration": "5m", "maxConnections": 1 } ] }""", "limits only go with the throttle")]
    [InlineData("""{ "automation": [ { "name": "a", "text": "([", "action": "suspend", "duration": "5m" } ] }""", "is not a regular expression")]
    [InlineData("""{ "automation": [ { "name": "a", "enhanced": "4.x", "action": "suspend", "duration": "5m" } ] }""", "is not an enhanced status code")]
    [InlineData("""{ "automation": [ { "name": "a", "code": 421, "action": "suspend", "duration": "5m" }, { "name": "a", "code": 451, "action": "suspend", "duration": "5m" } ] }""", "used twice")]
    public void A_broken_shaping_file_is_one_line_naming_the_problem(string json, string expected)
    {
        var e = Assert.Throws<ConfigException>(() => Rules(json));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void The_shipped_example_file_is_valid()
    {
        var path = Path.Combine(Support.CliRun.RepoRoot, "docs", "examples", "shaping.json");
        var rules = ShapingRules.Validate(ShapingFile.Load(path), path, new HashSet<string> { "default" });
        Assert.Contains(rules.Labels, l => l.Name == "gmail");
        Assert.Contains(rules.Automation, a => a.Name == "gmail-rate-limited");
        // Every default rule is repeated there (the file's list replaces them).
        foreach (var d in AutomationRule.Defaults)
            Assert.Contains(rules.Automation, a => a.Name == d.Name);
    }

    // ---- Token buckets ------------------------------------------------------------------------

    [Fact]
    public void A_path_bucket_spaces_messages_evenly_and_the_slowest_bucket_decides()
    {
        var rates = LocalRates.For(new ShapingLimits { MessagesPerSecond = 10, MessagesPerMinute = 300 })!;
        long t0 = 1_000_000_000;
        long interval = Stopwatch.Frequency / 5; // 300/min = 5/s is the slower one
        long[] slots = Enumerable.Range(0, 5).Select(_ => rates.Take(t0)).ToArray();
        for (int i = 0; i < slots.Length; i++)
            Assert.Equal(t0 + i * interval, slots[i]);
        Assert.Equal(t0 + 5 * interval, rates.Next(t0));
        // After a pause, no burst: the next slot is now, the one after it an interval later.
        long later = t0 + 100 * Stopwatch.Frequency;
        Assert.Equal(later, rates.Take(later));
        Assert.Equal(later + interval, rates.Take(later));
        Assert.Null(LocalRates.For(ShapingLimits.None));
    }

    [Fact]
    public void A_shared_bucket_gives_every_thread_its_own_slot()
    {
        var rates = SharedRates.For(1000, null, null, null)!;
        long t0 = Stopwatch.GetTimestamp();
        var slots = new System.Collections.Concurrent.ConcurrentBag<long>();
        Parallel.For(0, 4000, _ => slots.Add(rates.Take(t0)));
        var sorted = slots.OrderBy(s => s).ToArray();
        long interval = Stopwatch.Frequency / 1000;
        for (int i = 1; i < sorted.Length; i++)
            Assert.True(sorted[i] - sorted[i - 1] >= interval, $"slots {i - 1} and {i} are {sorted[i] - sorted[i - 1]} ticks apart");
        Assert.Equal(t0, sorted[0]);
    }

    // ---- Automation ---------------------------------------------------------------------------

    private static AutomationRule? FirstDefault(SmtpReply reply) => AutomationRule.Defaults.FirstOrDefault(r => r.Matches(reply));

    [Theory]
    [InlineData(421, "4.7.28 [192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address. gsmtp", "gmail-rate-limited")]
    [InlineData(421, "4.7.0 Error: too many connections from 192.0.2.1", "too-many-connections")]
    [InlineData(421, "mwinf5c10 ME Trop de connexions, veuillez verifier votre configuration. Too many connections, slow down. OFR004_104", "too-many-connections")]
    [InlineData(421, "4.7.0 [TS01] Messages from 192.0.2.1 temporarily deferred due to user complaints - 4.16.55.1", "yahoo-deferred")]
    [InlineData(421, "4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints", "yahoo-deferred")]
    [InlineData(421, "gmx.net (mxgmx017) Nemesis ESMTP Service not available; Too many messages have been received in a short period of time", "rate-limited")]
    [InlineData(451, "4.7.500 Server busy. Please try again later from [192.0.2.1]. (S77719)", "server-busy")]
    [InlineData(451, "4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.", "server-busy")]
    public void The_default_rules_know_the_large_providers_throttling_replies(int code, string text, string rule)
    {
        Assert.Equal(rule, FirstDefault(new SmtpReply(code, text))?.Name);
    }

    [Theory]
    [InlineData(452, "4.2.2 The email account that you tried to reach is over quota. gsmtp")]
    [InlineData(452, "4.2.2 Mailbox full")]
    [InlineData(550, "5.1.1 The email account that you tried to reach does not exist. gsmtp")]
    [InlineData(421, "4.4.2 connection closed by the remote server")]
    [InlineData(451, "4.7.1 Greylisted, please try again later")]
    [InlineData(421, "4.7.2 [192.0.2.1] something else with 4.7.28 in the text")]
    public void A_mailbox_full_or_other_recipient_reply_is_no_throttle(int code, string text)
    {
        Assert.Null(FirstDefault(new SmtpReply(code, text)));
    }

    [Fact]
    public void An_enhanced_code_matches_as_a_prefix_of_whole_parts()
    {
        Assert.True(AutomationRule.EnhancedStartsWith("4.7.28 text", "4.7.28"));
        Assert.True(AutomationRule.EnhancedStartsWith("4.7.28 text", "4.7"));
        Assert.False(AutomationRule.EnhancedStartsWith("4.7.28 text", "4.7.2"));
        Assert.False(AutomationRule.EnhancedStartsWith("4.7.280 text", "4.7.28"));
        Assert.Equal(TimeSpan.FromMinutes(30), AutomationRule.ParseDuration("30m", "d"));
        Assert.Equal(TimeSpan.FromSeconds(90), AutomationRule.ParseDuration("90", "d"));
        Assert.Equal(TimeSpan.FromHours(1.5), AutomationRule.ParseDuration("1.5h", "d"));
        Assert.Throws<ConfigException>(() => AutomationRule.ParseDuration("31d", "d"));
        Assert.Throws<ConfigException>(() => AutomationRule.ParseDuration("0s", "d"));
    }

    [Fact]
    public void A_rule_covers_only_the_sites_and_sources_it_names()
    {
        var settings = Settings(t => t.Sources["ip2"] = new SourceOptions { Address = "127.0.0.2" });
        var config = new TrafficConfig(settings, 25, 1);
        var sites = new SiteResolver([new SiteLabel("yahoo", ["yahoodns.net"])], new HashSet<string>(), 25);
        var yahoo = config.Path(settings.Sources[0], sites.SiteOf(MxRoute("yahoo.com", "mta5.am0.yahoodns.net")));
        var other = config.Path(settings.Sources[0], sites.SiteOf(MxRoute("x.test", "mx.example.net")));
        var rule = AutomationRule.From(new AutomationRuleOptions { Name = "y", Code = 421, Site = "yahoo", Action = "suspend", Duration = "1h" }, "t");
        Assert.True(rule.Covers(yahoo));
        Assert.False(rule.Covers(other));
        var bySource = AutomationRule.From(new AutomationRuleOptions { Name = "s", Code = 421, Source = "ip3", Action = "suspend", Duration = "1h" }, "t");
        Assert.False(bySource.Covers(yahoo));
        var bySuffix = AutomationRule.From(new AutomationRuleOptions { Name = "m", Code = 421, MxSuffix = ".example.net", Action = "suspend", Duration = "1h" }, "t");
        Assert.True(bySuffix.Covers(other));
        Assert.False(bySuffix.Covers(yahoo));
    }

    [Fact]
    public void Actions_are_extended_by_the_same_rule_listed_lifted_and_lapse()
    {
        var table = new ActionTable();
        var slot = table.Slot("ip2", "gmail");
        long now = 1_000_000;
        Assert.True(slot.Put(new TrafficAction("r1", TrafficActionKind.Suspend, now, now + 1000, "421 a", ShapingLimits.None)));
        Assert.False(slot.Put(new TrafficAction("r1", TrafficActionKind.Suspend, now + 500, now + 1500, "421 b", ShapingLimits.None)));
        var extended = Assert.Single(slot.Actions);
        Assert.Equal(now, extended.StartedUnixMs);
        Assert.Equal(now + 1500, extended.UntilUnixMs);
        Assert.True(table.Slot("ip3", "gmail").Put(new TrafficAction("r2", TrafficActionKind.Throttle, now, now + 5000, "421 c",
            new ShapingLimits { MaxConnections = 1 })));
        Assert.Equal(2, table.Active(now + 100).Count);
        Assert.Equal((1, 1, 0), table.CountsInForce(now + 100));

        var lapsed = table.Sweep(now + 2000);
        Assert.Equal("r1", Assert.Single(lapsed).Action.Rule);
        Assert.Single(table.Active(now + 2000));

        Assert.Empty(table.Lift("gmail", "ip2"));
        Assert.Single(table.Lift("GMAIL", null));
        Assert.Empty(table.Active(now + 2000));
    }

    // ---- Pool rules at reception --------------------------------------------------------------

    private static PoolRules PoolRulesOf(params PoolRuleOptions[] rules) =>
        PoolRules.Validate(rules, new HashSet<string> { "bulk", "transactional", "news" });

    private static readonly ListenerInfo Smtp = new(IPEndPoint.Parse("127.0.0.1:25"), ListenerKind.Smtp);
    private static readonly ListenerInfo Submission = new(IPEndPoint.Parse("127.0.0.1:587"), ListenerKind.Submission);

    [Fact]
    public void The_first_pool_rule_that_matches_decides()
    {
        var rules = PoolRulesOf(
            new PoolRuleOptions { Header = "X-Pool" },
            new PoolRuleOptions { AuthUser = "newsletter", Pool = "news" },
            new PoolRuleOptions { Listener = "submission", Pool = "transactional" },
            new PoolRuleOptions { Listener = "127.0.0.1:25", SenderDomain = ".mail.example.com", Pool = "bulk" });
        Func<string, string?> none = _ => null;
        Assert.Equal("bulk", rules.Choose(Smtp, null, "a@x.mail.example.com"u8, none));
        Assert.Equal("bulk", rules.Choose(Smtp, null, "a@MAIL.example.com"u8, none));
        Assert.Null(rules.Choose(Smtp, null, "a@example.com"u8, none));
        Assert.Equal("transactional", rules.Choose(Submission, "alice", "a@example.com"u8, none));
        Assert.Equal("news", rules.Choose(Submission, "newsletter", "a@example.com"u8, none));
        // The header names the pool (a pool that exists; another value is no match).
        Assert.Equal("bulk", rules.Choose(Submission, "alice", "a@example.com"u8, h => h == "X-Pool" ? "bulk" : null));
        Assert.Equal("transactional", rules.Choose(Submission, "alice", "a@example.com"u8, h => h == "X-Pool" ? "nonesuch" : null));
        Assert.Equal(["X-Pool"], rules.Headers);

        var byValue = PoolRulesOf(new PoolRuleOptions { Header = "X-Campaign", Value = "spring", Pool = "bulk" });
        Assert.Equal("bulk", byValue.Choose(Smtp, null, "a@b"u8, _ => "Spring"));
        Assert.Null(byValue.Choose(Smtp, null, "a@b"u8, _ => "autumn"));
    }

    [Theory]
    [InlineData(null, null, null, null, "bulk", "needs a condition")]
    [InlineData("u", null, null, null, "nowhere", "no pool 'nowhere'")]
    [InlineData("u", null, null, null, null, "pool is needed")]
    [InlineData(null, "port 25", null, null, "bulk", "is neither IP:PORT nor a kind")]
    [InlineData(null, null, "not a domain!", null, "bulk", "is not a domain")]
    [InlineData(null, null, null, "X Pool", null, "is not a header field name")]
    public void A_bad_pool_rule_is_refused(string? user, string? listener, string? sender, string? header, string? pool, string expected)
    {
        var e = Assert.Throws<ConfigException>(() => PoolRulesOf(new PoolRuleOptions { AuthUser = user, Listener = listener, SenderDomain = sender, Header = header, Pool = pool }));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Pool_header_fields_are_found_with_their_values_and_taken_out_of_the_message_in_place()
    {
        string headers = "Subject: hi\r\nX-Pool: bulk\r\nX-Other: 1\r\nx-pool:\r\n news\r\n\r\nbody\r\n";
        var message = MessageBuffer.Rent();
        try
        {
            message.Reserve(512);
            message.Write(Encoding.ASCII.GetBytes(headers));
            var found = PoolRules.FindHeaders(message.FirstBlockContent()[message.Reserved..], [Encoding.ASCII.GetBytes("X-Pool")]);
            Assert.Equal(["bulk", "news"], found.Select(f => f.Value));
            for (int i = found.Count - 1; i >= 0; i--)
                Assert.True(message.TryRemoveBeforeFill(found[i].Offset, found[i].Length));
            Assert.Equal(512 + "X-Pool: bulk\r\n".Length + "x-pool:\r\n news\r\n".Length, message.Reserved);
            // The reserved front is filled afterwards, as the session writes its trace header.
            var trace = Encoding.ASCII.GetBytes("Received: here\r\n");
            var reserved = message.GetReservedSpan();
            trace.CopyTo(reserved[(reserved.Length - trace.Length)..]);
            message.TrimReservedFront(reserved.Length - trace.Length);
            var bytes = new byte[message.ContentLength];
            message.CopyTo(0, bytes);
            Assert.Equal("Received: here\r\nSubject: hi\r\nX-Other: 1\r\n\r\nbody\r\n", Encoding.ASCII.GetString(bytes));
        }
        finally
        {
            message.Release();
        }
    }

    [Fact]
    public void A_pool_header_cut_off_by_the_end_of_the_block_is_left_alone()
    {
        var cut = Encoding.ASCII.GetBytes("Subject: hi\r\nX-Pool: bu");
        Assert.Empty(PoolRules.FindHeaders(cut, [Encoding.ASCII.GetBytes("X-Pool")]));
    }

    // ---- The spool ----------------------------------------------------------------------------

    [Fact]
    public void The_pool_round_trips_through_the_head_record_and_a_head_without_one_reads_as_none()
    {
        foreach (var pool in new[] { "bulk", null })
        {
            var envelope = new Envelope
            {
                Sender = "a@b.test"u8.ToArray(), Recipients = ["c@d.test"u8.ToArray()], ClientAddress = "127.0.0.1", HeloName = "h",
                ArrivalUnixMs = 1, Pool = pool,
            };
            var body = MessageBuffer.Rent();
            body.Write("Subject: x\r\n\r\ny\r\n"u8);
            var entry = new MessageHeadEntry();
            entry.Prepare(42, envelope, body, 0);
            var record = new byte[entry.SerializedLength];
            entry.SerializeTo(record);
            var head = MessageHead.TryParse(record);
            Assert.NotNull(head);
            Assert.Equal(pool, head.Envelope.Pool);
            // The extension's flag byte: after the common header, arrival (8), flags (4), length (8),
            // client (2+9), helo (2+1), sender (2+8), recipient count (4) and the recipient (2+8),
            // ENVID (2+0) and auth user (2+0). Bit 3 says a pool follows (bit 2 is the HTTP
            // injection's part); a head written before pools existed never has it, and reads as no pool.
            int flagAt = RecordFormat.CommonHeaderSize + 8 + 4 + 8 + (2 + 9) + (2 + 1) + (2 + 8) + 4 + (2 + 8) + 2 + 2;
            Assert.Equal(pool is null ? 0 : 8, record[flagAt] & 8);
            Assert.Equal(0, record[flagAt] & 4);
            if (pool is null)
                Assert.Equal(flagAt + 1 + 4 + 4 + body.ContentLength, record.Length); // no pool bytes: chunk count, inline length, bytes
            body.Release();
        }
    }
}
