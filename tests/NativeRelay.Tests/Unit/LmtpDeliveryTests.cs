using System.Text;
using NativeRelay.Config;
using NativeRelay.Local;
using NativeRelay.Tests.Support;
using static NativeRelay.Tests.Support.LocalDeliveryFixtures;

namespace NativeRelay.Tests.Unit;

/// <summary>The LMTP client and LMTP local domains against an LMTP server the test runs (TCP on 127.0.0.1 and a Unix socket).</summary>
public sealed class LmtpDeliveryTests : IDisposable
{
    private readonly TempDir _dir = new("nativerelay-lmtp");

    private const string Message = "From: s@example.test\r\nSubject: lmtp\r\n\r\n.leading dot\r\nbody\r\n";

    private static string PerRecipient(string rcpt) => rcpt switch
    {
        var r when r.StartsWith("gone@") => "550 5.1.1 <gone@local.test> mailbox unknown",
        var r when r.StartsWith("full@") => "452 4.2.2 <full@local.test> mailbox full",
        var r => $"250 2.0.0 <{r}> saved",
    };

    [Theory]
    [InlineData(true, true)]
    [InlineData(true, false)]
    [InlineData(false, true)]
    public async Task Each_recipient_gets_its_own_reply_after_the_data(bool tcp, bool pipelining)
    {
        await using var server = tcp ? TestLmtpServer.StartTcp() : TestLmtpServer.StartUnix(_dir.File("lmtp.sock"));
        server.OfferPipelining = pipelining;
        server.DataReply = PerRecipient;
        var agent = Agent(null, new LocalDomainOptions { Domain = "local.test", Lmtp = server.Endpoint });
        var envelope = Envelope("s@example.test", "ok@local.test", "gone@local.test", "full@local.test");
        var body = Buffer(Message);

        var results = await agent.DeliverAsync(envelope, body, All(envelope));

        Assert.Equal([250, 550, 452], results.Select(r => r.Reply.Code));
        Assert.Equal([0, 1, 2], results.Select(r => r.RecipientIndex));
        Assert.Contains("mailbox unknown", results[1].Reply.Text);
        Assert.Contains("mailbox full", results[2].Reply.Text);
        var t = Assert.Single(server.Transactions);
        Assert.Equal("mx.local.test", t.LhloName);
        Assert.Equal("s@example.test", t.MailFrom);
        Assert.Equal(["ok@local.test", "gone@local.test", "full@local.test"], t.AcceptedRecipients);
        // Dot-stuffed on the wire, unstuffed by the server: the bytes arrive as they were.
        Assert.Equal(Message, t.DataText);
        body.Release();
    }

    [Fact]
    public async Task A_rcpt_refusal_is_that_recipients_result_and_the_rest_are_delivered()
    {
        await using var server = TestLmtpServer.StartTcp();
        server.RcptReply = r => r.StartsWith("nouser@") ? "550 5.1.1 no such user" : "250 2.1.5 OK";
        var agent = Agent(null, new LocalDomainOptions { Domain = "local.test", Lmtp = server.Endpoint });
        var envelope = Envelope("s@example.test", "nouser@local.test", "yes@local.test");
        var body = Buffer(Message);

        var results = await agent.DeliverAsync(envelope, body, All(envelope));

        Assert.Equal([550, 250], results.Select(r => r.Reply.Code));
        Assert.Equal(["yes@local.test"], Assert.Single(server.Transactions).AcceptedRecipients);
        body.Release();
    }

    [Fact]
    public async Task A_connection_lost_after_some_replies_keeps_those_and_defers_the_rest()
    {
        await using var server = TestLmtpServer.StartTcp();
        server.DropAfterDataReplies = 1;
        var agent = Agent(null, new LocalDomainOptions { Domain = "local.test", Lmtp = server.Endpoint });
        var envelope = Envelope("s@example.test", "first@local.test", "second@local.test");
        var body = Buffer(Message);

        var results = await agent.DeliverAsync(envelope, body, All(envelope));

        Assert.Equal(250, results[0].Reply.Code);
        Assert.Equal(421, results[1].Reply.Code);
        Assert.True(results[1].Reply.IsTransient);
        body.Release();
    }

    [Fact]
    public async Task No_server_listening_is_a_temporary_failure_for_every_recipient()
    {
        int port = FreePort.Get();
        var agent = Agent(null, new LocalDomainOptions { Domain = "local.test", Lmtp = $"127.0.0.1:{port}" });
        var envelope = Envelope("s@example.test", "a@local.test", "b@local.test");
        var body = Buffer(Message);

        var results = await agent.DeliverAsync(envelope, body, All(envelope));

        Assert.All(results, r => Assert.True(r.Reply.IsTransient, r.ToString()));
        Assert.Contains("4.4.1", results[0].Reply.Text);
        body.Release();
    }

    [Fact]
    public async Task Only_the_requested_recipient_indexes_are_delivered_and_aliases_apply_before_lmtp()
    {
        await using var server = TestLmtpServer.StartTcp();
        string aliases = _dir.File("aliases");
        File.WriteAllText(aliases, "support: ann, ben\n");
        var agent = Agent(null, new LocalDomainOptions { Domain = "local.test", Lmtp = server.Endpoint, Aliases = aliases });
        var envelope = Envelope("", "done@local.test", "support@local.test");
        var body = Buffer(Message);

        var results = await agent.DeliverAsync(envelope, body, [1]);

        var r = Assert.Single(results);
        Assert.Equal(1, r.RecipientIndex);
        Assert.Equal(250, r.Reply.Code);
        var t = Assert.Single(server.Transactions);
        Assert.Equal("", t.MailFrom);
        Assert.Equal(["ann@local.test", "ben@local.test"], t.AcceptedRecipients);
        body.Release();
    }

    [Fact]
    public async Task The_client_works_on_its_own_and_reuses_the_connection()
    {
        await using var server = TestLmtpServer.StartTcp();
        server.DataReply = PerRecipient;
        var endpoint = MailEndpoint.Parse(server.Endpoint, "test");
        await using var client = await LmtpClient.ConnectAsync(endpoint, "me.test", TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(30));
        Assert.True(client.Pipelining);
        var body = Buffer(Message);

        var first = await client.SendAsync("a@example.test"u8.ToArray(), ["x@local.test", "full@local.test"], body, eightBit: false);
        var second = await client.SendAsync("b@example.test"u8.ToArray(), ["gone@local.test"], body, eightBit: false);
        await client.QuitAsync();

        Assert.Equal([250, 452], first.Select(r => r.Code));
        Assert.Equal([550], second.Select(r => r.Code));
        Assert.Equal(1, server.Connections);
        Assert.Equal(2, server.Transactions.Count);
        Assert.Contains("QUIT", server.Log);
        body.Release();
    }

    public void Dispose() => _dir.Dispose();
}
