using System.Text;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// SMTP smuggling and hostile clients. In DATA only CRLF.CRLF ends a message; any other spelling
/// of an end (and any bare CR or LF) gets the message refused, and nothing, neither the message
/// nor what was smuggled behind it, is queued. Garbage, NUL bytes and endless lines get an error
/// or a disconnect, and the next client is served.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class SmugglingTests(ITestOutputHelper log)
{
    private const string Sender = "sender@example.test";
    private const string Rcpt = "rcpt@example.test";

    private static string Smuggle(string name, string fakeEnd) => string.Concat(
        "From: sender@example.test\r\n",
        $"Message-ID: <carrier-{name}@client.test>\r\n",
        "\r\n",
        "first part",
        fakeEnd,
        "MAIL FROM:<evil@example.test>\r\n",
        "RCPT TO:<victim@example.test>\r\n",
        "DATA\r\n",
        $"Message-ID: <smuggled-{name}@client.test>\r\n",
        "\r\n",
        "smuggled body\r\n",
        ".\r\n");

    [Theory]
    [InlineData("lf-dot-lf", "\n.\n")]
    [InlineData("crlf-dot-cr", "\r\n.\r")]
    [InlineData("lf-dot-crlf", "\n.\r\n")]
    [InlineData("cr-dot-cr", "\r.\r")]
    [InlineData("crlf-dot-lf", "\r\n.\n")]
    [InlineData("cr-dot-crlf", "\r.\r\n")]
    [InlineData("crlf-dot-cr-crlf", "\r\n.\r\r\n")]
    [InlineData("lf-dot-cr", "\n.\r")]
    [InlineData("bare-lf-mid-line", "\nmid line after a bare LF\r\n")]
    [InlineData("bare-cr-mid-line", "\rmid line after a bare CR\r\n")]
    public async Task Data_smuggling_variant_is_refused_and_nothing_is_queued(string name, string fakeEnd)
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using (var client = await h.ConnectEhloAsync())
        {
            await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
            await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);
            await client.ExpectAsync("DATA", 354);
            var replies = new List<SmtpReply>();
            try
            {
                await client.SendRawAsync(Smuggle(name, fakeEnd));
                // Read whatever comes within a short while: the refusal (and close), or nothing yet.
                client.ReplyTimeout = TimeSpan.FromSeconds(3);
                while (await client.TryReadReplyAsync() is { } reply)
                {
                    replies.Add(reply);
                }
            }
            catch (Exception e) when (e is IOException or TimeoutException)
            {
            }

            Assert.True(replies.All(r => r.Code >= 500), $"{name}: every reply must be a refusal: {string.Join(", ", replies)}\n{client.Transcript}");
        }

        await AssertNothingButMarkerAsync(h, $"marker-{name}@client.test");
        Assert.Equal(0, h.Sink.RcptAttempts("victim@example.test"));
    }

    [Theory]
    [InlineData("lf-dot-lf", "\n.\n")]
    [InlineData("crlf-dot-lf", "\r\n.\n")]
    [InlineData("bare-cr", "\r.\r")]
    public async Task Bdat_content_with_bare_line_endings_is_refused_and_the_session_goes_on(string name, string fakeEnd)
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();
        var chunk = Encoding.ASCII.GetBytes(Smuggle("bdat-" + name, fakeEnd));
        await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
        await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);

        await client.SendRawAsync([.. Encoding.ASCII.GetBytes($"BDAT {chunk.Length} LAST\r\n"), .. chunk]);
        var refused = await client.ReadReplyAsync();

        Assert.Equal(554, refused.Code);
        Assert.Equal("5.6.0", refused.EnhancedCode);
        Assert.Equal(250, (await client.CommandAsync("NOOP")).Code);
        await AssertNothingButMarkerAsync(h, $"marker-bdat-{name}@client.test");
        Assert.Equal(0, h.Sink.RcptAttempts("victim@example.test"));
    }

    [Fact]
    public async Task Nul_bytes_in_commands_get_errors_and_the_session_goes_on()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();

        await client.SendRawAsync("NO\0OP\r\nMAIL FROM:<a\0b@example.test>\r\n\0\0\0\r\n");
        var replies = await client.ReadRepliesAsync(3);

        Assert.All(replies, r => Assert.True(r.Code >= 500, $"expected an error, got {r}"));
        await client.SendAcceptedAsync(Sender, [Rcpt], MessageText.Simple("after-nul@client.test"));
        await h.WaitForMessageIdAsync("after-nul@client.test");
    }

    [Fact]
    public async Task One_mebibyte_command_line_gets_500_and_the_session_goes_on()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();

        await client.SendRawAsync(Encoding.ASCII.GetBytes(new string('A', 1024 * 1024) + "\r\n"));
        var reply = await client.ReadReplyAsync();

        Assert.Equal(500, reply.Code);
        Assert.Equal("5.5.6", reply.EnhancedCode);
        await client.SendAcceptedAsync(Sender, [Rcpt], MessageText.Simple("after-long-line@client.test"));
    }

    [Fact]
    public async Task One_mebibyte_data_line_is_refused_after_the_data()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();

        var reply = await client.SendMessageAsync(Sender, [Rcpt], MessageText.Build("Message-ID: <mib-line@client.test>", "", new string('B', 1024 * 1024)));

        Assert.Equal(550, reply.Code);
        Assert.Equal(250, (await client.CommandAsync("NOOP")).Code);
        await AssertNothingButMarkerAsync(h, "marker-mib-line@client.test");
    }

    [Fact]
    public async Task Endless_line_without_crlf_followed_by_a_disconnect_leaves_the_relay_serving()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using (var client = await h.ConnectEhloAsync())
        {
            await client.SendRawAsync(Encoding.ASCII.GetBytes(new string('C', 1024 * 1024)));
        }

        await using var next = await h.ConnectEhloAsync();
        await next.SendAcceptedAsync(Sender, [Rcpt], MessageText.Simple("after-endless@client.test"));
    }

    [Fact]
    public async Task Random_garbage_gets_errors_or_a_disconnect_and_the_next_client_is_served()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        var random = new Random(20240601);
        for (int round = 0; round < 3; round++)
        {
            var garbage = new byte[64 * 1024];
            random.NextBytes(garbage);
            await using var client = await TestSmtpClient.ConnectAndGreetAsync(h.Port);
            IReadOnlyList<SmtpReply> replies;
            try
            {
                await client.SendRawAsync(garbage);
                replies = await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(60));
            }
            catch (Exception e) when (e is IOException or InvalidDataException)
            {
                continue; // reset by the server: a disconnect is a fine answer to garbage
            }

            Assert.All(replies, r => Assert.True(r.Code is 421 or >= 500, $"garbage must only get errors, got {r}"));
        }

        await using var next = await h.ConnectEhloAsync();
        await next.SendAcceptedAsync(Sender, [Rcpt], MessageText.Simple("after-garbage@client.test"));
        await h.WaitForMessageIdAsync("after-garbage@client.test");
    }

    [Fact]
    public async Task Client_dropping_mid_data_or_mid_bdat_leaves_nothing_queued()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using (var client = await h.ConnectEhloAsync())
        {
            await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
            await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);
            await client.ExpectAsync("DATA", 354);
            await client.SendRawAsync("Message-ID: <dropped-data@client.test>\r\n\r\nhalf a message\r\n");
        }

        await using (var client = await h.ConnectEhloAsync())
        {
            await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
            await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);
            await client.SendRawAsync("BDAT 1000 LAST\r\nMessage-ID: <dropped-bdat@client.test>\r\n\r\nnot 1000 bytes");
        }

        await AssertNothingButMarkerAsync(h, "marker-dropped@client.test");
    }

    /// <summary>Sends a marker message, waits for it, and checks for a while that nothing else arrives.</summary>
    private static async Task AssertNothingButMarkerAsync(ReceivingHarness h, string marker)
    {
        await h.DeliveredBeforeMarkerAsync(marker);
        await h.Sink.AssertStaysTrueAsync(() => h.Sink.Messages.Count == 1, TimeSpan.FromSeconds(2), "only the marker message delivered");
        Assert.Equal($"<{marker}>", Assert.Single(h.Sink.Messages).Header("Message-ID"));
    }
}
