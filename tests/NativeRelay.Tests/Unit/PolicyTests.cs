using System.Net;
using System.Text;
using NativeRelay.Config;
using NativeRelay.Policy;

namespace NativeRelay.Tests.Unit;

public sealed class PolicyTests
{
    private static readonly IReadOnlyList<IPNetwork> Loopback = [IPNetwork.Parse("127.0.0.0/8"), IPNetwork.Parse("::1/128")];

    private static RecipientVerdict Check(RecipientPolicy policy, string address, bool mayRelay) =>
        policy.Check(Encoding.UTF8.GetBytes(address), mayRelay);

    [Fact]
    public void Out_of_the_box_the_relay_is_not_open()
    {
        var settings = RelaySettings.Validate(new RelayOptions());
        var policy = RecipientPolicy.FromSettings(settings);

        Assert.True(policy.IsRelayClient(IPAddress.Loopback));
        Assert.True(policy.IsRelayClient(IPAddress.IPv6Loopback));
        Assert.True(policy.IsRelayClient(IPAddress.Parse("::ffff:127.0.0.1")));
        Assert.False(policy.IsRelayClient(IPAddress.Parse("192.0.2.10")));
        Assert.False(policy.IsRelayClient(IPAddress.Parse("10.1.2.3")));
        Assert.False(policy.IsAcceptedDomain("example.com"u8));
        Assert.Equal(RecipientVerdict.RelayDenied, Check(policy, "victim@example.com", mayRelay: false));
    }

    [Fact]
    public void Accepted_domains_take_mail_from_anyone_and_other_domains_need_relay_permission()
    {
        var policy = new RecipientPolicy(Loopback, ["example.com", ".example.org"], [], null);

        Assert.Equal(RecipientVerdict.Accept, Check(policy, "anyone@example.com", mayRelay: false));
        Assert.Equal(RecipientVerdict.Accept, Check(policy, "anyone@EXAMPLE.Com", mayRelay: false));
        Assert.Equal(RecipientVerdict.RelayDenied, Check(policy, "anyone@sub.example.com", mayRelay: false));
        Assert.Equal(RecipientVerdict.Accept, Check(policy, "anyone@sub.example.org", mayRelay: false));
        Assert.Equal(RecipientVerdict.Accept, Check(policy, "anyone@a.b.example.org", mayRelay: false));
        Assert.Equal(RecipientVerdict.RelayDenied, Check(policy, "anyone@example.org", mayRelay: false));
        Assert.Equal(RecipientVerdict.RelayDenied, Check(policy, "anyone@notexample.com", mayRelay: false));
        Assert.Equal(RecipientVerdict.RelayDenied, Check(policy, "anyone@example.com.evil.test", mayRelay: false));
        Assert.Equal(RecipientVerdict.Accept, Check(policy, "anyone@elsewhere.test", mayRelay: true));
    }

    [Fact]
    public void Postmaster_without_a_domain_is_always_accepted()
    {
        var policy = new RecipientPolicy(Loopback, [], [], null);

        Assert.Equal(RecipientVerdict.Accept, Check(policy, "postmaster", mayRelay: false));
        Assert.Equal(RecipientVerdict.Accept, Check(policy, "PostMaster", mayRelay: false));
    }

    [Fact]
    public void Local_recipient_list_refuses_unknown_users_of_accepted_domains_only()
    {
        var policy = new RecipientPolicy(Loopback, ["example.com", "example.net"], ["alice@example.com", "@example.net"], null);

        Assert.Equal(RecipientVerdict.Accept, Check(policy, "alice@example.com", mayRelay: false));
        Assert.Equal(RecipientVerdict.Accept, Check(policy, "ALICE@Example.COM", mayRelay: false));
        Assert.Equal(RecipientVerdict.UnknownUser, Check(policy, "mallory@example.com", mayRelay: false));
        Assert.Equal(RecipientVerdict.UnknownUser, Check(policy, "mallory@example.com", mayRelay: true));
        Assert.Equal(RecipientVerdict.Accept, Check(policy, "postmaster@example.com", mayRelay: false));
        Assert.Equal(RecipientVerdict.Accept, Check(policy, "whoever@example.net", mayRelay: false));
        Assert.Equal(RecipientVerdict.Accept, Check(policy, "someone@remote.test", mayRelay: true));
    }

