using System.Runtime.InteropServices;

namespace NativeRelay.Interop;

/// <summary>
/// The few libc file calls .NET has no API for: opening with flags it does not expose (O_DIRECT,
/// O_DSYNC for the spool's log segments) and fsync of a directory (Maildir). One binding for the
/// whole project, so the Linux flag values live in one place.
/// </summary>
internal static partial class Libc
{
    public const int O_RDONLY = 0;
    public const int O_WRONLY = 0x1;
    public const int O_CREAT = 0x40;
    public const int O_DSYNC = 0x1000;
    public const int O_CLOEXEC = 0x80000;
    // The one flag here that differs between the two Linux ABIs we build for (x86-64, arm64).
    public static readonly int O_DIRECT = RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 0x10000 : 0x4000;
    public const int EINVAL = 22;

    /// <summary>open(2); <paramref name="mode"/> matters only with O_CREAT. Returns -1 and sets the last P/Invoke error on failure.</summary>
    [LibraryImport("libc", EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int Open(string path, int flags, int mode = 0);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    public static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    public static partial int Close(int fd);

    /// <summary>syncfs(2): commits the whole file system that holds <paramref name="fd"/> (data and metadata).</summary>
    [LibraryImport("libc", EntryPoint = "syncfs", SetLastError = true)]
    public static partial int SyncFs(int fd);
}
