using System.Runtime.InteropServices;
using NativeRelay.Interop;

namespace NativeRelay.Maildrop;

/// <summary>
/// Where <c>sendmail</c> leaves mail when the relay cannot be reached, and the permissions that
/// let every local user drop a message there without reading anybody else's (Postfix's maildrop,
/// without a setgid helper):
/// <list type="bullet">
/// <item>the spool directory is <c>0711</c>: anyone may pass through it to the maildrop, nobody but
///   the relay may list it, and the spool's own files are <c>0600</c>;</item>
/// <item><c>SPOOL/maildrop</c> is <c>3733</c> (<c>rwx-wx-wx</c> with set-group-id and sticky), owned by
///   the relay's user and group: users may create files in it but not list it, a file created in
///   it takes the directory's group, and only its owner (or the relay) may rename or remove it;</item>
/// <item>each file is <c>0640</c>: its owner and the relay's group read it, nobody else does, and its
///   name has 128 random bits, so it cannot be found without listing the directory.</item>
/// </list>
/// A file is written as <c>tmp.NAME</c>, fsynced, renamed to <c>NAME</c> and the directory fsynced:
/// a file without the <c>tmp.</c> prefix is complete and durable.
/// </summary>
public static class MaildropDirectory
{
    public const string Name = "maildrop";
    public const string TempPrefix = "tmp.";

    public const UnixFileMode DirectoryMode = UnixFileMode.SetGroup | UnixFileMode.StickyBit
        | UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
        | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
        | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;

    public const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead;

    /// <summary>The spool itself: searchable by everyone (to reach the maildrop), readable by the relay only.</summary>
    public const UnixFileMode SpoolMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
        | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute;

    public static string PathOf(string spoolDirectory) => Path.Combine(spoolDirectory, Name);

    /// <summary>
    /// Makes the new name durable. The relay's user fsyncs the directory; another user cannot,
    /// since fsync needs the directory open and the maildrop is not readable to others, so its
    /// sendmail commits the file system that holds the file instead (syncfs: slower, and rare).
    /// </summary>
    private static void MakeRenameDurable(string directory, Microsoft.Win32.SafeHandles.SafeFileHandle file)
    {
        if (NativeRelay.Local.MaildirWriter.TryFsyncDirectory(directory, out _))
            return;
        if (Libc.SyncFs((int)file.DangerousGetHandle()) != 0)
            throw new IOException($"syncfs for {directory} failed (errno {Marshal.GetLastPInvokeError()})");
    }

    /// <summary>
    /// Makes the maildrop (and gives the spool its mode) as the relay's user; called by the relay
    /// at start. Modes are set with chmod, which the umask does not narrow.
    /// </summary>
    public static string Ensure(string spoolDirectory)
    {
        if (OperatingSystem.IsWindows())
            throw new PlatformNotSupportedException("the maildrop needs Unix permissions");
        string path = PathOf(spoolDirectory);
        Directory.CreateDirectory(path);
        // Before the spool becomes searchable, close what is in it (names such as queue.log.0 are
        // easy to guess): files the relay made before this call or a spool written by an older
        // version (0644 segments), and subdirectories such as commits/, whose files are rewritten
        // with the umask's mode.
        const UnixFileMode others = UnixFileMode.GroupRead | UnixFileMode.GroupWrite | UnixFileMode.GroupExecute
            | UnixFileMode.OtherRead | UnixFileMode.OtherWrite | UnixFileMode.OtherExecute;
        foreach (var entry in Directory.EnumerateFileSystemEntries(spoolDirectory))
        {
            if (entry == path || (File.GetAttributes(entry) & FileAttributes.ReparsePoint) != 0)
                continue;
            var mode = File.GetUnixFileMode(entry);
            if ((mode & others) != 0)
                File.SetUnixFileMode(entry, mode & ~others);
        }
        File.SetUnixFileMode(spoolDirectory, SpoolMode);
        File.SetUnixFileMode(path, DirectoryMode);
        return path;
    }

    /// <summary>
    /// Writes one message durably into the maildrop of <paramref name="spoolDirectory"/> and returns
    /// the file's name. When the maildrop does not exist yet (the relay never ran on this spool),
    /// it is made here if this user may, with the same modes, and the relay adopts it at start.
    /// </summary>
    /// <exception cref="IOException">The maildrop cannot be written (missing and not creatable, full disk, ...).</exception>
    /// <exception cref="UnauthorizedAccessException">This user may not write there.</exception>
    public static string Submit(string spoolDirectory, byte[] file)
    {
        if (OperatingSystem.IsWindows())
            throw new PlatformNotSupportedException("the maildrop needs Unix permissions");
        string directory = PathOf(spoolDirectory);
        if (!Directory.Exists(directory))
            Ensure(spoolDirectory);
        // From the kernel, not RandomNumberGenerator (OpenSSL's): sendmail must work without OpenSSL.
        string name = Convert.ToHexStringLower(KernelRandom.GetBytes(16));
        string temp = Path.Combine(directory, TempPrefix + name);
        string final = Path.Combine(directory, name);
        try
        {
            using var stream = new FileStream(temp, new FileStreamOptions
            {
                Mode = System.IO.FileMode.CreateNew,
                Access = FileAccess.Write,
                Share = FileShare.None,
                UnixCreateMode = FileMode,
            });
            // The umask may have taken the group's read bit; the relay needs it.
            File.SetUnixFileMode(stream.SafeFileHandle, FileMode);
            stream.Write(file);
            stream.Flush(flushToDisk: true);
            File.Move(temp, final);
            MakeRenameDurable(directory, stream.SafeFileHandle);
            return name;
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { } catch (UnauthorizedAccessException) { }
            throw;
        }
    }
}
