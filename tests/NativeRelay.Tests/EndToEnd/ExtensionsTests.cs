using System.Text;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>ESMTP extensions of the receiving side: CHUNKING/BDAT (RFC 3030), SIZE (RFC 1870), SMTPUTF8 (RFC 6531), DSN (RFC 3461), 8BITMIME, many recipients.</summary>
[Trait("Category", "EndToEnd")]
public sealed class ExtensionsTests(ITestOutputHelper log)
{
    private const string Sender = "sender@example.test";
    private const string Rcpt = "rcpt@example.test";

    private static IReadOnlyList<string> Keywords(SmtpReply ehlo) =>
        ehlo.Lines.Skip(1).Select(l => l.Split(' ')[0].ToUpperInvariant()).ToList();

    [Fact]
    public async Task Ehlo_advertises_smtputf8_chunking_dsn_and_no_tls_or_auth_without_a_certificate()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectAsync();

        var keywords = Keywords(await client.ExpectAsync("EHLO client.test", 250));

        Assert.Contains("SMTPUTF8", keywords);
        Assert.Contains("CHUNKING", keywords);
        Assert.Contains("DSN", keywords);
        Assert.Contains("8BITMIME", keywords);
        Assert.Contains("PIPELINING", keywords);
        Assert.DoesNotContain("STARTTLS", keywords);
        Assert.DoesNotContain("AUTH", keywords);
        var starttls = await client.CommandAsync("STARTTLS");
        Assert.Equal(502, starttls.Code);
        Assert.Equal(250, (await client.CommandAsync("NOOP")).Code);
    }

    [Fact]
    public async Task Configured_size_limit_is_advertised()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Configure = c => ReceivingHarness.Limits(c)["maxMessageSize"] = 123456 });
        await using var client = await h.ConnectAsync();

        var ehlo = await client.ExpectAsync("EHLO client.test", 250);

        Assert.Contains("SIZE 123456", ehlo.Lines);
    }

    [Fact]
    public async Task Bdat_single_last_chunk_is_delivered_byte_for_byte()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        var original = MessageText.Build("From: a@example.test", "Message-ID: <bdat-one@client.test>", "Subject: bdat", "", ".leading dot stays as is", "..two", "last line");

        await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
        await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);
        await client.SendRawAsync([.. Encoding.ASCII.GetBytes($"BDAT {original.Length} LAST\r\n"), .. original]);
        var queued = await client.ReadReplyAsync();

        Assert.Equal(250, queued.Code);
        var delivered = await h.WaitForMessageIdAsync("bdat-one@client.test");
        DeliveryAssert.IsReceivedPlusOriginal(delivered, original, ReceivingHarness.Hostname, queued.LastWord);
    }

    [Fact]
    public async Task Pipelined_bdat_chunks_in_one_write_are_answered_in_order_and_joined()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        var original = MessageText.Build("Message-ID: <bdat-pipelined@client.test>", "Subject: chunks", "", string.Join("\r\n", Enumerable.Range(0, 200).Select(i => $"line {i}")));
        var parts = new[] { original[..100], original[100..1000], original[1000..] };
        var write = new List<byte>();
        write.AddRange(Encoding.ASCII.GetBytes($"MAIL FROM:<{Sender}>\r\nRCPT TO:<{Rcpt}>\r\n"));
        for (int i = 0; i < parts.Length; i++)
        {
            write.AddRange(Encoding.ASCII.GetBytes($"BDAT {parts[i].Length}{(i == parts.Length - 1 ? " LAST" : "")}\r\n"));
            write.AddRange(parts[i]);
        }

        write.AddRange("QUIT\r\n"u8.ToArray());
        await client.SendRawAsync(write.ToArray());
        var replies = await client.ReadRepliesAsync(6);

        Assert.Equal([250, 250, 250, 250, 250, 221], replies.Select(r => r.Code));
        Assert.Contains("100 octets", replies[2].FirstLine);
        Assert.Contains("queued as", replies[4].FirstLine);
        var delivered = await h.WaitForMessageIdAsync("bdat-pipelined@client.test");
        DeliveryAssert.IsReceivedPlusOriginal(delivered, original, ReceivingHarness.Hostname, replies[4].LastWord);
    }

    [Fact]
    public async Task Bdat_zero_last_ends_the_message()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        var original = MessageText.Simple("bdat-zero@client.test");

        await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
        await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);
        await client.SendRawAsync([.. Encoding.ASCII.GetBytes($"BDAT {original.Length}\r\n"), .. original]);
        Assert.Equal(250, (await client.ReadReplyAsync()).Code);
        var last = await client.CommandAsync("BDAT 0 LAST");

        Assert.Equal(250, last.Code);
        var delivered = await h.WaitForMessageIdAsync("bdat-zero@client.test");
        DeliveryAssert.IsReceivedPlusOriginal(delivered, original, ReceivingHarness.Hostname, last.LastWord);
    }

    [Fact]
    public async Task Data_after_bdat_is_503_and_the_bdat_transaction_can_still_finish()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        var original = MessageText.Simple("bdat-then-data@client.test");

        await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
        await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);
        await client.SendRawAsync([.. Encoding.ASCII.GetBytes($"BDAT {original.Length}\r\n"), .. original]);
        Assert.Equal(250, (await client.ReadReplyAsync()).Code);
        var data = await client.CommandAsync("DATA");
        var last = await client.CommandAsync("BDAT 0 LAST");

        Assert.Equal(503, data.Code);
        Assert.Equal("5.5.1", data.EnhancedCode);
        Assert.Equal(250, last.Code);
        await h.WaitForMessageIdAsync("bdat-then-data@client.test");
    }

    [Fact]
    public async Task Refused_bdat_chunk_is_skipped_by_its_size_and_never_read_as_commands()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        // The chunk holds what would be a whole transaction and a QUIT if it were read as commands.
        string chunk = $"MAIL FROM:<evil@example.test>\r\nRCPT TO:<victim@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\nQUIT\r\n";

        await client.SendRawAsync($"BDAT {Encoding.ASCII.GetByteCount(chunk)} LAST\r\n{chunk}NOOP\r\n");
        var refused = await client.ReadReplyAsync();
        var noop = await client.ReadReplyAsync();

        Assert.Equal(503, refused.Code);
        Assert.Equal(250, noop.Code);
        Assert.Equal(250, (await client.CommandAsync("NOOP")).Code);
        var all = await h.DeliveredBeforeMarkerAsync("marker-refused-bdat@client.test");
        Assert.Single(all);
        Assert.Equal(0, h.Sink.RcptAttempts("victim@example.test"));
    }

    [Fact]
    public async Task Bdat_with_a_size_that_cannot_be_parsed_closes_the_connection()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
        await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);

        await client.SendRawAsync("BDAT lots\r\nRSET\r\n");
        var replies = await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(30));

        var reply = Assert.Single(replies);
        Assert.Equal(501, reply.Code);
    }

    [Fact]
    public async Task Bdat_chunk_larger_than_the_size_limit_is_refused_and_the_connection_closed()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Configure = c => ReceivingHarness.Limits(c)["maxMessageSize"] = 10000 });
        await using var client = await h.ConnectEhloAsync();
        await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
        await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);

        await client.SendRawAsync("BDAT 99999999999 LAST\r\nQUIT\r\n");
        var replies = await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(30));

        var reply = Assert.Single(replies);
        Assert.Equal(552, reply.Code);
        Assert.Equal("5.3.4", reply.EnhancedCode);
    }

    [Fact]
    public async Task Bdat_message_growing_past_the_limit_is_refused_and_the_session_goes_on()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Configure = c => ReceivingHarness.Limits(c)["maxMessageSize"] = 10000 });
        await using var client = await h.ConnectEhloAsync();
        string line = new string('x', 98) + "\r\n";
        string part = string.Concat(Enumerable.Repeat(line, 60)); // 6000 octets
        await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
        await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);

        await client.SendRawAsync($"BDAT 6000\r\n{part}BDAT 6000\r\n{part}BDAT 6000 LAST\r\n{part}");
        var replies = await client.ReadRepliesAsync(3);

        Assert.Equal(250, replies[0].Code);
        Assert.Equal(552, replies[1].Code);
        Assert.Equal("5.3.4", replies[1].EnhancedCode);
        Assert.Equal(552, replies[2].Code);
        var queued = await client.SendAcceptedAsync(Sender, [Rcpt], MessageText.Simple("after-big-bdat@client.test"));
        await h.WaitForMessageIdAsync("after-big-bdat@client.test");
        Assert.Single(h.Sink.Messages);
    }

    [Fact]
    public async Task Mail_with_size_over_the_limit_gets_552_and_a_body_over_it_is_refused_after_the_data()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Configure = c => ReceivingHarness.Limits(c)["maxMessageSize"] = 10000 });
        await using var client = await h.ConnectEhloAsync();

        var mail = await client.CommandAsync($"MAIL FROM:<{Sender}> SIZE=10001");
        Assert.Equal(552, mail.Code);
        Assert.Equal("5.3.4", mail.EnhancedCode);
        await client.ExpectAsync($"MAIL FROM:<{Sender}> SIZE=9000", 250);
        await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);
        await client.ExpectAsync("DATA", 354);
        var big = MessageText.Build(["Message-ID: <too-big@client.test>", "", .. Enumerable.Repeat(new string('y', 100), 200)]);
        await client.SendRawAsync(TestSmtpClient.DotStuff(big));
        var refused = await client.ReadReplyAsync();

        Assert.Equal(552, refused.Code);
        Assert.Equal("5.3.4", refused.EnhancedCode);
        await client.SendAcceptedAsync(Sender, [Rcpt], MessageText.Simple("after-too-big@client.test"));
        await h.WaitForMessageIdAsync("after-too-big@client.test");
        Assert.DoesNotContain(h.Sink.Messages, m => m.Header("Message-ID") == "<too-big@client.test>");
    }

    [Fact]
    public async Task Smtputf8_addresses_are_accepted_only_with_the_parameter()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();

        var without = await client.CommandAsync("MAIL FROM:<jörg@bücher.example>");
        Assert.Equal(553, without.Code);
        Assert.Equal("5.6.7", without.EnhancedCode);

        await client.SendRawAsync(Encoding.UTF8.GetBytes("MAIL FROM:<jörg@bücher.example> SMTPUTF8\r\nRCPT TO:<δοκιμή@παράδειγμα.test>\r\nDATA\r\n"));
        var replies = await client.ReadRepliesAsync(3);
        Assert.Equal([250, 250, 354], replies.Select(r => r.Code));
        await client.SendRawAsync(Encoding.UTF8.GetBytes("Subject: Grüße\r\nMessage-ID: <utf8@client.test>\r\n\r\nΓειά σου\r\n.\r\n"));
        Assert.Equal(250, (await client.ReadReplyAsync()).Code);
        await client.ExpectAsync("MAIL FROM:<ascii@example.test>", 250);
        await client.SendRawAsync(Encoding.UTF8.GetBytes("RCPT TO:<δοκιμή@παράδειγμα.test>\r\n"));
        var utf8Rcpt = await client.ReadReplyAsync();
        Assert.Equal(553, utf8Rcpt.Code);
        await client.ExpectAsync("RSET", 250);
        await client.SendRawAsync(Encoding.UTF8.GetBytes("MAIL FROM:<jörg@bücher.example>\r\n"));
        Assert.Equal(553, (await client.ReadReplyAsync()).Code);
    }

    [Fact]
    public async Task Dsn_parameters_are_accepted_and_bad_ones_refused()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();

        Assert.Equal(501, (await client.CommandAsync($"MAIL FROM:<{Sender}> RET=SOME")).Code);
        Assert.Equal(501, (await client.CommandAsync($"MAIL FROM:<{Sender}> RET=FULL RET=HDRS")).Code);
        Assert.Equal(501, (await client.CommandAsync($"MAIL FROM:<{Sender}> ENVID=bad+zz")).Code);
        await client.ExpectAsync($"MAIL FROM:<{Sender}> RET=HDRS ENVID=abc+2B123", 250);
        Assert.Equal(501, (await client.CommandAsync($"RCPT TO:<{Rcpt}> NOTIFY=NEVER,DELAY")).Code);
        Assert.Equal(501, (await client.CommandAsync($"RCPT TO:<{Rcpt}> ORCPT=bob@example.test")).Code);
        Assert.Equal(555, (await client.CommandAsync($"RCPT TO:<{Rcpt}> FOO=BAR")).Code);
        await client.ExpectAsync($"RCPT TO:<{Rcpt}> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;rcpt+2Bx@example.test", 250);
        await client.ExpectAsync("RCPT TO:<second@example.test> NOTIFY=NEVER", 250);
        await client.ExpectAsync("DATA", 354);
        await client.SendRawAsync(TestSmtpClient.DotStuff(MessageText.Simple("dsn@client.test")));

        Assert.Equal(250, (await client.ReadReplyAsync()).Code);
        var delivered = await h.WaitForMessageIdAsync("dsn@client.test");
        Assert.Equal(["rcpt@example.test", "second@example.test"], delivered.Recipients.Order());
    }

    [Fact]
    public async Task Dsn_parameters_are_honoured_when_the_relay_bounces()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new()
        {
            ConfigureSink = sink => sink.RcptReply = a => a.StartsWith("doomed", StringComparison.Ordinal) ? "550 5.1.1 no such user here" : "250 2.1.5 Ok",
        });
        await using var client = await h.ConnectEhloAsync();
        var never = MessageText.Build("Message-ID: <dsn-never@client.test>", "Subject: never", "", "body");
        var headersOnly = MessageText.Build("Message-ID: <dsn-hdrs@client.test>", "Subject: headers only", "", "SECRET BODY LINE");

        await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
        await client.ExpectAsync("RCPT TO:<doomed-never@example.test> NOTIFY=NEVER", 250);
        await client.ExpectAsync("DATA", 354);
        await client.SendRawAsync(TestSmtpClient.DotStuff(never));
        Assert.Equal(250, (await client.ReadReplyAsync()).Code);
        await client.ExpectAsync($"MAIL FROM:<{Sender}> RET=HDRS ENVID=envid+2Bhdrs", 250);
        await client.ExpectAsync("RCPT TO:<doomed-hdrs@example.test> NOTIFY=FAILURE ORCPT=rfc822;original+2Bx@example.test", 250);
        await client.ExpectAsync("DATA", 354);
        await client.SendRawAsync(TestSmtpClient.DotStuff(headersOnly));
        Assert.Equal(250, (await client.ReadReplyAsync()).Code);

        var bounce = await h.Sink.WaitForMessageAsync(m => m.MailFrom == "" && m.DataText.Contains("dsn-hdrs@client.test", StringComparison.Ordinal),
            Waits.Delivery, "the bounce of the RET=HDRS message");
        Assert.Equal([Sender], bounce.Recipients);
        Assert.Contains("Original-Envelope-Id: envid+hdrs", bounce.DataText, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("rfc822;original+x@example.test", bounce.DataText);
        Assert.DoesNotContain("SECRET BODY LINE", bounce.DataText);
        // NOTIFY=NEVER: no bounce for the other one, although it failed the same way.
        await h.Sink.AssertStaysTrueAsync(() => !h.Sink.Messages.Any(m => m.MailFrom == "" && m.DataText.Contains("dsn-never@client.test", StringComparison.Ordinal)),
            TimeSpan.FromSeconds(3), "no bounce for NOTIFY=NEVER");
        Assert.True(h.Sink.RcptAttempts("doomed-never@example.test") >= 1, "the NOTIFY=NEVER message was attempted");
    }

    [Fact]
    public async Task Body_8bitmime_content_is_delivered_unchanged()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        var original = Encoding.Latin1.GetBytes("Message-ID: <8bit@client.test>\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nBl\u00e5b\u00e6rgr\u00f8d \u00fc\u00df\r\n");

        var queued = await client.SendAcceptedAsync(Sender, [Rcpt], original, "BODY=8BITMIME");

        var delivered = await h.WaitForMessageIdAsync("8bit@client.test");
        DeliveryAssert.IsReceivedPlusOriginal(delivered, original, ReceivingHarness.Hostname, queued);
        Assert.Equal(501, (await client.CommandAsync($"MAIL FROM:<{Sender}> BODY=9BIT")).Code);
    }

    [Fact]
    public async Task More_than_100_recipients_are_accepted()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        var recipients = Enumerable.Range(0, 150).Select(i => $"r{i}@example.test").ToList();

        var commands = new List<string> { $"MAIL FROM:<{Sender}>" };
        commands.AddRange(recipients.Select(r => $"RCPT TO:<{r}>"));
        commands.Add("DATA");
        var replies = await client.PipelineAsync(commands.ToArray());
        Assert.All(replies.Take(151), r => Assert.Equal(250, r.Code));
        Assert.Equal(354, replies[^1].Code);
        await client.SendRawAsync(TestSmtpClient.DotStuff(MessageText.Simple("many@client.test")));
        Assert.Equal(250, (await client.ReadReplyAsync()).Code);

        await h.Sink.WaitUntilAsync(() => h.Sink.Messages.Where(m => m.Header("Message-ID") == "<many@client.test>").SelectMany(m => m.Recipients).Distinct().Count() == 150,
            Waits.Delivery, "all 150 recipients");
    }

    [Fact]
    public async Task Recipients_beyond_the_limit_get_452_and_the_transaction_goes_on()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Configure = c => ReceivingHarness.Limits(c)["maxRecipients"] = 3 });
        await using var client = await h.ConnectEhloAsync();

        await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
        for (int i = 0; i < 3; i++)
        {
            await client.ExpectAsync($"RCPT TO:<r{i}@example.test>", 250);
        }

        var fourth = await client.CommandAsync("RCPT TO:<r3@example.test>");
        Assert.Equal(452, fourth.Code);
        Assert.Equal("4.5.3", fourth.EnhancedCode);
        await client.ExpectAsync("DATA", 354);
        await client.SendRawAsync(TestSmtpClient.DotStuff(MessageText.Simple("limited@client.test")));
        Assert.Equal(250, (await client.ReadReplyAsync()).Code);

        IEnumerable<string> Delivered() => h.Sink.Messages.Where(m => m.Header("Message-ID") == "<limited@client.test>").SelectMany(m => m.Recipients);
        await h.Sink.WaitUntilAsync(() => Delivered().Count() >= 3, Waits.Delivery, "the three accepted recipients");
        Assert.Equal(["r0@example.test", "r1@example.test", "r2@example.test"], Delivered().Order());
    }
}
