using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

// Inside the namespace, so these test helpers win over any same-named type brought in by a global using.
using NativeRelay.Tests.Support;

/// <summary>The relay's SMTP server as a client sees it (RFC 5321, 2920, 1870, 6152, 2034).</summary>
[Trait("Category", "EndToEnd")]
public sealed class SmtpProtocolTests(ITestOutputHelper log)
{
    private const string Sender = "sender@example.test";
    private const string Rcpt = "rcpt@example.test";

    [Fact]
    public async Task Greeting_is_220_with_the_hostname()
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using var client = await TestSmtpClient.ConnectAsync(h.Port);

        var greeting = await client.ReadReplyAsync();

        Assert.Equal(220, greeting.Code);
        Assert.Equal(["relay.test ESMTP NativeRelay"], greeting.Lines);
    }

    [Fact]
    public async Task Ehlo_advertises_pipelining_8bitmime_size_and_enhanced_status_codes()
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using var client = await h.ConnectAsync();

        var ehlo = await client.CommandAsync("EHLO client.test");

        Assert.Equal(250, ehlo.Code);
        Assert.True(ehlo.Lines.Count > 1, $"EHLO must be a multi-line reply listing extensions: {ehlo}");
        Assert.StartsWith("relay.test", ehlo.Lines[0]);
        var keywords = ehlo.Lines.Skip(1).Select(l => l.Split(' ')[0].ToUpperInvariant()).ToList();
        Assert.Contains("PIPELINING", keywords);
        Assert.Contains("8BITMIME", keywords);
        Assert.Contains("ENHANCEDSTATUSCODES", keywords);
        string size = Assert.Single(ehlo.Lines.Skip(1), l => l.StartsWith("SIZE", StringComparison.OrdinalIgnoreCase));
        Assert.Matches(@"^SIZE [1-9][0-9]*$", size);
    }

    [Fact]
    public async Task Helo_is_accepted()
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using var client = await h.ConnectAsync();

        var helo = await client.CommandAsync("HELO client.test");

        Assert.Equal(250, helo.Code);
    }

    [Fact]
    public async Task Full_transaction_is_queued_delivered_and_quit_closes()
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        var message = MessageText.Simple("full-transaction@client.test");

        var mail = await client.CommandAsync($"MAIL FROM:<{Sender}>");
        var rcpt = await client.CommandAsync($"RCPT TO:<{Rcpt}>");
        var data = await client.CommandAsync("DATA");
        await client.SendRawAsync(TestSmtpClient.DotStuff(message));
        var queued = await client.ReadReplyAsync();
        var quit = await client.CommandAsync("QUIT");
        var afterQuit = await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(30));

        AssertReply(mail, 250, "2.1.0");
        AssertReply(rcpt, 250, "2.1.5");
        Assert.Equal(354, data.Code);
        AssertReply(queued, 250, "2.0.0");
        Assert.Matches(@"queued as [A-Za-z0-9]+$", queued.Lines[^1]);
        AssertReply(quit, 221, "2.0.0");
        Assert.Empty(afterQuit);
        var delivered = await h.WaitForMessageIdAsync("full-transaction@client.test");
        Assert.Equal(Sender, delivered.MailFrom);
        Assert.Equal([Rcpt], delivered.Recipients);
    }

    [Theory]
    [InlineData("", "RCPT TO:<rcpt@example.test>")]
    [InlineData("", "DATA")]
    [InlineData("MAIL FROM:<sender@example.test>", "DATA")]
    [InlineData("MAIL FROM:<sender@example.test>", "MAIL FROM:<sender@example.test>")]
    public async Task Commands_out_of_sequence_get_503_and_the_session_continues(string setup, string command)
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        if (setup.Length > 0)
        {
            await client.ExpectAsync(setup, 250);
        }

        var reply = await client.CommandAsync(command);

        AssertReply(reply, 503, "5.5.1");
        AssertReply(await client.CommandAsync("NOOP"), 250, "2.0.0");
    }

    [Theory]
    [InlineData("FROB")]
    [InlineData("XYZZY some arguments")]
    public async Task Unknown_command_gets_500_and_the_session_continues(string command)
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();

        var reply = await client.CommandAsync(command);

        AssertReply(reply, 500, "5.5.2");
        AssertReply(await client.CommandAsync("NOOP"), 250, "2.0.0");
    }

    [Theory]
    [InlineData("", "MAIL FROM:bad")]
    [InlineData("", "MAIL FROM:<unterminated@example.test")]
    [InlineData("", "MAIL")]
    [InlineData("MAIL FROM:<sender@example.test>", "RCPT TO:bad")]
    public async Task Syntax_error_in_arguments_gets_501_and_the_session_continues(string setup, string command)
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        if (setup.Length > 0)
        {
            await client.ExpectAsync(setup, 250);
        }

        var reply = await client.CommandAsync(command);

        Assert.True(reply.Code == 501, $"'{command}': expected 501, got {reply}");
        Assert.True(reply.EnhancedCode?.StartsWith("5.", StringComparison.Ordinal) == true, $"'{command}': expected a 5.x.x enhanced code, got {reply}");
        AssertReply(await client.CommandAsync("NOOP"), 250, "2.0.0");
    }

    [Theory]
    [InlineData(513)]
    [InlineData(600)]
    [InlineData(20_000)]
    public async Task Command_line_longer_than_512_octets_gets_500_and_the_session_continues(int octetsWithCrlf)
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        string line = "NOOP " + new string('x', octetsWithCrlf - 2 - 5);

        var reply = await client.CommandAsync(line);

        AssertReply(reply, 500, "5.5.6");
        AssertReply(await client.CommandAsync("NOOP"), 250, "2.0.0");
        await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
    }

    [Fact]
    public async Task Command_line_of_exactly_512_octets_is_accepted()
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        string line = "NOOP " + new string('x', 512 - 2 - 5);

        var reply = await client.CommandAsync(line);

        AssertReply(reply, 250, "2.0.0");
    }

    [Fact]
    public async Task Vrfy_gets_252_help_214_noop_250()
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();

        var vrfy = await client.CommandAsync("VRFY postmaster");
        var help = await client.CommandAsync("HELP");
        var noop = await client.CommandAsync("NOOP");

        Assert.Equal(252, vrfy.Code);
        Assert.Equal(214, help.Code);
        AssertReply(noop, 250, "2.0.0");
    }

    [Fact]
    public async Task Rset_clears_the_transaction()
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
        await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);

        var rset = await client.CommandAsync("RSET");
        var data = await client.CommandAsync("DATA");
        var rcpt = await client.CommandAsync($"RCPT TO:<{Rcpt}>");

        AssertReply(rset, 250, "2.0.0");
        AssertReply(data, 503, "5.5.1");
        AssertReply(rcpt, 503, "5.5.1");
        var message = MessageText.Simple("after-rset@client.test");
        await client.SendAcceptedAsync(Sender, [Rcpt], message);
        var delivered = await h.WaitForMessageIdAsync("after-rset@client.test");
        Assert.Equal([Rcpt], delivered.Recipients);
    }

    [Fact]
    public async Task Pipelined_envelope_in_one_write_is_answered_in_order()
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();

        var replies = await client.PipelineAsync(
            $"MAIL FROM:<{Sender}>", "RCPT TO:<a@example.test>", "RCPT TO:<b@example.test>", "DATA");
        Assert.Equal([250, 250, 250, 354], replies.Select(r => r.Code));
        // The message and QUIT go in one write as well.
        var message = MessageText.Simple("pipelined@client.test");
        await client.SendRawAsync([.. TestSmtpClient.DotStuff(message), .. "QUIT\r\n"u8]);
        var end = await client.ReadRepliesAsync(2);

        AssertReply(end[0], 250, "2.0.0");
        AssertReply(end[1], 221, "2.0.0");
        var delivered = await h.WaitForMessageIdAsync("pipelined@client.test");
        Assert.Equal(["a@example.test", "b@example.test"], delivered.Recipients.Order());
    }

    [Fact]
    public async Task Pipelined_errors_are_answered_in_order()
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();

        var replies = await client.PipelineAsync(
            "RCPT TO:<early@example.test>", $"MAIL FROM:<{Sender}>", "FROB", "RCPT TO:<a@example.test>", "NOOP", "RSET", "DATA");

        Assert.Equal([503, 250, 500, 250, 250, 250, 503], replies.Select(r => r.Code));
    }

    /// <summary>
    /// SMTP smuggling: a bare LF or bare CR in DATA must not end the data, and a message containing
    /// one is refused (5xx, or the connection is closed), so neither the message nor anything
    /// smuggled after a fake terminator is ever delivered.
    /// </summary>
    [Theory]
    [InlineData("lf-dot-lf", "\n.\n")]
    [InlineData("crlf-dot-cr", "\r\n.\r")]
    [InlineData("lf-dot-crlf", "\n.\r\n")]
    [InlineData("cr-dot-cr", "\r.\r")]
    [InlineData("bare-lf-mid-message", "\nmore text after a bare LF\r\n")]
    [InlineData("bare-cr-mid-message", "\rmore text after a bare CR\r\n")]
    public async Task Bare_lf_or_cr_in_data_is_refused_and_nothing_is_delivered(string name, string fakeEnd)
    {
        await using var h = await RelayHarness.StartAsync(log);
        var smuggled = string.Concat(
            "From: sender@example.test\r\n",
            $"Message-ID: <smuggle-{name}@client.test>\r\n",
            "Subject: smuggling\r\n",
            "\r\n",
            "first part",
            fakeEnd,
            "MAIL FROM:<evil@example.test>\r\n",
            "RCPT TO:<victim@example.test>\r\n",
            "DATA\r\n",
            $"Message-ID: <smuggled-{name}@client.test>\r\n",
            "Subject: smuggled\r\n",
            "\r\n",
            "smuggled body\r\n",
            ".\r\n");
        await using (var client = await h.ConnectEhloAsync())
        {
            await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
            await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);
            await client.ExpectAsync("DATA", 354);

            SmtpReply? reply;
            try
            {
                await client.SendRawAsync(smuggled);
                reply = await client.TryReadReplyAsync();
            }
            catch (IOException)
            {
                reply = null; // the server closed (or reset) the connection
            }

            Assert.True(reply is null || (reply.Code >= 500 && reply.Code <= 599),
                $"Data with a bare LF/CR ({name}) must get a 5xx or a closed connection, got {reply}.\n{client.Transcript}");
        }

        // A clean message afterwards, on a new connection, must be the only one delivered.
        await using (var client = await h.ConnectEhloAsync())
        {
            await client.SendAcceptedAsync(Sender, [Rcpt], MessageText.Simple($"clean-{name}@client.test"));
            await client.CommandAsync("QUIT");
        }

        await h.WaitForMessageIdAsync($"clean-{name}@client.test");
        var messages = h.Sink.Messages;
        Assert.True(messages.Count == 1, $"Only the clean message may be delivered, got {messages.Count}.\n{h.Sink.Describe()}");
        Assert.Equal(0, h.Sink.RcptAttempts("victim@example.test"));
    }

    [Fact]
    public async Task Server_survives_a_client_that_disconnects_mid_data()
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using (var client = await h.ConnectEhloAsync())
        {
            await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
            await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);
            await client.ExpectAsync("DATA", 354);
            await client.SendRawAsync("Message-ID: <half@client.test>\r\n\r\nhalf a message");
        }

        await using (var client = await h.ConnectEhloAsync())
        {
            await client.SendAcceptedAsync(Sender, [Rcpt], MessageText.Simple("whole@client.test"));
        }

        await h.WaitForMessageIdAsync("whole@client.test");
        Assert.DoesNotContain(h.Sink.Messages, m => m.Header("Message-ID") == "<half@client.test>");
    }

    private static void AssertReply(SmtpReply reply, int code, string enhanced)
    {
        Assert.True(reply.Code == code && reply.EnhancedCode == enhanced, $"Expected {code} {enhanced}, got {reply}");
    }
}
