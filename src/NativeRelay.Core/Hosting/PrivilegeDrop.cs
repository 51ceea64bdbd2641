using System.Runtime.InteropServices;
using NativeRelay.Config;

namespace NativeRelay.Hosting;

/// <summary>
/// Switches the process to an unprivileged user (the <c>user</c> option, <c>serve --user</c>):
/// supplementary groups from the group database (initgroups), then the primary group, then the
/// user, through libc. glibc applies set*id to every thread of the process. Called after the
/// listeners are bound and before the spool is opened, so everything the relay creates from then
/// on (spool files, control socket, delivery log, Maildir files) belongs to that user.
/// </summary>
public static partial class PrivilegeDrop
{
    /// <summary>The user's ids, from the password database (getpwnam: files, LDAP, ...).</summary>
    public sealed record Account(string Name, uint Uid, uint Gid);

    /// <exception cref="ConfigException">No such user.</exception>
    public static Account Lookup(string name)
    {
        // struct passwd on Linux (LP64): char* pw_name, char* pw_passwd, uid_t pw_uid, gid_t pw_gid, ...
        Marshal.SetLastPInvokeError(0);
        nint pw = GetPwNam(name);
        if (pw == 0)
            throw new ConfigException($"user: no user named '{name}'");
        uint uid = (uint)Marshal.ReadInt32(pw, 2 * IntPtr.Size);
        uint gid = (uint)Marshal.ReadInt32(pw, 2 * IntPtr.Size + 4);
        return new Account(name, uid, gid);
    }

    public static uint CurrentUid => GetUid();

    /// <summary>
    /// Becomes the user. Already running as that user: nothing to do. Not root: refused (a relay
    /// configured to drop privileges never runs on as someone else). Any failed step: refused,
    /// and the caller stops the relay.
    /// </summary>
    /// <exception cref="ConfigException">The switch is impossible or failed.</exception>
    public static void Become(Account account)
    {
        if (GetUid() == account.Uid && GetEUid() == account.Uid)
            return;
        if (GetEUid() != 0)
            throw new ConfigException($"user: cannot switch to '{account.Name}': the relay is not running as root (uid {GetEUid()})");
        if (InitGroups(account.Name, account.Gid) != 0)
            throw Failed("initgroups");
        if (SetGid(account.Gid) != 0)
            throw Failed("setgid");
        if (SetUid(account.Uid) != 0)
            throw Failed("setuid");
        // Check that there is no way back: setuid(0) must fail now.
        if (GetUid() != account.Uid || GetEUid() != account.Uid || GetGid() != account.Gid || (account.Uid != 0 && SetUid(0) == 0))
            throw new ConfigException($"user: switching to '{account.Name}' did not take effect");

        ConfigException Failed(string call) =>
            new($"user: cannot switch to '{account.Name}': {call} failed (errno {Marshal.GetLastPInvokeError()})");
    }

    /// <summary>
    /// Creates the spool directory if needed and hands it, with everything in it, to the user, so a
    /// spool first made by root (or by an earlier run without <c>user</c>) stays usable after the
    /// drop. Only an empty directory or a NativeRelay spool (it has the spool's relay.lock) is
    /// handed over: a mistyped <c>spool</c> such as /var must never be given away.
    /// </summary>
    /// <exception cref="ConfigException">The directory holds something else, or a chown failed.</exception>
    public static void PrepareDirectory(string path, Account account)
    {
        Directory.CreateDirectory(path);
        bool empty = !Directory.EnumerateFileSystemEntries(path).Any();
        if (!empty && !File.Exists(Path.Combine(path, "relay.lock")))
            throw new ConfigException($"user: the spool {path} is neither empty nor a NativeRelay spool; refusing to give it to '{account.Name}'");
        Own(path);
        // The maildrop's files belong to the users who submitted them (their owner is who the
        // Received header names), so they keep it; the maildrop directory itself is the relay's.
        string maildrop = Path.Combine(path, NativeRelay.Maildrop.MaildropDirectory.Name) + Path.DirectorySeparatorChar;
        foreach (var entry in Directory.EnumerateFileSystemEntries(path, "*", new EnumerationOptions { RecurseSubdirectories = true, AttributesToSkip = 0 }))
            if (!(entry.StartsWith(maildrop, StringComparison.Ordinal) && File.Exists(entry) && Path.GetDirectoryName(entry) + Path.DirectorySeparatorChar == maildrop))
                Own(entry);

        void Own(string p)
        {
            if (LChown(p, account.Uid, account.Gid) != 0)
                throw new ConfigException($"user: cannot give {p} to '{account.Name}' (errno {Marshal.GetLastPInvokeError()})");
        }
    }

    [LibraryImport("libc", EntryPoint = "getpwnam", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial nint GetPwNam(string name);

    [LibraryImport("libc", EntryPoint = "getpwuid", SetLastError = true)]
    internal static partial IntPtr GetPwUid(uint uid);

    /// <summary>True when the password database has an entry for the effective user (what .NET falls back to without HOME).</summary>
    internal static bool CurrentUserHasEntry() => GetPwUid(GetEUid()) != IntPtr.Zero;

    [LibraryImport("libc", EntryPoint = "initgroups", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int InitGroups(string user, uint group);

    [LibraryImport("libc", EntryPoint = "setgid", SetLastError = true)]
    private static partial int SetGid(uint gid);

    [LibraryImport("libc", EntryPoint = "setuid", SetLastError = true)]
    private static partial int SetUid(uint uid);

    [LibraryImport("libc", EntryPoint = "getuid")]
    private static partial uint GetUid();

    [LibraryImport("libc", EntryPoint = "geteuid")]
    internal static partial uint GetEUid();

    [LibraryImport("libc", EntryPoint = "getgid")]
    private static partial uint GetGid();

    [LibraryImport("libc", EntryPoint = "lchown", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int LChown(string path, uint uid, uint gid);
}
