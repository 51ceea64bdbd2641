using System.Text;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>`nativerelay sendmail` (and the binary called as "sendmail") handing messages to a running relay.</summary>
[Trait("Category", "EndToEnd")]
public sealed class SendmailTests(ITestOutputHelper log)
{
    [Fact]
    public async Task Dash_t_reads_recipients_from_the_headers_removes_bcc_and_sends_crlf()
    {
        await using var harness = await RelayHarness.StartAsync(log);
        string id = $"sendmail-t-{Guid.NewGuid():N}@app.test";
        // An application writing bare LF, as they do.
        string message =
            "From: App <app@app.test>\n" +
            "To: Jane <jane@example.test>, bob@example.test\n" +
            "Cc: carol@example.test\n" +
            "Bcc: hidden@example.test\n" +
            "Subject: from sendmail -t\n" +
            $"Message-ID: <{id}>\n" +
            "\n" +
            "line one\n" +
            ".leading dot\n";

        var result = await CliRun.RunAsync(["sendmail", "-t", "-f", "app@app.test", "--server", $"127.0.0.1:{harness.Port}"],
            CliRun.Latin1(message), harness.Dir.Path, log);

        Assert.True(result.ExitCode == 0, result + "\n" + harness.Describe());
        var delivered = await harness.WaitForMessageIdAsync(id);
        Assert.Equal("app@app.test", delivered.MailFrom);
        Assert.Equal(new[] { "bob@example.test", "carol@example.test", "hidden@example.test", "jane@example.test" },
            delivered.Recipients.Order().ToArray());
        Assert.Null(delivered.Header("Bcc"));
        Assert.DoesNotContain("hidden@example.test", delivered.DataText);
        Assert.Equal("from sendmail -t", delivered.Header("Subject"));
        Assert.NotNull(delivered.Header("Date")); // added: the app gave none
        Assert.EndsWith("\r\n\r\nline one\r\n.leading dot\r\n", delivered.DataText);
        Assert.DoesNotMatch("[^\r]\n", delivered.DataText);
    }

    [Fact]
    public async Task Called_as_sendmail_with_dash_i_finds_the_relay_through_its_config_and_keeps_a_dot_line()
    {
        await using var harness = await RelayHarness.StartAsync(log);
        string link = harness.Dir.File("sendmail");
        File.CreateSymbolicLink(link, RelayBinary.Path);
        string id = $"sendmail-i-{Guid.NewGuid():N}@app.test";
        string message = $"Subject: dots\nMessage-ID: <{id}>\n\nabove\n.\nbelow\n";

        var result = await CliRun.RunAsync(["-oi", "-f", "cron@app.test", "--config", harness.Dir.File("relay.json"), "admin@example.test"],
            CliRun.Latin1(message), harness.Dir.Path, log, executable: link);

        Assert.True(result.ExitCode == 0, result + "\n" + harness.Describe());
        var delivered = await harness.WaitForMessageIdAsync(id);
        Assert.Equal(["admin@example.test"], delivered.Recipients);
        Assert.EndsWith("\r\n\r\nabove\r\n.\r\nbelow\r\n", delivered.DataText);
        Assert.Equal("cron@app.test", delivered.Header("From"));
    }

    [Fact]
    public async Task Without_dash_i_a_lone_dot_ends_the_message()
    {
        await using var harness = await RelayHarness.StartAsync(log);
        string id = $"sendmail-dot-{Guid.NewGuid():N}@app.test";
        string message = $"Subject: dots\nMessage-ID: <{id}>\n\nkept\n.\nnot sent\n";

        var result = await CliRun.RunAsync(["sendmail", "--server", $"127.0.0.1:{harness.Port}", "-f", "a@app.test", "x@example.test"],
            CliRun.Latin1(message), harness.Dir.Path, log);

        Assert.True(result.ExitCode == 0, result.ToString());
        var delivered = await harness.WaitForMessageIdAsync(id);
        Assert.EndsWith("\r\n\r\nkept\r\n", delivered.DataText);
    }

    [Fact]
    public async Task No_relay_listening_exits_75_with_a_clear_message()
    {
        using var dir = new TempDir();
        int port = FreePort.Get();

        var result = await CliRun.RunAsync(["sendmail", "--server", $"127.0.0.1:{port}", "x@example.test"],
            CliRun.Latin1("Subject: x\n\nbody\n"), dir.Path, log);

        Assert.Equal(75, result.ExitCode);
        Assert.Contains("not queued", result.Stderr);
        Assert.Contains($"127.0.0.1:{port}", result.Stderr);
    }

    [Fact]
    public async Task A_refused_recipient_exits_69_and_nothing_is_queued()
    {
        using var dir = new TempDir();
        await using var sink = new TestSmtpSink();
        int port = FreePort.Get();
        // No relay networks: a loopback client may not relay, so RCPT is refused for good.
        string config = dir.File("norelay.json");
        File.WriteAllText(config, $$"""
            { "hostname": "relay.test", "listen": ["127.0.0.1:{{port}}"], "spool": "{{dir.Spool}}", "relayTo": "{{sink.Endpoint}}", "relayNetworks": [] }
            """);
        using var relay = await RelayProcess.StartServeAsync(["--config", config], port, dir.Path, log);

        var result = await CliRun.RunAsync(["sendmail", "--config", config, "-f", "a@app.test", "x@example.test"],
            CliRun.Latin1("Subject: x\n\nbody\n"), dir.Path, log);

        Assert.True(result.ExitCode == 69, result + "\n" + relay.Describe());
        Assert.Contains("<x@example.test> refused: 5", result.Stderr);
        await sink.AssertStaysTrueAsync(() => sink.Messages.Count == 0, TimeSpan.FromSeconds(2), "nothing delivered");
    }

    [Fact]
    public async Task No_recipients_or_a_bad_option_is_a_usage_error()
    {
        using var dir = new TempDir();
        var none = await CliRun.RunAsync(["sendmail", "--server", "127.0.0.1:1"], CliRun.Latin1("Subject: x\n\nbody\n"), dir.Path, log);
        Assert.Equal(64, none.ExitCode);
        Assert.Contains("no recipients", none.Stderr);

        var bad = await CliRun.RunAsync(["sendmail", "-Z", "x@example.test"], [], dir.Path, log);
        Assert.Equal(64, bad.ExitCode);
        Assert.Contains("unknown option -Z", bad.Stderr);
    }
}
