using NativeRelay.Config;
using NativeRelay.Smtp;
using NativeRelay.Traffic.Bounces;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// Bounce classes: the shipped rules against real-world replies (Data/bounces/replies.tsv, each
/// with its source), the relay's own failures, the rules file's format and its errors.
/// </summary>
public sealed class BounceClassificationTests
{
    private static IEnumerable<(string Class, string Reply, string Source)> Fixture()
    {
        foreach (var line in File.ReadLines(Path.Combine(AppContext.BaseDirectory, "Data", "bounces", "replies.tsv")))
        {
            if (line.Length == 0 || line[0] == '#')
                continue;
            var parts = line.Split('\t');
            Assert.Equal(3, parts.Length);
            yield return (parts[0], parts[1], parts[2]);
        }
    }

    private static SmtpReply Reply(string line) => new(int.Parse(line[..3]), line.Length > 4 ? line[4..] : null);

    [Fact]
    public void The_fixture_holds_at_least_fifty_real_replies_each_with_its_source_and_a_known_class()
    {
        var rows = Fixture().ToList();
        Assert.True(rows.Count >= 50, $"{rows.Count} replies");
        foreach (var (cls, reply, source) in rows)
        {
            Assert.True(BounceClassNames.TryParse(cls, out _), cls);
            Assert.Matches(@"^[245]\d\d( |$)", reply);
            Assert.StartsWith("https://", source);
        }
        // Every class a remote can cause is represented.
        var classes = rows.Select(r => r.Class).ToHashSet();
        foreach (var name in new[] { "invalid-recipient", "bad-domain", "mailbox-full", "message-too-large", "content-block", "policy-block",
                     "authentication-failure", "rate-limited", "tls-failure", "dns-failure", "connection-failure", "other" })
            Assert.Contains(name, classes);
    }

    [Fact]
    public void Every_real_world_reply_of_the_fixture_gets_its_class()
    {
        var wrong = new List<string>();
        foreach (var (cls, reply, source) in Fixture())
        {
            var got = BounceClassifier.Default.Classify(Reply(reply), local: false).Name();
            if (got != cls)
                wrong.Add($"{got} instead of {cls}: {reply} ({source})");
        }
        Assert.True(wrong.Count == 0, string.Join("\n", wrong));
    }

    [Theory]
    [InlineData(550, "5.1.2 <x@nowhere.invalid>: domain does not exist (NXDOMAIN)", "bad-domain")]
    [InlineData(556, "5.1.10 example.com publishes a null MX: it accepts no mail (RFC 7505)", "bad-domain")]
    [InlineData(451, "4.4.3 DNS lookup of example.com failed: SERVFAIL", "dns-failure")]
    [InlineData(451, "4.4.4 no address to connect to for example.com", "dns-failure")]
    [InlineData(421, "4.4.1 connect to 127.0.0.1:25 failed: ConnectionRefused", "connection-failure")]
    [InlineData(421, "4.4.1 connect to 127.0.0.1:25 timed out", "connection-failure")]
    [InlineData(421, "4.4.2 connection closed by the remote server", "connection-failure")]
    [InlineData(451, "4.7.4 TLS is required, but 127.0.0.1:25 does not offer STARTTLS", "tls-failure")]
    [InlineData(451, "4.7.5 TLS to 127.0.0.1:25 not verified: certificate-host-mismatch", "tls-failure")]
    [InlineData(421, "4.7.5 TLS handshake with 127.0.0.1:25 failed: bad record", "tls-failure")]
    [InlineData(550, "5.7.10 REQUIRETLS: the next hop does not offer REQUIRETLS", "tls-failure")]
    [InlineData(552, "5.3.4 message size 900000 exceeds the size limit 100000 of host mx.example.com", "message-too-large")]
    [InlineData(451, "4.4.0 mx.example.com[192.0.2.1] refused the session: 554 5.7.1 Client host blocked using zen.spamhaus.org", "policy-block")]
    [InlineData(550, "5.0.0 returned to the sender by the mail system administrator", "other")]
    public void The_relays_own_failures_are_classified(int code, string text, string expected)
    {
        Assert.Equal(expected, BounceClassifier.Default.Classify(SmtpReply.Local(code, text), local: true).Name());
    }

    [Theory]
    [InlineData("5.1.1 user unknown", 5, 1, 1)]
    [InlineData("#5.1.0 Address rejected.", 5, 1, 0)]
    [InlineData("4.7.650 rate limited", 4, 7, 650)]
    [InlineData("5.1.1= <x>", 5, 1, 1)]
    [InlineData("Unknown user", 0, 0, 0)]
    [InlineData("5.1.1000 too long", 0, 0, 0)]
    [InlineData("5.1", 0, 0, 0)]
    [InlineData("3.1.1 wrong class", 0, 0, 0)]
    public void The_enhanced_status_code_is_read_from_the_start_of_the_text(string text, int cls, int subject, int detail)
    {
        Assert.Equal(cls == 0 ? default : new EnhancedStatus(cls, subject, detail), EnhancedStatus.Parse(text));
    }

