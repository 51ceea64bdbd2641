using System.Text;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

// Inside the namespace, so these test helpers win over any same-named type brought in by a global using.
using NativeRelay.Tests.Support;

/// <summary>Messages go through the relay to the next hop (the test sink), intact.</summary>
[Trait("Category", "EndToEnd")]
public sealed class RelayTests(ITestOutputHelper log)
{
    private const string Sender = "sender@example.test";

    [Fact]
    public async Task Message_arrives_byte_identical_after_one_new_received_header()
    {
        await using var h = await RelayHarness.StartAsync(log);
        var original = MessageText.Build(
            "Return-Path: <ignored@example.test>",
            "From: \"Sender, Esq.\" <sender@example.test>",
            "To: rcpt@example.test",
            "Subject: a folded",
            "\tsubject line with  two  spaces and a tab",
            "Message-ID: <identical@client.test>",
            "X-Trailing-Space: value   ",
            "Date: Mon, 1 Jan 2024 00:00:00 +0000",
            "",
            "First body line.",
            "",
            "   indented line",
            "line with trailing spaces   ",
            "tab\tseparated\tvalues",
            new string('x', 990),
            "",
            "",
            "last line");
        string queueId;
        await using (var client = await h.ConnectEhloAsync())
        {
            queueId = await client.SendAcceptedAsync(Sender, ["rcpt@example.test"], original);
        }

        var delivered = await h.WaitForMessageIdAsync("identical@client.test");

        Assert.Matches("^[A-Za-z0-9]+$", queueId);
        string received = DeliveryAssert.IsReceivedPlusOriginal(delivered, original, h.Hostname, queueId);
        Assert.Contains($"id {queueId}", received);
        Assert.Equal(Sender, delivered.MailFrom);
        Assert.Equal(["rcpt@example.test"], delivered.Recipients);
    }

    [Fact]
    public async Task Eight_bit_message_arrives_byte_identical()
    {
        await using var h = await RelayHarness.StartAsync(log);
        var original = Encoding.UTF8.GetBytes(
            "From: sender@example.test\r\nTo: rcpt@example.test\r\nSubject: =?UTF-8?Q?caf=C3=A9?=\r\n" +
            "Message-ID: <eight-bit@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n" +
            "Content-Transfer-Encoding: 8bit\r\n\r\nCafé, Straße, 日本語, emoji 🎉\r\n\u00ff\u00fe bytes\r\n");
        string queueId;
        await using (var client = await h.ConnectEhloAsync())
        {
            queueId = await client.SendAcceptedAsync(Sender, ["rcpt@example.test"], original, "BODY=8BITMIME");
        }

        var delivered = await h.WaitForMessageIdAsync("eight-bit@client.test");

        DeliveryAssert.IsReceivedPlusOriginal(delivered, original, h.Hostname, queueId);
    }

    [Fact]
    public async Task Lines_starting_with_dots_arrive_unstuffed()
    {
        await using var h = await RelayHarness.StartAsync(log);
        var original = MessageText.Build(
            "From: sender@example.test",
            "Message-ID: <dots@client.test>",
            "Subject: dots",
            "",
            ".",
            "..",
            "...",
            ".hidden",
            "..double",
            " .space first",
            "ends with a dot.",
            ".",
            "",
            ". ",
            "last");
        string queueId;
        await using (var client = await h.ConnectEhloAsync())
        {
            queueId = await client.SendAcceptedAsync(Sender, ["rcpt@example.test"], original);
        }

        var delivered = await h.WaitForMessageIdAsync("dots@client.test");

        DeliveryAssert.IsReceivedPlusOriginal(delivered, original, h.Hostname, queueId);
    }

