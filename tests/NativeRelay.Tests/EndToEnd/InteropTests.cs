using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// Real clients against the published relay: Python's smtplib, swaks, and Postfix's smtp client
/// relaying into NativeRelay, each with and without TLS. CI installs the tools (.ci/run); a
/// missing tool fails the test with that hint instead of skipping it.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class InteropTests(ITestOutputHelper log)
{
    private static readonly TimeSpan ToolTimeout = TimeSpan.FromSeconds(120);

    // argv: port mode(plain|starttls|ssl) message-id [user password]
    private const string PythonClient = """
        import smtplib, ssl, sys
        port, mode, msgid = int(sys.argv[1]), sys.argv[2], sys.argv[3]
        ctx = ssl._create_unverified_context()
        msg = ("From: py@example.test\r\nTo: rcpt@example.test\r\nSubject: from smtplib\r\n"
               "Message-ID: <%s>\r\n\r\nHello from Python's smtplib.\r\n.leading dot line\r\n" % msgid)
        if mode == "ssl":
            s = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=60)
        else:
            s = smtplib.SMTP("127.0.0.1", port, timeout=60)
        s.ehlo("python.test")
        if mode == "starttls":
            s.starttls(context=ctx)
            s.ehlo("python.test")
            print("cipher:", s.sock.cipher())
        if len(sys.argv) > 5:
            s.login(sys.argv[4], sys.argv[5])
        refused = s.sendmail("py@example.test", ["rcpt@example.test"], msg)
        print("refused:", refused)
        s.quit()
        """;

    [Theory]
    [InlineData("plain", "ESMTP")]
    [InlineData("starttls", "ESMTPS")]
    public async Task Python_smtplib_is_accepted(string mode, string protocol)
    {
        string python = ExternalTool.Require("python3", "python3");
        await using var h = await ReceivingHarness.StartAsync(log, new() { Tls = true });
        string id = $"smtplib-{mode}@client.test";

        var run = await ExternalTool.RunAsync(python, ["-c", PythonClient, h.Port.ToString(), mode, id], ToolTimeout);

        log.WriteLine(run.Describe("python3 smtplib"));
        Assert.True(run.ExitCode == 0, run.Describe("python3 smtplib") + "\n" + h.Relay.Describe());
        var delivered = await h.WaitForMessageIdAsync(id);
        Assert.Contains($"with {protocol} id", MessageText.Unfold(delivered.Header("Received")!));
        Assert.Contains("\r\n.leading dot line\r\n", delivered.DataText);
    }

    [Fact]
    public async Task Python_smtplib_submits_over_implicit_tls_with_login()
    {
        string python = ExternalTool.Require("python3", "python3");
        await using var h = await ReceivingHarness.StartAsync(log, new() { ImplicitTls = true });
        const string id = "smtplib-ssl@client.test";

        var run = await ExternalTool.RunAsync(python, ["-c", PythonClient, h.ImplicitTlsPort.ToString(), "ssl", id, ReceivingHarness.User, ReceivingHarness.Password], ToolTimeout);

        Assert.True(run.ExitCode == 0, run.Describe("python3 smtplib") + "\n" + h.Relay.Describe());
        var delivered = await h.WaitForMessageIdAsync(id);
        Assert.Contains("with ESMTPSA id", MessageText.Unfold(delivered.Header("Received")!));
    }

    [Theory]
    [InlineData(false, "ESMTP")]
    [InlineData(true, "ESMTPS")]
    public async Task Swaks_is_accepted(bool tls, string protocol)
    {
        string swaks = ExternalTool.Require("swaks", "swaks");
        await using var h = await ReceivingHarness.StartAsync(log, new() { Tls = true });
        string id = $"swaks-{(tls ? "tls" : "plain")}@client.test";
        var args = new List<string>
        {
            "--server", $"127.0.0.1:{h.Port}", "--from", "swaks@example.test", "--to", "rcpt@example.test",
            "--helo", "swaks.test", "--header", $"Message-Id: <{id}>", "--timeout", "60",
        };
        if (tls)
        {
            args.Add("--tls");
        }

        var run = await ExternalTool.RunAsync(swaks, args, ToolTimeout);

        Assert.True(run.ExitCode == 0, run.Describe("swaks") + "\n" + h.Relay.Describe());
        var delivered = await h.WaitForMessageIdAsync(id);
        Assert.Contains($"with {protocol} id", MessageText.Unfold(delivered.Header("Received")!));
    }

    [Theory]
    [InlineData("PLAIN")]
    [InlineData("LOGIN")]
    public async Task Swaks_authenticates_on_the_submission_port(string mechanism)
    {
        string swaks = ExternalTool.Require("swaks", "swaks");
        await using var h = await ReceivingHarness.StartAsync(log, new() { Tls = true, Submission = true });
        string id = $"swaks-auth-{mechanism}@client.test";

        var run = await ExternalTool.RunAsync(swaks,
        [
            "--server", $"127.0.0.1:{h.SubmissionPort}", "--from", "alice@example.test", "--to", "someone@far-away.test",
            "--helo", "swaks.test", "--header", $"Message-Id: <{id}>", "--timeout", "60",
            "--tls", "--auth", mechanism, "--auth-user", ReceivingHarness.User, "--auth-password", ReceivingHarness.Password,
        ], ToolTimeout);

        Assert.True(run.ExitCode == 0, run.Describe("swaks") + "\n" + h.Relay.Describe());
        var delivered = await h.WaitForMessageIdAsync(id);
        Assert.Contains("with ESMTPSA id", MessageText.Unfold(delivered.Header("Received")!));
        Assert.Contains("235 2.7.0", run.Stdout);
    }

    [Fact]
    public async Task Swaks_without_auth_is_refused_on_the_submission_port()
    {
        string swaks = ExternalTool.Require("swaks", "swaks");
        await using var h = await ReceivingHarness.StartAsync(log, new() { Tls = true, Submission = true });

        var run = await ExternalTool.RunAsync(swaks,
        [
            "--server", $"127.0.0.1:{h.SubmissionPort}", "--from", "alice@example.test", "--to", "someone@far-away.test",
            "--helo", "swaks.test", "--timeout", "60", "--tls",
        ], ToolTimeout);

        Assert.NotEqual(0, run.ExitCode);
        Assert.Contains("530 5.7.0", run.Stdout + run.Stderr);
    }

    [Theory]
    [InlineData(false, "ESMTP")]
    [InlineData(true, "ESMTPS")]
    public async Task Postfix_relays_into_nativerelay(bool tls, string protocol)
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Tls = true });
        await using var postfix = await PrivatePostfix.StartAsync(h.Dir.Path, h.Port, requireTls: tls, log);
        string id = $"via-postfix-{(tls ? "tls" : "plain")}@client.test";
        var original = MessageText.Simple(id, subject: "through postfix");

        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(postfix.Port))
        {
            await client.EhloAsync();
            var reply = await client.SendMessageAsync("sender@example.test", ["rcpt@example.test"], original);
            Assert.True(reply.Code == 250, $"Postfix did not take the message: {reply}\n{client.Transcript}");
            await client.CommandAsync("QUIT");
        }

        ReceivedMessage delivered;
        try
        {
            delivered = await h.WaitForMessageIdAsync(id);
        }
        catch (Xunit.Sdk.XunitException e)
        {
            throw new Xunit.Sdk.XunitException(e.Message + "\n" + postfix.ReadMailLog());
        }

        string received = MessageText.Unfold(delivered.Header("Received")!);
        Assert.Contains("from postfix.test", received);
        Assert.Contains($"with {protocol} id", received);
        if (tls)
        {
            Assert.Matches(@"\(using TLSv1\.[23] with cipher TLS_\w+\)", received);
        }

        Assert.Equal("through postfix", delivered.Header("Subject"));
    }
}
