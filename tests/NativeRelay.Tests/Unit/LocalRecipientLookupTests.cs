using System.Net;
using System.Text;
using NativeRelay.Config;
using NativeRelay.Local;
using NativeRelay.Policy;
using NativeRelay.Tests.Support;
using static NativeRelay.Tests.Support.LocalDeliveryFixtures;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// What RCPT knows about the users of local domains (the local agent's rules, applied before the
/// message exists), how the relay policy turns it into 250 / 550 5.1.1, and the aliases reload.
/// </summary>
public sealed class LocalRecipientLookupTests : IDisposable
{
    private static readonly IReadOnlyList<IPNetwork> Loopback = [IPNetwork.Parse("127.0.0.0/8")];

    private readonly TempDir _dir = new("nativerelay-lookup");

    public void Dispose() => _dir.Dispose();

    private string Aliases(string name, string text)
    {
        string file = _dir.File(name);
        File.WriteAllText(file, text);
        return file;
    }

    private static LocalRecipientLookup Lookup(LocalRecipientResolver resolver, string address)
    {
        var bytes = Encoding.UTF8.GetBytes(address);
        int at = address.LastIndexOf('@');
        return resolver.Lookup(bytes, bytes.AsSpan(at + 1));
    }

    [Fact]
    public void Listed_users_aliases_the_delimiter_and_existing_maildirs_exist_and_others_are_unknown()
    {
        string root = _dir.File("mail");
        Directory.CreateDirectory(Path.Combine(root, "carol")); // a Maildir made by hand counts as a user
        var settings = LocalDeliverySettings.Validate([
            new LocalDomainOptions
            {
                Domain = "local.test", MaildirRoot = root, Users = ["alice"],
                Aliases = Aliases("aliases", "info: alice\nteam: alice, friend@remote.test\ndead: nobody\n"),
            },
        ]);
        var resolver = LocalRecipientResolver.Load(settings);

        Assert.Equal(LocalRecipientLookup.Exists, Lookup(resolver, "alice@local.test"));
        Assert.Equal(LocalRecipientLookup.Exists, Lookup(resolver, "Alice@LOCAL.test"));
        Assert.Equal(LocalRecipientLookup.Exists, Lookup(resolver, "alice+news@local.test"));
        Assert.Equal(LocalRecipientLookup.Exists, Lookup(resolver, "info@local.test"));
        Assert.Equal(LocalRecipientLookup.Exists, Lookup(resolver, "team@local.test"));
        Assert.Equal(LocalRecipientLookup.Exists, Lookup(resolver, "carol@local.test"));
        Assert.Equal(LocalRecipientLookup.Unknown, Lookup(resolver, "bob@local.test"));
        Assert.Equal(LocalRecipientLookup.Unknown, Lookup(resolver, "dead@local.test")); // an alias leading nowhere
        Assert.Equal(LocalRecipientLookup.Unknown, Lookup(resolver, "\"a b\"@local.test"));
        Assert.Equal(LocalRecipientLookup.NotLocal, Lookup(resolver, "bob@remote.test"));
    }

    [Fact]
    public void A_catch_all_makes_every_user_exist()
    {
        var settings = LocalDeliverySettings.Validate([
            new LocalDomainOptions { Domain = "local.test", MaildirRoot = _dir.File("mail"), Users = ["alice"] },
            new LocalDomainOptions { Domain = "catch.test", MaildirRoot = _dir.File("mail2"), CatchAll = "alice@local.test" },
        ]);
        var resolver = LocalRecipientResolver.Load(settings);
        Assert.Equal(LocalRecipientLookup.Exists, Lookup(resolver, "anyone@catch.test"));
        Assert.Equal(LocalRecipientLookup.Unknown, Lookup(resolver, "anyone@local.test"));
    }

