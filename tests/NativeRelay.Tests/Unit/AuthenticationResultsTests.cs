using System.Buffers;
using System.Text;
using NativeRelay.MailAuth;
using NativeRelay.MailAuth.Dmarc;
using NativeRelay.MailAuth.Spf;

namespace NativeRelay.Tests.Unit;

/// <summary>The Authentication-Results header field (RFC 8601): building it, and removing forged ones carrying our authserv-id.</summary>
public sealed class AuthenticationResultsTests
{
    private static readonly DmarcRecord Reject = new(DmarcPolicy.Reject, DmarcPolicy.Quarantine, null, false, false, 100, [], [], "0", 86400);

    /// <summary>Unfolds the field and splits it into authserv-id and resinfo strings (';' outside quotes and comments).</summary>
    private static (string Id, List<string> Results) Parse(byte[] field)
    {
        string text = Encoding.UTF8.GetString(field);
        Assert.StartsWith("Authentication-Results: ", text);
        Assert.EndsWith("\r\n", text);
        foreach (var line in text.Split("\r\n"))
            Assert.True(line.Length <= 78, $"line longer than 78: {line}");
        string value = text["Authentication-Results: ".Length..^2].Replace("\r\n\t", " ").Replace("\r\n ", " ");
        Assert.DoesNotContain('\r', value);
        Assert.DoesNotContain('\n', value);
        var parts = new List<string>();
        var current = new StringBuilder();
        bool quoted = false;
        int depth = 0;
        for (int i = 0; i < value.Length; i++)
        {
            char c = value[i];
            if (c == '\\') { current.Append(c).Append(value[++i]); continue; }
            if (c == '"' && depth == 0) quoted = !quoted;
            else if (c == '(' && !quoted) depth++;
            else if (c == ')' && !quoted) depth--;
            else if (c == ';' && !quoted && depth == 0) { parts.Add(current.ToString().Trim()); current.Clear(); continue; }
            current.Append(c);
        }
        parts.Add(current.ToString().Trim());
        return (parts[0], parts.Skip(1).ToList());
    }

    [Fact]
    public void Every_result_is_a_resinfo_with_its_properties()
    {
        var spf = new SpfVerdict(SpfResult.Pass, "mailfrom", "example.com", "bounce+x=y@example.com", "ip4:192.0.2.0/24");
        var dkim = new List<DkimVerdict>
        {
            new(DkimResult.Pass, "example.com", "s2024", "rsa-sha256", null, "AbC/12+="),
            new(DkimResult.Fail, "mailer.example.net", "k1", "ed25519-sha256", "body hash did not verify", "zzzzzzzz"),
        };
        var dmarc = new DmarcVerdict(DmarcResult.Pass, "example.com", "example.com", Reject, DmarcPolicy.Reject, DmarcPolicy.None, true, true);

        var (id, results) = Parse(AuthenticationResults.Build("mx.relay.test", spf, dkim, dmarc));

        Assert.Equal("mx.relay.test", id);
        Assert.Equal(4, results.Count);
        Assert.Equal("spf=pass (matched ip4:192.0.2.0/24) smtp.mailfrom=bounce+x=y@example.com", results[0]);
        Assert.Equal("dkim=pass header.d=example.com header.s=s2024 header.a=rsa-sha256 header.b=\"AbC/12+=\"", results[1]);
        Assert.Equal("dkim=fail reason=\"body hash did not verify\" header.d=mailer.example.net header.s=k1 header.a=ed25519-sha256 header.b=zzzzzzzz", results[2]);
        Assert.Equal("dmarc=pass (p=reject sp=quarantine dis=none) header.from=example.com", results[3]);
    }

    [Fact]
    public void Errors_carry_a_reason_and_the_helo_identity_is_smtp_helo()
    {
        var spf = new SpfVerdict(SpfResult.PermError, "helo", "mail.example.org", "postmaster@mail.example.org", Problem: "the SPF record of mail.example.org is invalid: 'foo': unknown mechanism");
        var dmarc = new DmarcVerdict(DmarcResult.PermError, null, null, null, DmarcPolicy.Reject, DmarcPolicy.Reject, false, false, "2 From fields");

        var (_, results) = Parse(AuthenticationResults.Build("mx.relay.test", spf, [], dmarc));

        Assert.Equal(3, results.Count);
        Assert.Equal("spf=permerror reason=\"the SPF record of mail.example.org is invalid: 'foo': unknown mechanism\" smtp.helo=mail.example.org", results[0]);
        Assert.Equal("dkim=none", results[1]);
        Assert.Equal("dmarc=permerror reason=\"2 From fields\"", results[2]);
    }

    [Fact]
    public void Reasons_from_dns_text_stay_printable_ascii_and_escaped()
    {
        var spf = new SpfVerdict(SpfResult.PermError, "mailfrom", "example.com", "a@example.com", Problem: "'ä\u0001\"x\\': bad (really)");
        var dmarc = new DmarcVerdict(DmarcResult.None, "example.com", null, null, DmarcPolicy.None, DmarcPolicy.None, false, false, "tab\there");
        byte[] field = AuthenticationResults.Build("mx.relay.test", spf, null, dmarc);
        Assert.True(System.Text.Ascii.IsValid(field));
        var (_, results) = Parse(field);
        Assert.Equal("spf=permerror reason=\"'??\\\"x\\\\': bad (really)\" smtp.mailfrom=a@example.com", results[0]);
        Assert.Equal("dmarc=none reason=\"tab here\" header.from=example.com", results[1]);
    }

