using System.Text;
using NativeRelay.Config;
using NativeRelay.Smtp.Auth;

namespace NativeRelay.Tests.Unit;

public sealed class AuthTests
{
    private static byte[] B(string s) => Encoding.UTF8.GetBytes(s);

    [Fact]
    public void Password_hash_has_the_documented_format_and_verifies_only_its_password()
    {
        string hash = PasswordHash.Create("s3cret pass", 1000);

        Assert.Matches(@"^\$pbkdf2-sha256\$1000\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$", hash);
        Assert.True(PasswordHash.TryParse(hash, out var parsed, out var error), error);
        Assert.True(parsed!.Verify(B("s3cret pass")));
        Assert.False(parsed.Verify(B("s3cret pasS")));
        Assert.False(parsed.Verify(B("")));
    }

    [Fact]
    public void Two_hashes_of_one_password_differ_by_their_salt()
    {
        Assert.NotEqual(PasswordHash.Create("same", 1000), PasswordHash.Create("same", 1000));
    }

    [Fact]
    public void Default_iteration_count_is_high()
    {
        Assert.True(PasswordHash.DefaultIterations >= 600_000);
    }

    [Theory]
    [InlineData("plain-text-password")]
    [InlineData("$pbkdf2-sha1$1000$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==")]
    [InlineData("$pbkdf2-sha256$10$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==")]
    [InlineData("$pbkdf2-sha256$abc$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==")]
    [InlineData("$pbkdf2-sha256$1000$!!!$aGFzaGhhc2hoYXNoaGFzaA==")]
    [InlineData("$pbkdf2-sha256$1000$c2FsdHNhbHQ=")]
    public void Malformed_hashes_are_rejected_with_a_reason(string text)
    {
        Assert.False(PasswordHash.TryParse(text, out _, out var error));
        Assert.False(string.IsNullOrEmpty(error));
    }

    [Fact]
    public void Passlib_style_hash_without_padding_is_read()
    {
        // passlib writes adapted base64: '.' for '+', no padding.
        string hash = PasswordHash.Create("pw", 1000);
        var parts = hash.Split('$');
        string passlib = $"$pbkdf2-sha256${parts[2]}${parts[3].TrimEnd('=').Replace('+', '.')}${parts[4].TrimEnd('=').Replace('+', '.')}";

        Assert.True(PasswordHash.TryParse(passlib, out var parsed, out _));
        Assert.True(parsed!.Verify(B("pw")));
    }

    [Fact]
    public async Task User_store_verifies_names_case_insensitively_and_passwords_exactly()
    {
        var store = UserStore.FromLines([
            "# comment",
            "",
            $"Alice@Example.test:{PasswordHash.Create("pw-alice", 1000)}",
            $"  bob:{PasswordHash.Create("pw-bob", 1000)}  ",
        ]);

        Assert.Equal(2, store.Count);
        Assert.Equal("Alice@Example.test", await store.VerifyAsync(B("alice@example.TEST"), B("pw-alice")));
        Assert.Equal("bob", await store.VerifyAsync(B("bob"), B("pw-bob")));
        Assert.Null(await store.VerifyAsync(B("bob"), B("pw-alice")));
        Assert.Null(await store.VerifyAsync(B("bob"), B("PW-BOB")));
        Assert.Null(await store.VerifyAsync(B("carol"), B("pw-bob")));
        Assert.Null(await store.VerifyAsync([0xff, 0xfe], B("pw-bob")));
    }

    [Fact]
    public async Task A_cached_login_still_refuses_a_wrong_password()
    {
        var store = UserStore.FromLines([$"bob:{PasswordHash.Create("right", 1000)}"]);

        Assert.Equal("bob", await store.VerifyAsync(B("bob"), B("right")));
        Assert.Equal("bob", await store.VerifyAsync(B("bob"), B("right"))); // from the cache
        Assert.Null(await store.VerifyAsync(B("bob"), B("wrong")));
        Assert.Equal("bob", await store.VerifyAsync(B("bob"), B("right")));
    }

    [Theory]
    [InlineData("no-colon-here")]
    [InlineData(":$pbkdf2-sha256$1000$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==")]
    [InlineData("bob:not-a-hash")]
    [InlineData("bad name:$pbkdf2-sha256$1000$c2FsdHNhbHQ=$aGFzaGhhc2hoYXNoaGFzaA==")]
    public void Malformed_users_file_lines_stop_with_the_line_number(string line)
    {
        var e = Assert.Throws<ConfigException>(() => UserStore.FromLines(["# first", line]));
        Assert.Contains("line 2", e.Message);
    }