    [Fact]
    public void Domains_that_take_any_user_are_unverified_except_bad_names()
    {
        var settings = LocalDeliverySettings.Validate([
            new LocalDomainOptions { Domain = "open.test", MaildirRoot = _dir.File("mail"), Aliases = Aliases("a2", "sales: bob\n") },
            new LocalDomainOptions { Domain = "lmtp.test", Lmtp = "127.0.0.1:24" },
            new LocalDomainOptions { Domain = "lmtp-users.test", Lmtp = "127.0.0.1:24", Users = ["dave"] },
        ]);
        var resolver = LocalRecipientResolver.Load(settings);
        Assert.Equal(LocalRecipientLookup.Unverified, Lookup(resolver, "jane@open.test"));
        Assert.Equal(LocalRecipientLookup.Exists, Lookup(resolver, "sales@open.test"));
        Assert.Equal(LocalRecipientLookup.Unknown, Lookup(resolver, "../etc@open.test"));
        Assert.Equal(LocalRecipientLookup.Unverified, Lookup(resolver, "anyone@lmtp.test"));
        Assert.Equal(LocalRecipientLookup.Exists, Lookup(resolver, "dave@lmtp-users.test"));
        Assert.Equal(LocalRecipientLookup.Unknown, Lookup(resolver, "erin@lmtp-users.test"));
    }

    [Fact]
    public void The_policy_refuses_unknown_users_and_narrows_unverified_domains_only_when_the_recipient_list_names_them()
    {
        var settings = LocalDeliverySettings.Validate([
            new LocalDomainOptions { Domain = "local.test", MaildirRoot = _dir.File("mail"), Users = ["alice"] },
            new LocalDomainOptions { Domain = "lmtp.test", Lmtp = "127.0.0.1:24" },
            new LocalDomainOptions { Domain = "lmtp2.test", Lmtp = "127.0.0.1:24" },
        ]);
        var agent = new ReloadableLocalDeliveryAgent(LocalDeliveryAgent.Create(settings, "mx.test", TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1)));
        var policy = new RecipientPolicy(Loopback, [], ["known@lmtp.test"], null) { LocalLookup = agent.LookupRecipient };

        RecipientVerdict Check(string address) => policy.Check(Encoding.UTF8.GetBytes(address), mayRelay: false);
        Assert.Equal(RecipientVerdict.Accept, Check("alice@local.test"));
        Assert.Equal(RecipientVerdict.UnknownUser, Check("bob@local.test"));
        Assert.Equal(RecipientVerdict.Accept, Check("postmaster@local.test"));
        Assert.Equal(RecipientVerdict.Accept, Check("known@lmtp.test"));
        Assert.Equal(RecipientVerdict.UnknownUser, Check("stranger@lmtp.test")); // the list names lmtp.test
        Assert.Equal(RecipientVerdict.Accept, Check("stranger@lmtp2.test"));     // it does not name lmtp2.test
        Assert.Equal(RecipientVerdict.RelayDenied, Check("bob@remote.test"));
    }

    [Fact]
    public void Reloading_sees_a_changed_aliases_file_and_keeps_the_old_one_when_the_new_is_broken()
    {
        string file = Aliases("aliases", "info: alice\n");
        var settings = LocalDeliverySettings.Validate([
            new LocalDomainOptions { Domain = "local.test", MaildirRoot = _dir.File("mail"), Users = ["alice"], Aliases = file },
        ]);
        var agent = new ReloadableLocalDeliveryAgent(LocalDeliveryAgent.Create(settings, "mx.test", TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1)));
        LocalRecipientLookup Lookup(string address)
        {
            var bytes = Encoding.UTF8.GetBytes(address);
            return agent.LookupRecipient(bytes, bytes.AsSpan(0, address.IndexOf('@')), bytes.AsSpan(address.IndexOf('@') + 1));
        }

        Assert.Null(agent.ReloadFiles(force: false)); // nothing changed
        Assert.Equal(LocalRecipientLookup.Unknown, Lookup("sales@local.test"));

        File.WriteAllText(file, "info: alice\nsales: alice\n# a longer file\n");
        Assert.StartsWith("reloaded local aliases: 2 entries", agent.ReloadFiles(force: false));
        Assert.Equal(LocalRecipientLookup.Exists, Lookup("sales@local.test"));

        File.WriteAllText(file, "sales: |/bin/sh\n");
        Assert.StartsWith("keeping the previous local aliases", agent.ReloadFiles(force: true));
        Assert.Equal(LocalRecipientLookup.Exists, Lookup("sales@local.test"));
    }
}
