using System.Text;
using NativeRelay.Config;
using NativeRelay.Local;
using NativeRelay.Message;
using SmtpReply = NativeRelay.Smtp.SmtpReply;
using NativeRelay.Tests.Support;
using static NativeRelay.Tests.Support.LocalDeliveryFixtures;

namespace NativeRelay.Tests.Unit;

/// <summary>Aliases files: parsing, recursive expansion across local domains, catch-all, and loop refusal.</summary>
public sealed class AliasesTests : IDisposable
{
    private readonly TempDir _dir = new("nativerelay-aliases");

    private string Root => _dir.File("mail");

    private LocalDomainOptions Domain(string name, string aliasesText, Action<LocalDomainOptions>? change = null)
    {
        string file = _dir.File(name + ".aliases");
        File.WriteAllText(file, aliasesText);
        var d = new LocalDomainOptions { Domain = name, MaildirRoot = Path.Combine(Root, name), Aliases = file };
        change?.Invoke(d);
        return d;
    }

    [Fact]
    public void Parses_comments_continuations_full_addresses_and_angle_brackets()
    {
        var table = AliasTable.Parse("""
            # the team
            Team: alice,
              <Bob@Other.Test>,   carol
            postmaster: root

            root: alice
            sales@local.test: dave
            """, "test");

        Assert.Equal(4, table.Count);
        Assert.True(table.TryGet("team", out var team));
        Assert.Equal(["alice", "bob@other.test", "carol"], team);
        Assert.True(table.TryGet("sales@local.test", out var sales));
        Assert.Equal(["dave"], sales);
    }

