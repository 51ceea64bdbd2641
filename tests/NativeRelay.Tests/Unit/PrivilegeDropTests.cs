using NativeRelay.Config;
using NativeRelay.Hosting;

namespace NativeRelay.Tests.Unit;

public sealed class PrivilegeDropTests
{
    [Fact]
    public void An_unknown_user_is_a_configuration_error()
    {
        var e = Assert.Throws<ConfigException>(() => PrivilegeDrop.Lookup("no-such-user-nr7"));
        Assert.Equal("user: no user named 'no-such-user-nr7'", e.Message);
    }

    [Fact]
    public void Root_is_found_with_uid_and_gid_zero()
    {
        var root = PrivilegeDrop.Lookup("root");
        Assert.Equal(0u, root.Uid);
        Assert.Equal(0u, root.Gid);
    }

    [Fact]
    public void Only_an_empty_directory_or_a_spool_is_handed_to_the_user()
    {
        using var dir = new Support.TempDir("nativerelay-unit");
        var self = PrivilegeDrop.Lookup(Environment.UserName);

        string missing = dir.File("new-spool");
        PrivilegeDrop.PrepareDirectory(missing, self); // created
        Assert.True(Directory.Exists(missing));

        string spool = dir.File("spool");
        Directory.CreateDirectory(Path.Combine(spool, "commits"));
        File.WriteAllText(Path.Combine(spool, "relay.lock"), "");
        PrivilegeDrop.PrepareDirectory(spool, self);

        string other = dir.File("etc");
        Directory.CreateDirectory(other);
        File.WriteAllText(Path.Combine(other, "passwd"), "");
        var e = Assert.Throws<ConfigException>(() => PrivilegeDrop.PrepareDirectory(other, self));
        Assert.Contains("neither empty nor a NativeRelay spool", e.Message);
    }
}
