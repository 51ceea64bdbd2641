using System.Runtime.InteropServices;

namespace NativeRelay.Events;

/// <summary>fdatasync(2), which .NET does not expose (FileStream.Flush(true) is fsync): the journal's commits change no file size, so the inode need not be written.</summary>
internal static partial class DataSync
{
    [LibraryImport("libc", EntryPoint = "fdatasync", SetLastError = true)]
    public static partial int Fdatasync(int fd);
}