    [Fact]
    public void Nothing_checked_is_none_and_unchecked_methods_are_left_out()
    {
        Assert.Equal("Authentication-Results: mx.relay.test; none\r\n", Encoding.UTF8.GetString(AuthenticationResults.Build("mx.relay.test", null, null, null)));
        var spf = new SpfVerdict(SpfResult.SoftFail, "mailfrom", "example.com", "a@example.com", "~all");
        var (_, results) = Parse(AuthenticationResults.Build("mx.relay.test", spf, null, null));
        Assert.Equal(["spf=softfail (matched ~all) smtp.mailfrom=a@example.com"], results);
    }

    [Fact]
    public void Odd_senders_are_quoted_and_long_values_fold_within_78_columns()
    {
        var spf = new SpfVerdict(SpfResult.Fail, "mailfrom", "example.com", "\"john doe\"@example.com", "-all");
        string longDomain = string.Join('.', Enumerable.Repeat("abcdefghijklmnopqrstuvwxyz", 2)) + ".example.com";
        var dkim = new List<DkimVerdict> { new(DkimResult.Pass, longDomain, "selector-with-a-long-name-2024", "rsa-sha256", null, "abcdefgh") };
        byte[] field = AuthenticationResults.Build("mx.relay.test", spf, dkim, null);
        var (_, results) = Parse(field);
        Assert.Equal("spf=fail (matched -all) smtp.mailfrom=\"\\\"john doe\\\"@example.com\"", results[0]);
        Assert.Equal($"dkim=pass header.d={longDomain} header.s=selector-with-a-long-name-2024 header.a=rsa-sha256 header.b=abcdefgh", results[1]);
        Assert.True(Encoding.UTF8.GetString(field).Split("\r\n").Length > 4);
    }

    // ---- removal of forged fields (RFC 8601 5) ----

    private static string Strip(string message, string id)
    {
        var bytes = Encoding.UTF8.GetBytes(message);
        var ranges = AuthenticationResults.FindOurs(bytes, id);
        var output = new ArrayBufferWriter<byte>();
        AuthenticationResults.CopyWithout(bytes, ranges, output);
        return Encoding.UTF8.GetString(output.WrittenSpan);
    }

    [Fact]
    public void Fields_with_our_id_are_removed_and_others_kept()
    {
        string message =
            "Received: from a by b\r\n" +
            "Authentication-Results: mx.relay.test; spf=pass smtp.mailfrom=evil@example.com\r\n" +
            "Authentication-Results: other.example.net; dkim=fail\r\n" +
            "authentication-results:MX.Relay.TEST;\r\n\tdmarc=pass header.from=bank.example\r\n" +
            "Authentication-Results: (forged) \"mx.relay.test\" 1; dkim=pass\r\n" +
            "Authentication-Results: (a (nested) comment)\r\n mx.relay.test (c); none\r\n" +
            "Authentication-Results: mx.relay.test.evil.example; none\r\n" +
            "Subject: Authentication-Results: mx.relay.test; none\r\n" +
            "\r\n" +
            "Authentication-Results: mx.relay.test; in the body, untouched\r\n";

        string stripped = Strip(message, "mx.relay.test");

        Assert.Equal(
            "Received: from a by b\r\n" +
            "Authentication-Results: other.example.net; dkim=fail\r\n" +
            "Authentication-Results: mx.relay.test.evil.example; none\r\n" +
            "Subject: Authentication-Results: mx.relay.test; none\r\n" +
            "\r\n" +
            "Authentication-Results: mx.relay.test; in the body, untouched\r\n", stripped);
    }

    [Fact]
    public void Forged_fields_can_be_renamed_in_place_instead()
    {
        string message = "X: 1\r\nAUTHENTICATION-RESULTS : mx.relay.test; none\r\nAuthentication-Results: other.test; none\r\n\r\nbody";
        var bytes = Encoding.UTF8.GetBytes(message);
        AuthenticationResults.ObscureInPlace(bytes, AuthenticationResults.FindOurs(bytes, "mx.relay.test"));
        Assert.Equal("X: 1\r\nX-Removed-Auth-Results : mx.relay.test; none\r\nAuthentication-Results: other.test; none\r\n\r\nbody", Encoding.UTF8.GetString(bytes));
        Assert.Empty(AuthenticationResults.FindOurs(bytes, "mx.relay.test"));
    }

    [Fact]
    public void Nothing_to_remove_leaves_the_message_as_it_was()
    {
        string message = "From: a@example.com\r\nAuthentication-Results: elsewhere.test; none\r\n\r\nbody";
        Assert.Empty(AuthenticationResults.FindOurs(Encoding.UTF8.GetBytes(message), "mx.relay.test"));
        Assert.Equal(message, Strip(message, "mx.relay.test"));
    }

    [Fact]
    public void Our_own_field_is_recognised_as_ours()
    {
        var spf = new SpfVerdict(SpfResult.Pass, "mailfrom", "example.com", "a@example.com", "mx");
        byte[] field = AuthenticationResults.Build("Mx.Relay.Test", spf, [], null);
        var message = field.Concat(Encoding.UTF8.GetBytes("Subject: x\r\n\r\n")).ToArray();
        var ranges = AuthenticationResults.FindOurs(message, "mx.relay.test");
        Assert.Single(ranges);
        Assert.Equal(field.Length, ranges[0].End.Value);
    }
}