    [Fact]
    public async Task Hundred_messages_over_ten_pipelining_sessions_all_arrive_once()
    {
        const int sessions = 10;
        const int perSession = 10;
        await using var h = await RelayHarness.StartAsync(log);
        var expected = new HashSet<string>();
        for (int s = 0; s < sessions; s++)
        {
            for (int i = 0; i < perSession; i++)
            {
                expected.Add($"<load-{s}-{i}@client.test>");
            }
        }

        await Task.WhenAll(Enumerable.Range(0, sessions).Select(s => RunPipelinedSessionAsync(h, s, perSession)));

        Func<bool> allThere = () => expected.IsSubsetOf(h.Sink.Messages.Select(m => m.Header("Message-ID") ?? ""));
        try
        {
            await h.Sink.WaitUntilAsync(allThere, Waits.Delivery, "all 100 Message-IDs");
        }
        catch (TimeoutException ex)
        {
            var got = h.Sink.Messages.Select(m => m.Header("Message-ID") ?? "").ToHashSet();
            var missing = expected.Where(id => !got.Contains(id)).ToList();
            Assert.Fail($"{missing.Count} of 100 messages did not arrive: {string.Join(", ", missing.Take(20))}\n{ex.Message}\n{h.Relay.Describe()}");
        }

        var ids = h.Sink.Messages.Select(m => m.Header("Message-ID")).ToList();
        var duplicates = ids.GroupBy(id => id).Where(g => g.Count() > 1).Select(g => $"{g.Key} x{g.Count()}").ToList();
        Assert.True(duplicates.Count == 0, $"Messages delivered more than once: {string.Join(", ", duplicates)}");
        Assert.Equal(sessions * perSession, ids.Count);
    }

    [Fact]
    public async Task Several_recipients_arrive_in_one_transaction()
    {
        await using var h = await RelayHarness.StartAsync(log);
        string[] rcpts = ["one@example.test", "two@example.test", "three@example.test"];
        var original = MessageText.Simple("multi-rcpt@client.test");
        string queueId;
        await using (var client = await h.ConnectEhloAsync())
        {
            queueId = await client.SendAcceptedAsync(Sender, rcpts, original);
        }

        var delivered = await h.WaitForMessageIdAsync("multi-rcpt@client.test");

        Assert.Equal(rcpts.Order(), delivered.Recipients.Order());
        Assert.Single(h.Sink.Messages);
        DeliveryAssert.IsReceivedPlusOriginal(delivered, original, h.Hostname, queueId);
    }

    [Fact]
    public async Task Temporary_failure_at_data_is_retried_and_delivered_once()
    {
        await using var h = await RelayHarness.StartAsync(log, sink =>
            sink.DataReply = attempt => attempt.Number == 1 ? "451 4.3.0 Try again later" : "250 2.0.0 Ok");
        var original = MessageText.Simple("retry-4xx@client.test");
        string queueId;
        await using (var client = await h.ConnectEhloAsync())
        {
            queueId = await client.SendAcceptedAsync(Sender, ["rcpt@example.test"], original);
        }

        var delivered = await h.WaitForMessageIdAsync("retry-4xx@client.test");

        Assert.True(h.Sink.DataAttemptCount >= 2, $"Expected a refused first attempt and a retry.\n{h.Describe()}");
        DeliveryAssert.IsReceivedPlusOriginal(delivered, original, h.Hostname, queueId);
        // No proof of absence by polling: watch a few retry periods (retryInitialSeconds is 1).
        await h.Sink.AssertStaysTrueAsync(() => h.Sink.Messages.Count(m => m.MailFrom == Sender) == 1,
            TimeSpan.FromSeconds(5), "exactly one delivery of the retried message");
    }

    [Fact]
    public async Task Refused_connection_defers_and_the_message_is_delivered_when_the_next_hop_is_up()
    {
        using var dir = new TempDir();
        int sinkPort = FreePort.Get();
        var config = RelayConfig.For(dir, $"127.0.0.1:{sinkPort}");
        using var relay = await RelayProcess.StartWithConfigAsync(config, dir, log);
        var original = MessageText.Simple("refused-then-up@client.test");
        string queueId;
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(config.Port))
        {
            await client.EhloAsync();
            queueId = await client.SendAcceptedAsync(Sender, ["rcpt@example.test"], original);
        }

        // Nothing can be polled for here: give the relay time to try the closed port and defer.
        await Task.Delay(TimeSpan.FromSeconds(2));
        Assert.False(relay.HasExited, $"The relay exited while the next hop was down.\n{relay.Describe()}");
        await using var sink = new TestSmtpSink(sinkPort);

        var delivered = await sink.WaitForMessageAsync(m => m.Header("Message-ID") == "<refused-then-up@client.test>", Waits.Delivery);

