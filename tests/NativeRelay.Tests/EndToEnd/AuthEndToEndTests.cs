using System.Text;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>Submission and AUTH (RFC 4954, RFC 6409), and the passwd verb that writes the users file.</summary>
[Trait("Category", "EndToEnd")]
public sealed class AuthEndToEndTests(ITestOutputHelper log)
{
    private const string User = ReceivingHarness.User;
    private const string Password = ReceivingHarness.Password;

    /// <summary>Loopback is NOT a relay network here, so only AUTH can grant relaying.</summary>
    private static void NoRelayNetworks(JsonObject c) => c["relayNetworks"] = new JsonArray("192.0.2.0/24");

    [Fact]
    public async Task Auth_is_not_offered_before_tls_and_submission_requires_it()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Tls = true, Submission = true });
        await using var client = await SecureSmtpClient.ConnectAsync(h.SubmissionPort);
        await client.ExpectGreetingAsync();

        var ehlo = await client.ExpectAsync("EHLO client.test", 250);
        var auth = await client.AuthPlainAsync(User, Password);
        var mail = await client.CommandAsync("MAIL FROM:<alice@example.test>");

        Assert.DoesNotContain(ehlo.Lines, l => l.StartsWith("AUTH", StringComparison.OrdinalIgnoreCase));
        Assert.Contains("STARTTLS", ehlo.Lines);
        Assert.Equal(538, auth.Code);
        Assert.Equal("5.7.11", auth.EnhancedCode);
        Assert.Equal(530, mail.Code);
        Assert.Equal("5.7.0", mail.EnhancedCode);
    }

    [Fact]
    public async Task Auth_plain_under_starttls_lets_the_user_relay_anywhere_and_adds_message_id_and_date()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Tls = true, Submission = true, Configure = NoRelayNetworks });
        await using var client = await SecureSmtpClient.ConnectEhloAsync(h.SubmissionPort);
        await client.StartTlsAsync();

        var ehlo = await client.ExpectAsync("EHLO client.test", 250);
        Assert.Contains("AUTH PLAIN LOGIN", ehlo.Lines);
        var mailBeforeAuth = await client.CommandAsync("MAIL FROM:<alice@example.test>");
        Assert.Equal(530, mailBeforeAuth.Code);
        var auth = await client.AuthPlainAsync(User, Password);
        Assert.Equal(235, auth.Code);
        Assert.Equal("2.7.0", auth.EnhancedCode);
        var original = MessageText.Build("From: alice@example.test", "To: someone@far-away.test", "Subject: submitted without id or date", "", "hello");
        var queued = await client.SendMessageAsync("alice@example.test", ["someone@far-away.test"], original);
        Assert.Equal(250, queued.Code);

        var delivered = await h.Sink.WaitForMessageAsync(m => m.Header("Subject") == "submitted without id or date", Waits.Delivery);
        Assert.Equal(["someone@far-away.test"], delivered.Recipients);
        string received = MessageText.Unfold(delivered.Header("Received")!);
        Assert.Contains("with ESMTPSA id", received);
        Assert.Matches(@"^<\d{14}\.[0-9A-F]{16}@relay\.test>$", delivered.Header("Message-ID"));
        Assert.NotNull(delivered.Header("Date"));
        Assert.EndsWith(Encoding.Latin1.GetString(original), delivered.DataText);
    }

    [Fact]
    public async Task Submission_keeps_message_id_and_date_the_client_sent()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { ImplicitTls = true });
        await using var client = await SecureSmtpClient.ConnectEhloAsync(h.ImplicitTlsPort, implicitTls: true);
        Assert.Equal(235, (await client.AuthLoginAsync(User, Password)).Code);
        var original = MessageText.Simple("own-id@client.test");

        Assert.Equal(250, (await client.SendMessageAsync("alice@example.test", ["bob@far-away.test"], original)).Code);

        var delivered = await h.WaitForMessageIdAsync("own-id@client.test");
        Assert.Equal("Mon, 1 Jan 2024 00:00:00 +0000", delivered.Header("Date"));
        Assert.Single(delivered.DataText.Split("\r\n"), l => l.StartsWith("Message-ID:", StringComparison.OrdinalIgnoreCase));
        DeliveryAssert.IsReceivedPlusOriginal(delivered, original, ReceivingHarness.Hostname, queueId: null);
    }

    [Fact]
    public async Task Wrong_password_gets_535_and_repeated_failures_drop_the_client()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new()
        {
            ImplicitTls = true,
            Configure = c =>
            {
                ReceivingHarness.Limits(c)["maxAuthFailures"] = 3;
                ReceivingHarness.Limits(c)["authFailureDelaySeconds"] = 0.1;
            },
        });
        await using (var client = await SecureSmtpClient.ConnectEhloAsync(h.ImplicitTlsPort, implicitTls: true))
        {
            var first = await client.AuthPlainAsync(User, "wrong");
            var second = await client.AuthLoginAsync(User, "also wrong");
            var unknownUser = await client.AuthPlainAsync("nobody@example.test", Password);
            var after = await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(60));

            Assert.Equal(535, first.Code);
            Assert.Equal("5.7.8", first.EnhancedCode);
            Assert.Equal(535, second.Code);
            Assert.Equal(535, unknownUser.Code);
            var bye = Assert.Single(after);
            Assert.Equal(421, bye.Code);
        }

        await using var next = await SecureSmtpClient.ConnectEhloAsync(h.ImplicitTlsPort, implicitTls: true);
        Assert.Equal(235, (await next.AuthPlainAsync(User, Password)).Code);
    }

    [Fact]
    public async Task Auth_exchange_can_be_cancelled_and_bad_base64_is_refused()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { ImplicitTls = true });
        await using var client = await SecureSmtpClient.ConnectEhloAsync(h.ImplicitTlsPort, implicitTls: true);

        Assert.Equal(334, (await client.CommandAsync("AUTH LOGIN")).Code);
        var cancelled = await client.CommandAsync("*");
        Assert.Equal(334, (await client.CommandAsync("AUTH PLAIN")).Code);
        var garbage = await client.CommandAsync("!!not base64!!");
        var unknown = await client.CommandAsync("AUTH CRAM-MD5");
        var plain = await client.CommandAsync("AUTH PLAIN");
        Assert.Equal(334, plain.Code);
        var ok = await client.CommandAsync(Convert.ToBase64String(Encoding.UTF8.GetBytes($"\0{User}\0{Password}")));
        var again = await client.AuthPlainAsync(User, Password);

        Assert.Equal(501, cancelled.Code);
        Assert.Equal(501, garbage.Code);
        Assert.Equal(504, unknown.Code);
        Assert.Equal(235, ok.Code);
        Assert.Equal(503, again.Code);
    }

    [Fact]
    public async Task Allow_plaintext_auth_offers_auth_without_tls()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Submission = true, Configure = c => c["allowPlaintextAuth"] = true });
        await using var client = await SecureSmtpClient.ConnectEhloAsync(h.SubmissionPort);

        var ehlo = await client.ExpectAsync("EHLO client.test", 250);
        var auth = await client.AuthPlainAsync(User, Password);

        Assert.Contains("AUTH PLAIN LOGIN", ehlo.Lines);
        Assert.Equal(235, auth.Code);
        Assert.Equal(250, (await client.SendMessageAsync("alice@example.test", ["x@far-away.test"], MessageText.Simple("plain-auth@client.test"))).Code);
        var delivered = await h.WaitForMessageIdAsync("plain-auth@client.test");
        Assert.Contains("with ESMTPA id", MessageText.Unfold(delivered.Header("Received")!));
    }

    [Fact]
    public async Task Auth_is_not_enabled_on_the_mta_port()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { Tls = true, Submission = true });
        await using var client = await SecureSmtpClient.ConnectEhloAsync(h.Port);
        await client.StartTlsAsync();

        var ehlo = await client.ExpectAsync("EHLO client.test", 250);
        var auth = await client.AuthPlainAsync(User, Password);

        Assert.DoesNotContain(ehlo.Lines, l => l.StartsWith("AUTH", StringComparison.OrdinalIgnoreCase));
        Assert.Equal(503, auth.Code);
    }

    [Fact]
    public async Task Passwd_verb_prints_a_salted_hash_line_and_edits_a_users_file()
    {
        using var dir = new TempDir();
        string users = dir.File("users");

        var printed = await RunPasswdAsync(dir, "pw-one\n", "bob@example.test", "--iterations", "1000");
        var added = await RunPasswdAsync(dir, "pw-two\n", "bob@example.test", "--file", users, "--iterations", "1000");
        var second = await RunPasswdAsync(dir, "pw-carol\n", "carol", "--file", users, "--iterations", "1000");
        var changed = await RunPasswdAsync(dir, "pw-three\n", "BOB@example.test", "--file", users, "--iterations", "1000");
        string afterChange = File.ReadAllText(users);
        var deleted = await RunPasswdAsync(dir, null, "carol", "--file", users, "--delete");
        var emptyPassword = await RunPasswdAsync(dir, "\n", "dave", "--file", users);
        var badName = await RunPasswdAsync(dir, "x\n", "bad:name");

        Assert.Equal(0, printed.ExitCode);
        Assert.Matches(@"^bob@example\.test:\$pbkdf2-sha256\$1000\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$", Assert.Single(printed.StdoutLines));
        Assert.Equal(0, added.ExitCode);
        Assert.Equal(0, second.ExitCode);
        Assert.Equal(0, changed.ExitCode);
        Assert.Equal(2, afterChange.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Equal(0, deleted.ExitCode);
        Assert.Single(File.ReadAllLines(users));
        Assert.Equal("-rw-------", Mode(users));
        Assert.Equal(2, emptyPassword.ExitCode);
        Assert.Equal(2, badName.ExitCode);

        // The file the verb wrote is the one the relay reads: the last password works, the first does not.
        var store = NativeRelay.Smtp.Auth.UserStore.Load(users);
        Assert.Equal("BOB@example.test", await store.VerifyAsync(Encoding.UTF8.GetBytes("bob@example.test"), Encoding.UTF8.GetBytes("pw-three")));
        Assert.Null(await store.VerifyAsync(Encoding.UTF8.GetBytes("bob@example.test"), Encoding.UTF8.GetBytes("pw-two")));
    }

    [Fact]
    public async Task A_user_added_with_passwd_can_log_in_after_sighup()
    {
        await using var h = await ReceivingHarness.StartAsync(log, new() { ImplicitTls = true, Configure = c => c["reloadCheckSeconds"] = 3600 });
        var added = await RunPasswdAsync(h.Dir, "new-secret\n", "newbie", "--file", h.UsersFile!, "--iterations", "1000");
        Assert.Equal(0, added.ExitCode);

        h.Relay.Signal(1); // SIGHUP
        await h.Relay.WaitForOutputAsync("reloaded users", TimeSpan.FromSeconds(30));

        await using var client = await SecureSmtpClient.ConnectEhloAsync(h.ImplicitTlsPort, implicitTls: true);
        Assert.Equal(235, (await client.AuthPlainAsync("newbie", "new-secret")).Code);
    }

    private Task<RelayRunResult> RunPasswdAsync(TempDir dir, string? stdin, params string[] args) =>
        RunWithStdinAsync(dir, stdin, ["passwd", .. args]);

    private async Task<RelayRunResult> RunWithStdinAsync(TempDir dir, string? stdin, string[] args)
    {
        var result = await ExternalTool.RunAsync(RelayBinary.Path, args, TimeSpan.FromSeconds(60), stdin ?? "", dir.Path);
        log.WriteLine(result.Describe("nativerelay " + string.Join(' ', args)));
        return new RelayRunResult(result.ExitCode,
            result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries),
            result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries),
            result.Stdout + result.Stderr);
    }

    private static string Mode(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            return "?";
        }

        var mode = File.GetUnixFileMode(path);
        char Bit(UnixFileMode m, char c) => (mode & m) != 0 ? c : '-';
        return "-" + Bit(UnixFileMode.UserRead, 'r') + Bit(UnixFileMode.UserWrite, 'w') + Bit(UnixFileMode.UserExecute, 'x')
               + Bit(UnixFileMode.GroupRead, 'r') + Bit(UnixFileMode.GroupWrite, 'w') + Bit(UnixFileMode.GroupExecute, 'x')
               + Bit(UnixFileMode.OtherRead, 'r') + Bit(UnixFileMode.OtherWrite, 'w') + Bit(UnixFileMode.OtherExecute, 'x');
    }
}