    [Fact]
    public void A_user_listed_twice_is_an_error()
    {
        string hash = PasswordHash.Create("x", 1000);
        var e = Assert.Throws<ConfigException>(() => UserStore.FromLines([$"bob:{hash}", $"BOB:{hash}"]));
        Assert.Contains("twice", e.Message);
    }

    [Fact]
    public async Task Users_file_reload_picks_up_changes_and_keeps_the_old_users_on_errors()
    {
        using var dir = new Support.TempDir();
        string path = dir.File("users");
        File.WriteAllText(path, $"bob:{PasswordHash.Create("one", 1000)}\n");
        var store = UserStore.Load(path);
        Assert.Null(store.Reload(force: false));

        File.WriteAllText(path, $"bob:{PasswordHash.Create("two", 1000)}\ncarol:{PasswordHash.Create("three", 1000)}\n");
        File.SetLastWriteTimeUtc(path, DateTime.UtcNow.AddSeconds(5));
        Assert.Contains("reloaded", store.Reload(force: false));
        Assert.Equal("bob", await store.VerifyAsync(B("bob"), B("two")));
        Assert.Null(await store.VerifyAsync(B("bob"), B("one")));

        File.WriteAllText(path, "garbage line\n");
        Assert.Contains("keeping", store.Reload(force: true));
        Assert.Equal("carol", await store.VerifyAsync(B("carol"), B("three")));
    }

    [Fact]
    public void Auth_failures_are_remembered_per_address_for_a_while()
    {
        long now = 0;
        var throttle = new AuthThrottle(() => now);
        var attacker = System.Net.IPAddress.Parse("192.0.2.7");
        var other = System.Net.IPAddress.Parse("192.0.2.8");

        Assert.Equal(1, throttle.RecordFailure(attacker));
        Assert.Equal(2, throttle.RecordFailure(attacker));
        Assert.Equal(2, throttle.RecentFailures(attacker));
        Assert.Equal(0, throttle.RecentFailures(other));
        now += (long)AuthThrottle.Window.TotalMilliseconds + 1;
        Assert.Equal(0, throttle.RecentFailures(attacker));
        Assert.Equal(1, throttle.RecordFailure(attacker));
    }

    [Theory]
    [InlineData(1, 1, 2.0, 2.0)]
    [InlineData(2, 2, 2.0, 4.0)]
    [InlineData(1, 5, 2.0, 10.0)]  // a fresh session from an address that failed before waits longer
    [InlineData(3, 100, 2.0, 30.0)] // capped
    [InlineData(1, 1, 0.0, 0.0)]
    public void Auth_failure_delay_grows_with_failures_and_is_capped(int session, int address, double step, double expectedSeconds)
    {
        Assert.Equal(TimeSpan.FromSeconds(expectedSeconds), AuthThrottle.Delay(session, address, step, TimeSpan.FromSeconds(30)));
    }

    [Fact]
    public void Sasl_plain_is_split_and_a_foreign_authorization_identity_is_refused()
    {
        Assert.True(Sasl.TryParsePlain(B("\0bob\0pw"), out var user, out var password));
        Assert.Equal("bob", Encoding.UTF8.GetString(user));
        Assert.Equal("pw", Encoding.UTF8.GetString(password));
        Assert.True(Sasl.TryParsePlain(B("bob\0bob\0pw"), out _, out _));

        Assert.False(Sasl.TryParsePlain(B("admin\0bob\0pw"), out _, out _));
        Assert.False(Sasl.TryParsePlain(B("\0bob"), out _, out _));
        Assert.False(Sasl.TryParsePlain(B("\0\0pw"), out _, out _));
        Assert.False(Sasl.TryParsePlain(B("\0bob\0"), out _, out _));
        Assert.False(Sasl.TryParsePlain(B("bob pw"), out _, out _));
    }

    [Fact]
    public void Sasl_responses_are_base64_with_equals_for_empty_and_star_cancels()
    {
        Assert.Equal(B("bob"), Sasl.DecodeResponse("Ym9i"u8));
        Assert.Empty(Sasl.DecodeResponse("="u8)!);
        Assert.Null(Sasl.DecodeResponse("Ym9i!"u8));
        Assert.Null(Sasl.DecodeResponse("Ym9"u8));
        Assert.True(Sasl.IsCancel("*"u8));
        Assert.False(Sasl.IsCancel("**"u8));
        Assert.Equal(SaslMechanism.Plain, Sasl.ParseMechanism("plain"u8));
        Assert.Equal(SaslMechanism.Login, Sasl.ParseMechanism("LOGIN"u8));
        Assert.Equal(SaslMechanism.None, Sasl.ParseMechanism("CRAM-MD5"u8));
    }
}
