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
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public async Task With_the_relay_down_the_message_waits_in_the_maildrop_and_the_relay_delivers_it_when_it_starts()
    {
        using var dir = new TempDir();
        await using var sink = new TestSmtpSink();
        var config = RelayConfig.For(dir, sink.Endpoint);
        string configFile = config.WriteTo(dir.File("relay.json"));
        string id = $"maildrop-{Guid.NewGuid():N}@app.test";

        // Nothing listens on the configured port: sendmail leaves the message in the spool's maildrop.
        var result = await CliRun.RunAsync(["sendmail", "--config", configFile, "-f", "cron@app.test", "-v", "ops@example.test"],
            CliRun.Latin1($"Subject: nightly\nMessage-ID: <{id}>\n\nall good\n"), dir.Path, log);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("maildrop", result.Stderr);
        string maildrop = Path.Combine(dir.Spool, "maildrop");
        var file = Assert.Single(Directory.GetFiles(maildrop));
        Assert.Matches("^[0-9a-f]{32}$", Path.GetFileName(file));
        // Anyone may drop mail in, nobody but the relay may list it, a file is its owner's and the relay group's.
        Assert.Equal(UnixFileMode.SetGroup | UnixFileMode.StickyBit | UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
                     | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute,
            File.GetUnixFileMode(maildrop));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead, File.GetUnixFileMode(file));

        using var relay = await RelayProcess.StartWithConfigAsync(config, dir, log);
        var delivered = await sink.WaitForMessageAsync(m => m.Header("Message-ID") == $"<{id}>", Waits.Delivery, "the maildrop message");
        Assert.Equal("cron@app.test", delivered.MailFrom);
        Assert.Equal(["ops@example.test"], delivered.Recipients);
        // The first header is the pickup's: it names the user who owns the file.
        Assert.StartsWith($"Received: by relay.test (NativeRelay maildrop, from user {Environment.UserName} uid ", delivered.DataText);
        Assert.EndsWith("\r\n\r\nall good\r\n", delivered.DataText);
        await sink.AssertStaysTrueAsync(() => sink.Messages.Count == 1, TimeSpan.FromSeconds(2), "delivered once");
        Assert.Empty(Directory.GetFiles(maildrop));
        // The spool is searchable (to reach the maildrop) but not listable, and nothing else in it
        // can be reached by another user: its files are unreadable and its directories closed.
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute,
            File.GetUnixFileMode(dir.Spool));
        const UnixFileMode others = UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;
        Assert.All(Directory.GetFileSystemEntries(dir.Spool).Where(f => f != maildrop),
            f => Assert.True((File.GetUnixFileMode(f) & others) == 0, $"{f} is {File.GetUnixFileMode(f)}"));
    }

    [Fact]
    [System.Runtime.Versioning.SupportedOSPlatform("linux")]
    public async Task Another_user_can_drop_mail_but_cannot_list_the_maildrop_or_read_the_spool()
    {
        Assert.True(Environment.UserName == "root", "this test switches to the user nobody, so it runs as root (as CI does)");
        await using var harness = await RelayHarness.StartAsync(log);
        // The test's own directory must be passable for nobody, as /var/spool is.
        File.SetUnixFileMode(harness.Dir.Path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute);
        string maildrop = Path.Combine(harness.Dir.Spool, "maildrop");
        string[] asNobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
        string id = $"nobody-{Guid.NewGuid():N}@app.test";

        // The relay runs, but this sendmail is pointed where nothing listens: its message takes the maildrop.
        var result = await CliRun.RunAsync([.. asNobody, RelayBinary.Path, "sendmail", "--server", $"127.0.0.1:{FreePort.Get()}", "--spool", harness.Dir.Spool,
                "-f", "nobody@app.test", "ops@example.test"],
            CliRun.Latin1($"Subject: from nobody\nMessage-ID: <{id}>\n\nhi\n"), harness.Dir.Path, log, executable: "/usr/bin/setpriv");

        Assert.True(result.ExitCode == 0, result.ToString());
        var delivered = await harness.WaitForMessageIdAsync(id);
        Assert.StartsWith("Received: by relay.test (NativeRelay maildrop, from user nobody uid 65534)", delivered.DataText);
        var list = await CliRun.RunAsync([.. asNobody, "/bin/ls", maildrop], null, harness.Dir.Path, log, executable: "/usr/bin/setpriv");
        Assert.NotEqual(0, list.ExitCode);
        Assert.Contains("Permission denied", list.Stderr);
        var spool = await CliRun.RunAsync([.. asNobody, "/bin/ls", harness.Dir.Spool], null, harness.Dir.Path, log, executable: "/usr/bin/setpriv");
        Assert.NotEqual(0, spool.ExitCode);
        var log0 = await CliRun.RunAsync([.. asNobody, "/bin/cat", Path.Combine(harness.Dir.Spool, "queue.log.0")], null, harness.Dir.Path, log, executable: "/usr/bin/setpriv");
        Assert.NotEqual(0, log0.ExitCode);
        Assert.DoesNotContain("from nobody", log0.Stdout);
    }

    [Fact]
    public async Task A_running_relay_picks_up_new_maildrop_files_and_moves_bad_ones_aside()
    {
        await using var harness = await RelayHarness.StartAsync(log);
        string maildrop = Path.Combine(harness.Dir.Spool, "maildrop");
        Assert.True(Directory.Exists(maildrop), "the relay makes its maildrop at start");
        string id = $"pickup-{Guid.NewGuid():N}@app.test";
        string good = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));
        string garbage = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));
        string link = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16));
        File.WriteAllText(Path.Combine(maildrop, garbage), "this is not a maildrop file\r\n\r\n");
        File.CreateSymbolicLink(Path.Combine(maildrop, link), "/etc/passwd");
        File.WriteAllText(Path.Combine(maildrop, "notes.txt"), "an operator's stray file");
        File.WriteAllBytes(Path.Combine(maildrop, good), NativeRelay.Maildrop.MaildropFile.Encode("app@app.test", ["x@example.test", "y@example.test"], false,
            Encoding.ASCII.GetBytes($"Subject: picked up\r\nMessage-ID: <{id}>\r\n\r\nhello\r\n")));

        var delivered = await harness.WaitForMessageIdAsync(id);
        Assert.Equal(["x@example.test", "y@example.test"], delivered.Recipients.Order().ToArray());
        string bad = Path.Combine(maildrop, "bad");
        await harness.Sink.WaitUntilAsync(() => Directory.Exists(bad) && Directory.GetFileSystemEntries(bad).Length == 3, Waits.Delivery, "three files moved aside");
        Assert.Empty(Directory.GetFiles(maildrop));
        Assert.Equal("this is not a maildrop file\r\n\r\n", File.ReadAllText(Path.Combine(bad, garbage)));
        await harness.Relay.WaitForOutputAsync("it is a symbolic link", Waits.Delivery);
        await harness.Relay.WaitForOutputAsync("not a NativeRelay maildrop file", Waits.Delivery);
        await harness.Relay.WaitForOutputAsync("its name is not one sendmail gives", Waits.Delivery);
        Assert.False(harness.Relay.HasExited);
        Assert.DoesNotContain("root:x:0:0", string.Concat(harness.Sink.Messages.Select(m => m.DataText)));
    }

    [Fact]
    public async Task A_maildrop_file_whose_message_was_queued_before_a_crash_is_not_queued_again()
    {
        using var dir = new TempDir();
        int sinkPort = FreePort.Get(); // down: the message stays queued
        var config = RelayConfig.For(dir, $"127.0.0.1:{sinkPort}", retryInitialSeconds: 1, retryMaxSeconds: 1);
        var relay = await RelayProcess.StartWithConfigAsync(config, dir, log);
        string queueId;
        string first = $"queued-{Guid.NewGuid():N}@app.test";
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(config.Port))
        {
            await client.EhloAsync();
            queueId = await client.SendAcceptedAsync("app@app.test", ["x@example.test"], MessageText.Simple(first));
        }
        relay.Kill();
        await relay.WaitForExitAsync(Waits.Exit);
        relay.Dispose();
        // As if the relay died between its commit and its removing the file (step 2 done, not step 3),
        // and, beside it, one that died after the rename but before its commit (step 1 only).
        string maildrop = Path.Combine(dir.Spool, "maildrop");
        string committed = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16)) + "." + queueId;
        File.WriteAllBytes(Path.Combine(maildrop, committed), NativeRelay.Maildrop.MaildropFile.Encode("app@app.test", ["x@example.test"], false,
            Encoding.ASCII.GetBytes("Subject: must not be sent\r\n\r\nduplicate\r\n")));
        string renamedId = "0000000000000ABC";
        string renamed = Convert.ToHexStringLower(System.Security.Cryptography.RandomNumberGenerator.GetBytes(16)) + "." + renamedId;
        string second = $"renamed-{Guid.NewGuid():N}@app.test";
        File.WriteAllBytes(Path.Combine(maildrop, renamed), NativeRelay.Maildrop.MaildropFile.Encode("app@app.test", ["x@example.test"], false,
            MessageText.Simple(second)));

        await using var sink = new TestSmtpSink(sinkPort);
        config.Listen = [$"127.0.0.1:{FreePort.Get()}"];
        using var restarted = await RelayProcess.StartWithConfigAsync(config, dir, log, "relay2.json");
        await sink.WaitForMessageAsync(m => m.Header("Message-ID") == $"<{second}>", Waits.Delivery, "the renamed file's message");
        await sink.WaitForMessageAsync(m => m.Header("Message-ID") == $"<{first}>", Waits.Delivery, "the queued message");
        await sink.AssertStaysTrueAsync(() => sink.Messages.Count == 2, TimeSpan.FromSeconds(3), "nothing queued twice");
        Assert.DoesNotContain(sink.Messages, m => m.DataText.Contains("must not be sent"));
        Assert.Contains($"id {renamedId};", sink.Messages.Single(m => m.Header("Message-ID") == $"<{second}>").DataText);
        Assert.Empty(Directory.GetFiles(maildrop));
    }

    [Fact]
    public async Task With_the_relay_down_and_no_writable_maildrop_sendmail_exits_75_with_a_clear_message()
    {
        using var dir = new TempDir();
        int port = FreePort.Get();
        string notADirectory = dir.File("plain-file");
        File.WriteAllText(notADirectory, "");

        var result = await CliRun.RunAsync(["sendmail", "--server", $"127.0.0.1:{port}", "--spool", Path.Combine(notADirectory, "spool"), "x@example.test"],
            CliRun.Latin1("Subject: x\n\nbody\n"), dir.Path, log);

        Assert.Equal(75, result.ExitCode);
        Assert.Contains("not queued", result.Stderr);
        Assert.Contains($"127.0.0.1:{port}", result.Stderr);
        Assert.Contains("maildrop", result.Stderr);
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