    [Theory]
    [InlineData("bob: |/usr/bin/procmail", "only addresses")]
    [InlineData("bob: /var/mail/bob", "only addresses")]
    [InlineData("bob: :include:/etc/list", "only addresses")]
    [InlineData("bob: alice\nbob: carol", "defined twice")]
    [InlineData("bob:", "no target")]
    [InlineData("  alice", "continuation")]
    [InlineData("no colon here", "expected")]
    [InlineData("bob: two words", "not an address")]
    [InlineData("bob: alice, <>", "not an address")]   // threw IndexOutOfRangeException (found while writing the aliases fuzz target)
    public void Bad_lines_are_one_line_errors_with_the_line_number(string text, string expected)
    {
        var e = Assert.Throws<ConfigException>(() => AliasTable.Parse(text, "/etc/aliases"));
        Assert.Contains("/etc/aliases line ", e.Message);
        Assert.Contains(expected, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void Expands_recursively_across_local_domains_keeping_remote_addresses()
    {
        var settings = LocalDeliverySettings.Validate([
            Domain("local.test", "team: alice, staff@corp.test, friend@remote.test\nalice: alice, archive\n"),
            Domain("corp.test", "staff: bob\n"),
        ]);
        var resolver = LocalRecipientResolver.Load(settings);

        var r = resolver.Resolve("team@local.test");

        Assert.Null(r.Refusal);
        Assert.Empty(r.Failures);
        Assert.Equal(["alice@local.test", "archive@local.test", "bob@corp.test", "friend@remote.test"], r.Targets.Select(t => t.Address));
        Assert.Equal([true, true, true, false], r.Targets.Select(t => t.IsLocal));
    }

    [Fact]
    public void A_chain_that_comes_back_is_a_loop_and_the_recipient_is_refused()
    {
        var settings = LocalDeliverySettings.Validate([
            Domain("local.test", "a: b\nb: c@corp.test\n"),
            Domain("corp.test", "c: a@local.test\n"),
        ]);
        var r = LocalRecipientResolver.Load(settings).Resolve("a@local.test");

        Assert.NotNull(r.Refusal);
        Assert.Equal(554, r.Refusal!.Value.Code);
        Assert.Contains("5.4.6 alias loop: a@local.test -> b@local.test -> c@corp.test -> a@local.test", r.Refusal.Value.Text);
        Assert.Empty(r.Targets);
    }

    [Fact]
    public void A_self_reference_means_the_mailbox_itself_not_a_loop()
    {
        var settings = LocalDeliverySettings.Validate([Domain("local.test", "bob: bob, bob-archive\n")]);
        var r = LocalRecipientResolver.Load(settings).Resolve("bob@local.test");
        Assert.Null(r.Refusal);
        Assert.Equal(["bob@local.test", "bob-archive@local.test"], r.Targets.Select(t => t.Address));
    }

    [Fact]
    public void Too_deep_a_chain_is_refused()
    {
        var text = new StringBuilder();
        for (int i = 0; i < LocalRecipientResolver.MaxDepth + 5; i++)
            text.Append($"a{i}: a{i + 1}\n");
        var settings = LocalDeliverySettings.Validate([Domain("local.test", text.ToString())]);
        var r = LocalRecipientResolver.Load(settings).Resolve("a0@local.test");
        Assert.Equal(554, r.Refusal!.Value.Code);
        Assert.Contains("deeper", r.Refusal.Value.Text);
    }

    [Fact]
    public void The_catch_all_can_be_an_alias_and_the_delimiter_finds_the_alias_of_the_base_name()
    {
        var settings = LocalDeliverySettings.Validate([
            Domain("local.test", "sales: dave\nabuse: root\nroot: alice\n", d => { d.Users = ["alice", "dave"]; d.CatchAll = "abuse"; }),
        ]);
        var resolver = LocalRecipientResolver.Load(settings);
        Assert.Equal(["alice@local.test"], resolver.Resolve("nobody@local.test").Targets.Select(t => t.Address));
        Assert.Equal(["dave@local.test"], resolver.Resolve("sales+q3@local.test").Targets.Select(t => t.Address));
    }

    [Fact]
    public async Task Delivery_through_an_alias_writes_each_mailbox_and_refuses_a_looping_recipient_without_writing()
    {
        var agent = Agent(null,
            Domain("local.test", "team: alice, bob\nloop1: loop2\nloop2: loop1\n"));
        var envelope = Envelope("s@example.test", "team@local.test", "loop1@local.test");
        var body = Buffer("Subject: hi\r\n\r\nbody\r\n");

        var results = await agent.DeliverAsync(envelope, body, All(envelope));

        Assert.Equal(250, results[0].Reply.Code);
        Assert.Contains("<alice@local.test> 250", results[0].Detail);
        Assert.Contains("<bob@local.test> 250", results[0].Detail);
        Assert.Equal(554, results[1].Reply.Code);
        Assert.Contains("5.4.6", results[1].Reply.Text);
        var alice = Assert.Single(Files(Path.Combine(Root, "local.test", "alice"), "new"));
        Assert.Single(Files(Path.Combine(Root, "local.test", "bob"), "new"));
        Assert.StartsWith("Return-Path: <s@example.test>\nDelivered-To: alice@local.test\n", File.ReadAllText(alice));
        Assert.False(Directory.Exists(Path.Combine(Root, "local.test", "loop1")));
        Assert.False(Directory.Exists(Path.Combine(Root, "local.test", "loop2")));
        body.Release();
    }

    [Fact]
    public async Task An_alias_to_a_remote_address_is_forwarded_with_delivered_to_or_refused_without_a_forwarder()
    {
        var forwarder = new RecordingForwarder();
        var withForwarder = Agent(forwarder, Domain("local.test", "carol: carol@remote.test\n"));
        var envelope = Envelope("s@example.test", "carol@local.test");
        var body = Buffer("Subject: fwd\r\n\r\nbody\r\n");

        var r1 = Assert.Single(await withForwarder.DeliverAsync(envelope, body, [0]));
        Assert.Equal(250, r1.Reply.Code);
        var call = Assert.Single(forwarder.Calls);
        Assert.Equal(["carol@remote.test"], call.Recipients);
        Assert.Equal("Delivered-To: carol@local.test\r\n", call.Prefix);
        Assert.Equal("s@example.test", call.Sender);

        var without = Agent(null, Domain("local.test", "carol: carol@remote.test\n"));
        var r2 = Assert.Single(await without.DeliverAsync(envelope, body, [0]));
        Assert.Equal(550, r2.Reply.Code);

        // The forwarded copy comes back: its Delivered-To shows the loop.
        var returned = Buffer("Delivered-To: carol@local.test\r\nSubject: fwd\r\n\r\nbody\r\n");
        var r3 = Assert.Single(await withForwarder.DeliverAsync(envelope, returned, [0]));
        Assert.Equal(554, r3.Reply.Code);
        Assert.Single(forwarder.Calls);
        body.Release();
        returned.Release();
    }

    [Fact]
    public async Task A_temporary_failure_of_one_branch_makes_the_whole_recipient_wait()
    {
        var forwarder = new RecordingForwarder { Reply = SmtpReply.Local(451, "4.4.1 try later") };
        var agent = Agent(forwarder, Domain("local.test", "both: alice, x@remote.test\n"));
        var body = Buffer("Subject: hi\r\n\r\nbody\r\n");
        var r = Assert.Single(await agent.DeliverAsync(Envelope("s@example.test", "both@local.test"), body, [0]));
        Assert.Equal(451, r.Reply.Code);
        body.Release();
    }

    [Theory]
    [InlineData("""{ "localDomains": [ { "domain": "a.test" } ] }""", "exactly one of maildirRoot and lmtp")]
    [InlineData("""{ "localDomains": [ { "domain": "a.test", "maildirRoot": "/m", "lmtp": "127.0.0.1:24" } ] }""", "exactly one")]
    [InlineData("""{ "localDomains": [ { "domain": "a.test", "lmtp": "nonsense" } ] }""", "HOST:PORT or unix:/path")]
    [InlineData("""{ "localDomains": [ { "domain": "a.test", "lmtp": "127.0.0.1:24", "catchAll": "root" } ] }""", "users listed")]
    [InlineData("""{ "localDomains": [ { "domain": "a.test", "maildirRoot": "/m" }, { "domain": "A.test", "maildirRoot": "/n" } ] }""", "twice")]
    [InlineData("""{ "localDomains": [ { "domain": "a.test", "maildirRoot": "/m", "users": ["../x"] } ] }""", "mailbox name")]
    [InlineData("""{ "localDomains": [ { "domain": "bad domain", "maildirRoot": "/m" } ] }""", "not a domain")]
    [InlineData("""{ "metrics": { "listen": "localhost" } }""", "metrics.listen")]
    public void Bad_local_domain_and_metrics_options_are_refused(string json, string expected)
    {
        string file = _dir.File("bad.json");
        File.WriteAllText(file, json);
        var e = Assert.Throws<ConfigException>(() => RelaySettings.Validate(RelaySettings.LoadFile(file)));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void Local_domains_and_metrics_are_read_from_the_file()
    {
        string file = _dir.File("good.json");
        File.WriteAllText(file, """
            {
              "localDomains": [
                { "domain": "Local.Test", "maildirRoot": "/var/mail/local", "users": ["Alice"], "catchAll": "alice" },
                { "domain": "lists.test", "lmtp": "unix:/run/dovecot/lmtp", "recipientDelimiter": "-" }
              ],
              "metrics": { "listen": "127.0.0.1:9464", "maxDestinations": 20 }
            }
            """);
        var s = RelaySettings.Validate(RelaySettings.LoadFile(file));
        Assert.Equal(2, s.LocalDelivery.Domains.Count);
        var local = s.LocalDelivery.Find("LOCAL.test")!;
        Assert.Equal(LocalTransport.Maildir, local.Transport);
        Assert.Equal("alice@local.test", local.CatchAll);
        Assert.Contains("alice", local.Users);
        var lists = s.LocalDelivery.Find("lists.test"u8)!;
        Assert.Equal("/run/dovecot/lmtp", lists.Lmtp!.UnixPath);
        Assert.Equal('-', lists.RecipientDelimiter);
        Assert.True(s.LocalDelivery.IsLocal("LISTS.TEST"u8));
        Assert.False(s.LocalDelivery.IsLocal("other.test"u8));
        Assert.Equal("127.0.0.1:9464", s.Metrics!.Listen.ToString());
        Assert.Equal(20, s.Metrics.MaxDestinations);
    }

    [Fact]
    public async Task A_reload_with_a_broken_aliases_file_keeps_the_running_aliases()
    {
        var domain = Domain("local.test", "help: alice\n");
        var settings = LocalDeliverySettings.Validate([domain]);
        var agent = new ReloadableLocalDeliveryAgent(LocalDeliveryAgent.Create(settings, "mx.local.test", TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(5)));

        File.WriteAllText(domain.Aliases!, "help: |/bin/sh\n");
        Assert.Throws<ConfigException>(() => agent.Reload(settings, "mx.local.test", TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(5)));
        var body = Buffer("Subject: hi\r\n\r\nbody\r\n");
        var r1 = Assert.Single(await agent.DeliverAsync(Envelope("s@example.test", "help@local.test"), body, [0]));
        Assert.Equal(250, r1.Reply.Code);
        Assert.Single(Files(Path.Combine(Root, "local.test", "alice"), "new"));

        File.WriteAllText(domain.Aliases!, "help: bob\n");
        agent.Reload(settings, "mx.local.test", TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(5));
        var r2 = Assert.Single(await agent.DeliverAsync(Envelope("s@example.test", "help@local.test"), body, [0]));
        Assert.Equal(250, r2.Reply.Code);
        Assert.Single(Files(Path.Combine(Root, "local.test", "bob"), "new"));
        Assert.Single(Files(Path.Combine(Root, "local.test", "alice"), "new"));
        body.Release();
    }

    private sealed class RecordingForwarder : ILocalForwarder
    {
        public List<(string Sender, string[] Recipients, string Prefix)> Calls { get; } = [];
        public SmtpReply Reply { get; set; } = SmtpReply.Local(250, "2.0.0 queued");

        public Task<SmtpReply> ForwardAsync(ReadOnlyMemory<byte> sender, IReadOnlyList<string> recipients, ReadOnlyMemory<byte> prefix,
            MessageBuffer body, bool eightBit, CancellationToken cancel)
        {
            Calls.Add((Encoding.UTF8.GetString(sender.Span), recipients.ToArray(), Encoding.UTF8.GetString(prefix.Span)));
            return Task.FromResult(Reply);
        }
    }

    public void Dispose() => _dir.Dispose();
}