    [Fact]
    public void Operator_rules_come_before_the_shipped_ones_and_match_by_code_status_text_and_origin()
    {
        var rules = BounceRulesReader.Parse("""
            // comments are allowed
            { "rules": [
              { "class": "rate-limited", "code": ["55x"], "status": ["x.7.*"], "text": "RL-\\d+", "comment": "a provider's own code" },
              { "class": "other", "local": true, "status": ["4.4.1"] },
            ] }
            """, "test");
        var classifier = BounceClassifier.FromRules(rules);
        Assert.Equal(2, classifier.OperatorRuleCount);
        Assert.Equal(BounceClass.RateLimited, classifier.Classify(new SmtpReply(554, "5.7.1 rejected RL-42 spam"), false));
        // The text does not match: the shipped rules decide.
        Assert.Equal(BounceClass.ContentBlock, classifier.Classify(new SmtpReply(554, "5.7.1 rejected as spam"), false));
        // The code does not match.
        Assert.Equal(BounceClass.PolicyBlock, classifier.Classify(new SmtpReply(421, "4.7.1 RL-42 refused"), false));
        // Local only.
        Assert.Equal(BounceClass.Other, classifier.Classify(SmtpReply.Local(421, "4.4.1 connect to x failed"), true));
        Assert.Equal(BounceClass.ConnectionFailure, classifier.Classify(new SmtpReply(421, "4.4.1 no answer"), false));
    }

    [Theory]
    [InlineData("""{ "rules": [ { "class": "nonsense", "status": ["5.1.1"] } ] }""", "rule 1: class 'nonsense'")]
    [InlineData("""{ "rules": [ { "class": "other" } ] }""", "rule 1: a rule needs at least one of")]
    [InlineData("""{ "rules": [ { "class": "other", "code": ["5x"] } ] }""", "rule 1: code '5x'")]
    [InlineData("""{ "rules": [ { "class": "other", "code": ["550"] }, { "class": "other", "status": ["5.1"] } ] }""", "rule 2: status '5.1'")]
    [InlineData("""{ "rules": [ { "class": "other", "status": ["3.1.1"] } ] }""", "status '3.1.1'")]
    [InlineData("""{ "rules": [ { "class": "other", "text": "(" } ] }""", "text '(' is not a regular expression")]
    [InlineData("""{ "rules": [ { "class": "other", "txt": "x" } ] }""", "txt")]
    [InlineData("""not json""", "bounce rules t:")]
    public void A_wrong_rules_file_is_refused_with_the_rule_it_is_about(string text, string expected)
    {
        var e = Assert.Throws<ConfigException>(() => BounceRulesReader.Parse(text, "t"));
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void A_rules_file_that_cannot_be_read_is_a_config_error_naming_it()
    {
        var e = Assert.Throws<ConfigException>(() => BounceClassifier.Create("/nonexistent/rules.json"));
        Assert.Contains("/nonexistent/rules.json", e.Message);
    }

    [Fact]
    public void Every_class_has_a_name_that_parses_back()
    {
        Assert.Equal(12, BounceClassNames.Count);
        foreach (BounceClass c in Enum.GetValues<BounceClass>())
        {
            Assert.True(BounceClassNames.TryParse(c.Name(), out var back));
            Assert.Equal(c, back);
        }
        Assert.False(BounceClassNames.TryParse("spam", out _));
    }
}

/// <summary>nativerelay_bounce_class_total: by site, class and outcome, sites capped like the per-destination counters.</summary>
public sealed class SiteClassCounterTests
{
    [Fact]
    public void Failures_are_counted_by_site_class_and_outcome_and_sites_past_the_cap_are_other()
    {
        var registry = new NativeRelay.Telemetry.MetricsRegistry();
        var counter = registry.Add(new NativeRelay.Telemetry.SiteClassCounter("t_bounce_class_total", "test", BounceClassNames.All, maxSites: 2));
        counter.Increment("mx.a.example", (int)BounceClass.InvalidRecipient, failed: true);
        counter.Increment("mx.a.example", (int)BounceClass.InvalidRecipient, failed: true);
        counter.Increment("mx.a.example", (int)BounceClass.RateLimited, failed: false);
        counter.Increment("b.example", (int)BounceClass.DnsFailure, failed: false);
        counter.Increment("mx.c.example", (int)BounceClass.MailboxFull, failed: true); // the third site: "other"

        string text = registry.Render();
        Assert.Contains("t_bounce_class_total{site=\"mx.a.example\",class=\"invalid-recipient\",outcome=\"failed\"} 2\n", text);
        Assert.Contains("t_bounce_class_total{site=\"mx.a.example\",class=\"rate-limited\",outcome=\"deferred\"} 1\n", text);
        Assert.Contains("t_bounce_class_total{site=\"b.example\",class=\"dns-failure\",outcome=\"deferred\"} 1\n", text);
        Assert.Contains("t_bounce_class_total{site=\"other\",class=\"mailbox-full\",outcome=\"failed\"} 1\n", text);
        Assert.DoesNotContain("mx.c.example", text);
        Assert.DoesNotContain("class=\"other\"", text); // only classes a site has seen are written
        Assert.Equal(2, counter.Get("mx.a.example", (int)BounceClass.InvalidRecipient, failed: true));
        Assert.Equal(0, counter.Get("mx.a.example", (int)BounceClass.InvalidRecipient, failed: false));
    }

    [Theory]
    [InlineData("mx1.example.net", "user@example.com", "mx1.example.net")]
    [InlineData(null, "user@Example.COM", "example.com")]
    [InlineData("", "postmaster", "none")]
    public void The_site_is_the_next_hop_or_else_the_recipients_domain(string? host, string recipient, string expected)
    {
        Assert.Equal(expected, BounceSite.Of(host, System.Text.Encoding.UTF8.GetBytes(recipient)));
    }
}
