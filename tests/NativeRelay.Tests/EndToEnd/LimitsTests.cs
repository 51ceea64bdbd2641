using System.Text;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>Every receiving-side limit, set low in the config, refuses with the right reply and leaves the relay serving.</summary>
[Trait("Category", "EndToEnd")]
public sealed class LimitsTests(ITestOutputHelper log)
{
    private const string Sender = "sender@example.test";
    private const string Rcpt = "rcpt@example.test";

    private static ReceivingHarness.Options With(params (string Key, JsonNode Value)[] limits) => new()
    {
        Configure = c =>
        {
            foreach (var (key, value) in limits)
            {
                ReceivingHarness.Limits(c)[key] = value;
            }
        },
    };

    [Fact]
    public async Task Connections_per_ip_beyond_the_limit_get_421_and_a_slot_frees_when_one_leaves()
    {
        await using var h = await ReceivingHarness.StartAsync(log, With(("maxConnectionsPerIp", 2)));
        var first = await ConnectGreetedAsync(h.Port);
        await using var second = await ConnectGreetedAsync(h.Port);

        await using (var third = await TestSmtpClient.ConnectAsync(h.Port))
        {
            var refused = await third.ReadUntilClosedAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(421, Assert.Single(refused).Code);
        }

        await first.CommandAsync("QUIT");
        await first.DisposeAsync();
        await WaitUntilServedAsync(h.Port);
    }

    [Fact]
    public async Task Total_connections_beyond_the_limit_get_421()
    {
        await using var h = await ReceivingHarness.StartAsync(log, With(("maxConnections", 1)));
        var first = await ConnectGreetedAsync(h.Port);

        await using (var second = await TestSmtpClient.ConnectAsync(h.Port))
        {
            var refused = await second.ReadUntilClosedAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(421, Assert.Single(refused).Code);
        }

        await first.CommandAsync("QUIT");
        await first.DisposeAsync();
        await WaitUntilServedAsync(h.Port);
    }

    [Fact]
    public async Task A_client_that_never_reads_its_replies_is_dropped_and_its_slot_freed()
    {
        await using var h = await ReceivingHarness.StartAsync(log, With(
            ("maxConnectionsPerIp", 1), ("commandTimeoutSeconds", 1), ("maxCommands", 10_000_000)));
        // Take the only slot (greeted, so it really is ours) and from then on never read.
        using var hog = await HogAsync(h.Port);
        var flood = Encoding.ASCII.GetBytes(string.Concat(Enumerable.Repeat("NOOP\r\n", 700_000)));
        using var stopFlood = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var flooding = Task.Run(async () =>
        {
            try
            {
                await hog.SendAsync(flood, System.Net.Sockets.SocketFlags.None, stopFlood.Token);
            }
            catch (Exception e) when (e is System.Net.Sockets.SocketException or OperationCanceledException or ObjectDisposedException)
            {
            }
        });

        // Served again once the relay gives up on the hog (its replies cannot be flushed), and the
        // hog's connection itself is closed rather than left hanging on its unsent replies.
        await using var next = await ConnectGreetedAsync(h.Port, TimeSpan.FromSeconds(90));
        await next.EhloAsync();
        await h.Relay.WaitForOutputAsync("does not read its replies", TimeSpan.FromSeconds(30));
        await h.Relay.WaitForOutputAsync("the peer stopped reading", TimeSpan.FromSeconds(60));
        stopFlood.Cancel();
        await flooding;
    }

    [Fact]
    public async Task Commands_beyond_the_session_limit_get_421_and_close()
    {
        await using var h = await ReceivingHarness.StartAsync(log, With(("maxCommands", 5)));
        await using var client = await h.ConnectEhloAsync();

        for (int i = 0; i < 4; i++)
        {
            await client.ExpectAsync("NOOP", 250);
        }

        await client.SendRawAsync("NOOP\r\n");
        var replies = await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(30));