    [Fact]
    public void Local_delivery_lookup_accepts_its_domains_from_anyone_and_refuses_its_unknown_users()
    {
        var policy = new RecipientPolicy(Loopback, [], [], null)
        {
            LocalLookup = (_, local, domain) =>
                !"local.test"u8.SequenceEqual(domain) ? LocalRecipientLookup.NotLocal
                : "alice"u8.SequenceEqual(local) ? LocalRecipientLookup.Exists
                : LocalRecipientLookup.Unknown,
        };

        Assert.Equal(RecipientVerdict.Accept, Check(policy, "alice@local.test", mayRelay: false));
        Assert.Equal(RecipientVerdict.UnknownUser, Check(policy, "bob@local.test", mayRelay: false));
        Assert.Equal(RecipientVerdict.Accept, Check(policy, "postmaster@local.test", mayRelay: false));
        Assert.Equal(RecipientVerdict.RelayDenied, Check(policy, "alice@remote.test", mayRelay: false));
        Assert.Equal(RecipientVerdict.Accept, Check(policy, "alice@remote.test", mayRelay: true));
    }

    [Fact]
    public void Recipients_file_is_read_and_reloaded_and_a_broken_file_keeps_the_old_list()
    {
        using var dir = new Support.TempDir();
        string path = dir.File("recipients");
        File.WriteAllText(path, "# users\nalice@example.com\n\nbob@example.com  # a comment\n");
        var policy = new RecipientPolicy(Loopback, ["example.com"], [], path);
        Assert.Equal(RecipientVerdict.Accept, Check(policy, "bob@example.com", false));
        Assert.Equal(RecipientVerdict.UnknownUser, Check(policy, "carol@example.com", false));

        File.WriteAllText(path, "carol@example.com\n");
        File.SetLastWriteTimeUtc(path, DateTime.UtcNow.AddSeconds(5));
        Assert.Contains("reloaded", policy.ReloadRecipientsFile(force: false));
        Assert.Equal(RecipientVerdict.Accept, Check(policy, "carol@example.com", false));
        Assert.Equal(RecipientVerdict.UnknownUser, Check(policy, "bob@example.com", false));

        File.WriteAllText(path, "not an address\n");
        Assert.Contains("keeping", policy.ReloadRecipientsFile(force: true));
        Assert.Equal(RecipientVerdict.Accept, Check(policy, "carol@example.com", false));
    }

    [Theory]
    [InlineData("Example.COM", "example.com")]
    [InlineData(" .Example.org ", ".example.org")]
    [InlineData("bücher.example", "bücher.example")]
    [InlineData("", null)]
    [InlineData(".", null)]
    [InlineData("-bad.example", null)]
    [InlineData("[192.0.2.1]", null)]
    [InlineData("a..b", null)]
    public void Domain_entries_are_normalised_or_refused(string entry, string? expected)
    {
        Assert.Equal(expected, RecipientPolicy.NormalizeDomainEntry(entry));
    }

    [Theory]
    [InlineData("Alice@Example.COM", "alice@example.com")]
    [InlineData("@Example.org", "@example.org")]
    [InlineData("alice", null)]
    [InlineData("alice@", null)]
    [InlineData("a b@example.com", null)]
    [InlineData("alice@.example.com", null)]
    public void Recipient_entries_are_normalised_or_refused(string entry, string? expected)
    {
        Assert.Equal(expected, RecipientPolicy.NormalizeRecipientEntry(entry));
    }
}