        DeliveryAssert.IsReceivedPlusOriginal(delivered, original, config.Hostname, queueId);
    }

    [Fact]
    public async Task Permanent_failure_of_one_recipient_delivers_the_others_and_is_not_retried()
    {
        const string bad = "nobody@example.test";
        string[] good = ["good1@example.test", "good2@example.test"];
        await using var h = await RelayHarness.StartAsync(log, sink =>
            sink.RcptReply = address => address == bad ? "550 5.1.1 No such user" : "250 2.1.5 Ok");
        var original = MessageText.Simple("partial-5xx@client.test");
        string queueId;
        await using (var client = await h.ConnectEhloAsync())
        {
            queueId = await client.SendAcceptedAsync(Sender, [good[0], bad, good[1]], original);
        }

        await h.Sink.WaitUntilAsync(
            () => good.All(g => h.Sink.Messages.Any(m => m.MailFrom == Sender && m.Recipients.Contains(g))),
            Waits.Delivery, "the message for both good recipients");

        var originals = h.Sink.Messages.Where(m => m.MailFrom == Sender).ToList();
        Assert.Equal(good.Order(), originals.SelectMany(m => m.Recipients).Order());
        Assert.Equal(1, h.Sink.RcptAttempts(bad));
        DeliveryAssert.IsReceivedPlusOriginal(originals[0], original, h.Hostname, queueId);
        // Watch a few retry periods: the failed recipient must not be tried again, nor the others re-sent.
        await h.Sink.AssertStaysTrueAsync(
            () => h.Sink.RcptAttempts(bad) == 1 && h.Sink.Messages.Count(m => m.MailFrom == Sender) == originals.Count,
            TimeSpan.FromSeconds(6), $"one RCPT for {bad} and no new delivery of the original");
    }

    [Fact]
    public async Task Messages_sent_one_after_another_reuse_outbound_connections()
    {
        const int count = 20;
        await using var h = await RelayHarness.StartAsync(log);
        await using (var client = await h.ConnectEhloAsync())
        {
            for (int i = 0; i < count; i++)
            {
                await client.SendAcceptedAsync(Sender, ["rcpt@example.test"], MessageText.Simple($"reuse-{i}@client.test"));
            }
        }

        await h.Sink.WaitForCountAsync(count, Waits.Delivery);

        Assert.True(h.Sink.ConnectionCount < count,
            $"{count} messages to one destination used {h.Sink.ConnectionCount} connections; expected reuse.\n{h.Sink.Describe()}");
    }

    /// <summary>
    /// One client session sending its messages with RFC 2920 pipelining: each message's data is
    /// written together with the next envelope (MAIL, RCPT, DATA), and the last with QUIT.
    /// </summary>
    private static async Task RunPipelinedSessionAsync(RelayHarness h, int session, int messages)
    {
        await using var client = await h.ConnectEhloAsync();
        string envelope = $"MAIL FROM:<{Sender}>\r\nRCPT TO:<rcpt{session}@example.test>\r\nDATA\r\n";
        await client.SendRawAsync(envelope);
        ExpectCodes(client, await client.ReadRepliesAsync(3), 250, 250, 354);
        for (int i = 0; i < messages; i++)
        {
            bool last = i == messages - 1;
            var data = TestSmtpClient.DotStuff(MessageText.Simple($"load-{session}-{i}@client.test", $"load {session}/{i}"));
            await client.SendRawAsync([.. data, .. Encoding.ASCII.GetBytes(last ? "QUIT\r\n" : envelope)]);
            var replies = await client.ReadRepliesAsync(last ? 2 : 4);
            if (last)
            {
                ExpectCodes(client, replies, 250, 221);
            }
            else
            {
                ExpectCodes(client, replies, 250, 250, 250, 354);
            }
        }
    }

    private static void ExpectCodes(TestSmtpClient client, IReadOnlyList<SmtpReply> replies, params int[] codes)
    {
        Assert.True(replies.Select(r => r.Code).SequenceEqual(codes),
            $"Expected replies {string.Join(",", codes)}, got {string.Join(" / ", replies)}.\n{client.Transcript}");
    }
}