        var last = Assert.Single(replies);
        Assert.Equal(421, last.Code);
        Assert.Equal("4.7.0", last.EnhancedCode);
    }

    [Fact]
    public async Task Errors_beyond_the_limit_get_421_and_close()
    {
        await using var h = await ReceivingHarness.StartAsync(log, With(("maxErrors", 3)));
        await using var client = await h.ConnectEhloAsync();

        await client.SendRawAsync("FROB\r\nFROB\r\nFROB\r\nNOOP\r\n");
        var replies = await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(30));

        Assert.Equal([500, 500, 500, 421], replies.Select(r => r.Code));
    }

    [Fact]
    public async Task Idle_client_gets_421_at_the_command_timeout()
    {
        await using var h = await ReceivingHarness.StartAsync(log, With(("commandTimeoutSeconds", 1)));
        await using var client = await h.ConnectEhloAsync();

        var replies = await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(60));

        var bye = Assert.Single(replies);
        Assert.Equal(421, bye.Code);
        Assert.Equal("4.4.2", bye.EnhancedCode);
    }

    [Fact]
    public async Task Client_stalling_inside_data_gets_421_at_the_data_timeout_and_nothing_is_queued()
    {
        await using var h = await ReceivingHarness.StartAsync(log, With(("dataTimeoutSeconds", 1)));
        await using (var client = await h.ConnectEhloAsync())
        {
            await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
            await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);
            await client.ExpectAsync("DATA", 354);
            await client.SendRawAsync("Message-ID: <stalled@client.test>\r\n\r\nhalf");

            var replies = await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(60));
            Assert.Equal(421, Assert.Single(replies).Code);
        }

        var all = await h.DeliveredBeforeMarkerAsync("marker-data-timeout@client.test");
        Assert.DoesNotContain(all, m => m.Header("Message-ID") == "<stalled@client.test>");
    }

    [Fact]
    public async Task A_transaction_longer_than_its_time_limit_is_ended_with_421()
    {
        // The command timeout is the default 300 s: only the transaction limit can end this.
        await using var h = await ReceivingHarness.StartAsync(log, With(("transactionTimeoutSeconds", 2)));
        await using var client = await h.ConnectEhloAsync();
        await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);

        var replies = await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(60));

        var bye = Assert.Single(replies);
        Assert.Equal(421, bye.Code);
        Assert.Contains("Transaction time limit", bye.FirstLine);
    }

    [Fact]
    public async Task A_message_trickling_in_past_the_transaction_limit_is_cut_off_and_not_queued()
    {
        // Data keeps coming (well within the 600 s data timeout), but the transaction may last 2 s.
        await using var h = await ReceivingHarness.StartAsync(log, With(("transactionTimeoutSeconds", 2)));
        await using (var client = await h.ConnectEhloAsync())
        {
            await client.ExpectAsync($"MAIL FROM:<{Sender}>", 250);
            await client.ExpectAsync($"RCPT TO:<{Rcpt}>", 250);
            await client.ExpectAsync("DATA", 354);
            await client.SendRawAsync("Message-ID: <trickle@client.test>\r\n\r\n");
            bool closed = false;
            var until = DateTime.UtcNow + TimeSpan.FromSeconds(20);
            while (!closed && DateTime.UtcNow < until)
            {
                await Task.Delay(200);
                try
                {
                    await client.SendRawAsync("another line of a slow message\r\n");
                }
                catch (IOException)
                {
                    closed = true;
                }
            }

            try
            {
                var replies = await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(10));
                Assert.All(replies, r => Assert.Equal(421, r.Code));
            }
            catch (IOException)
            {
                // reset: the server closed with our data unread, which is the point
            }
        }

        var all = await h.DeliveredBeforeMarkerAsync("marker-trickle@client.test");
        Assert.DoesNotContain(all, m => m.Header("Message-ID") == "<trickle@client.test>");
    }

    [Fact]
    public async Task Data_line_over_998_octets_is_refused_after_the_data_and_998_is_accepted()
    {
        await using var h = await ReceivingHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();

        var tooLong = await client.SendMessageAsync(Sender, [Rcpt], MessageText.Build("Message-ID: <line-999@client.test>", "", new string('x', 999)));
        var justRight = await client.SendMessageAsync(Sender, [Rcpt], MessageText.Build("Message-ID: <line-998@client.test>", "", new string('x', 998)));

        Assert.Equal(550, tooLong.Code);
        Assert.StartsWith("5.6.", tooLong.EnhancedCode);
        Assert.Equal(250, justRight.Code);
        await h.WaitForMessageIdAsync("line-998@client.test");
        Assert.DoesNotContain(h.Sink.Messages, m => m.Header("Message-ID") == "<line-999@client.test>");
    }

    [Fact]
    public async Task Configured_line_length_limit_is_applied()
    {
        await using var h = await ReceivingHarness.StartAsync(log, With(("maxLineLength", 100)));
        await using var client = await h.ConnectEhloAsync();

        var reply = await client.SendMessageAsync(Sender, [Rcpt], MessageText.Build("Subject: x", "", new string('x', 101)));

        Assert.Equal(550, reply.Code);
        Assert.Contains("100 octets", reply.FirstLine);
    }

    [Fact]
    public async Task Message_with_too_many_received_headers_is_refused_as_a_loop()
    {
        await using var h = await ReceivingHarness.StartAsync(log, With(("maxReceivedHeaders", 5)));
        await using var client = await h.ConnectEhloAsync();
        string[] Hops(int n) => Enumerable.Range(0, n).Select(i => $"Received: from hop{i}.test by hop{i + 1}.test; Mon, 1 Jan 2024 00:00:00 +0000").ToArray();

        var loop = await client.SendMessageAsync(Sender, [Rcpt], MessageText.Build([.. Hops(5), "Message-ID: <loop@client.test>", "", "x"]));
        var fine = await client.SendMessageAsync(Sender, [Rcpt], MessageText.Build([.. Hops(4), "Message-ID: <no-loop@client.test>", "", "x"]));

        Assert.Equal(554, loop.Code);
        Assert.Equal("5.4.6", loop.EnhancedCode);
        Assert.Equal(250, fine.Code);
        await h.WaitForMessageIdAsync("no-loop@client.test");
    }

    /// <summary>A raw socket with a tiny receive window that got the 220 greeting (retried while the slot is busy).</summary>
    private static async Task<System.Net.Sockets.Socket> HogAsync(int port)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            var socket = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork, System.Net.Sockets.SocketType.Stream, System.Net.Sockets.ProtocolType.Tcp)
            {
                ReceiveBufferSize = 4096,
            };
            await socket.ConnectAsync(new System.Net.IPEndPoint(System.Net.IPAddress.Loopback, port));
            var greeting = new List<byte>();
            var one = new byte[1];
            using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
            {
                try
                {
                    while (await socket.ReceiveAsync(one, System.Net.Sockets.SocketFlags.None, cts.Token) == 1 && one[0] != (byte)'\n')
                    {
                        greeting.Add(one[0]);
                    }
                }
                catch (Exception e) when (e is System.Net.Sockets.SocketException or OperationCanceledException)
                {
                }
            }

            if (greeting.Count >= 3 && greeting[0] == (byte)'2' && greeting[1] == (byte)'2' && greeting[2] == (byte)'0')
            {
                return socket;
            }

            socket.Dispose();
            Assert.True(DateTime.UtcNow < deadline, "could not take the connection slot");
            await Task.Delay(200);
        }
    }

    /// <summary>Connects until greeted with 220: the harness's own readiness probe may still hold a slot for a moment.</summary>
    private static async Task<TestSmtpClient> ConnectGreetedAsync(int port, TimeSpan? within = null)
    {
        var deadline = DateTime.UtcNow + (within ?? TimeSpan.FromSeconds(30));
        while (true)
        {
            var client = await TestSmtpClient.ConnectAsync(port);
            var greeting = await client.TryReadReplyAsync();
            if (greeting?.Code == 220)
            {
                return client;
            }

            await client.DisposeAsync();
            Assert.True(DateTime.UtcNow < deadline, $"no 220 greeting (last: {greeting})");
            await Task.Delay(100);
        }
    }

    private static async Task WaitUntilServedAsync(int port)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (true)
        {
            await using var client = await TestSmtpClient.ConnectAsync(port);
            var greeting = await client.TryReadReplyAsync();
            if (greeting?.Code == 220)
            {
                await client.CommandAsync("QUIT");
                return;
            }

            Assert.True(DateTime.UtcNow < deadline, $"no 220 greeting after a connection slot was freed (last: {greeting})");
            await Task.Delay(100);
        }
    }
}
