using System.Net;
using System.Net.Sockets;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

// Inside the namespace, so these test helpers win over any same-named type brought in by a global using.
using NativeRelay.Tests.Support;

/// <summary>The command line of the published binary: verbs, flags, usage errors, signals.</summary>
[Trait("Category", "EndToEnd")]
public sealed class CliTests(ITestOutputHelper log)
{
    [Fact]
    public async Task Version_prints_one_line_and_exits_zero()
    {
        using var dir = new TempDir();

        var result = await RelayProcess.RunToExitAsync(["--version"], dir.Path, log);

        Assert.True(result.ExitCode == 0, $"--version exited with {result.ExitCode}.\n{result.Output}");
        var line = Assert.Single(result.StdoutLines);
        Assert.Matches(@"^nativerelay \S+$", line);
        Assert.Empty(result.StderrLines);
    }

    [Theory]
    [InlineData("--bogus")]
    [InlineData("--listen nonsense")]
    [InlineData("--listen 127.0.0.1:99999")]
    [InlineData("--listen")]
    [InlineData("--hostname --bogus")]
    [InlineData("--listen=127.0.0.1:2525 --listen --relay-to")]
    public async Task Bad_serve_arguments_print_one_error_line_and_exit_2(string badArguments)
    {
        using var dir = new TempDir();
        string[] args = ["serve", "--spool", dir.Spool, .. badArguments.Split(' ')];

        var result = await RelayProcess.RunToExitAsync(args, dir.Path, log);

        AssertUsageError(result);
    }

    [Theory]
    [InlineData("{ \"hostname\": ")]
    [InlineData("this is not json")]
    [InlineData("{ \"hostname\": \"relay.test\", \"noSuchKey\": 1 }")]
    [InlineData("{ \"delivery\": { \"retryInitialSecs\": 1 } }")]
    public async Task Bad_config_file_prints_one_error_line_and_exits_2(string content)
    {
        using var dir = new TempDir();
        string path = dir.File("bad.json");
        File.WriteAllText(path, content);

        var result = await RelayProcess.RunToExitAsync(["serve", "--spool", dir.Spool, "--config", path], dir.Path, log);

        AssertUsageError(result);
    }

    [Fact]
    public async Task Missing_config_file_prints_one_error_line_and_exits_2()
    {
        using var dir = new TempDir();

        var result = await RelayProcess.RunToExitAsync(["serve", "--spool", dir.Spool, "--config", dir.File("absent.json")], dir.Path, log);

        AssertUsageError(result);
    }

    [Fact]
    public async Task Serve_flags_set_listeners_hostname_spool_and_route()
    {
        using var dir = new TempDir();
        await using var sink = new TestSmtpSink();
        int port1 = FreePort.Get();
        int port2 = FreePort.Get();
        string[] args =
        [
            "--listen", $"127.0.0.1:{port1}", "--listen", $"127.0.0.1:{port2}",
            "--spool", dir.Spool, "--hostname", "cli.test", "--relay-to", sink.Endpoint,
        ];

        using var relay = await RelayProcess.StartServeAsync(args, port1, dir.Path, log);
        await relay.WaitForOutputAsync($"listening on 127.0.0.1:{port1}", Waits.Exit);
        await relay.WaitUntilGreetingAsync(port2, Waits.Exit);

        await using var client = await TestSmtpClient.ConnectAsync(port2);
        var greeting = await client.ReadReplyAsync();
        Assert.Equal(220, greeting.Code);
        Assert.Equal("cli.test ESMTP NativeRelay", greeting.FirstLine);
        await client.EhloAsync();
        var original = MessageText.Simple("cli-flags@client.test");
        string queueId = await client.SendAcceptedAsync("sender@example.test", ["rcpt@example.test"], original);

        Assert.True(Directory.Exists(dir.Spool), $"--spool {dir.Spool} was not created.\n{relay.Describe()}");
        var delivered = await sink.WaitForMessageAsync(m => m.Header("Message-ID") == "<cli-flags@client.test>", Waits.Delivery);
        DeliveryAssert.IsReceivedPlusOriginal(delivered, original, "cli.test", queueId);
    }

    [Theory]
    [InlineData(RelayProcess.SIGTERM)]
    [InlineData(RelayProcess.SIGINT)]
    public async Task Signal_with_an_idle_client_connected_exits_zero_and_closes_the_port(int signal)
    {
        await using var h = await RelayHarness.StartAsync(log);
        await using var client = await h.ConnectEhloAsync();

        h.Relay.Signal(signal);
        int exitCode = await h.Relay.WaitForExitAsync(Waits.Exit);

        Assert.True(exitCode == 0, $"Exit code after signal {signal} was {exitCode}, expected 0.\n{h.Relay.Describe()}");
        var replies = await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(10));
        Assert.All(replies, r => Assert.True(r.Code == 421, $"Only a 421 may be sent to an idle client at shutdown, got {r}"));
        var refused = await Assert.ThrowsAnyAsync<SocketException>(async () =>
        {
            using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await probe.ConnectAsync(new IPEndPoint(IPAddress.Loopback, h.Port), cts.Token);
        });
        Assert.Equal(SocketError.ConnectionRefused, refused.SocketErrorCode);
    }

    private static void AssertUsageError(RelayRunResult result)
    {
        Assert.True(result.ExitCode == 2, $"Expected exit code 2, got {result.ExitCode}.\n{result.Output}");
        Assert.True(result.StderrLines.Count == 1, $"Expected exactly one line on stderr, got {result.StderrLines.Count}.\n{result.Output}");
        Assert.StartsWith("nativerelay: ", result.StderrLines[0]);
        Assert.DoesNotContain(result.StdoutLines, l => l.Contains("listening on", StringComparison.Ordinal));
    }
}
