using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace NativeRelay.Interop;

/// <summary>
/// What the kernel says about an open file that .NET does not expose: who owns it, what kind of
/// file it is and how many names it has (statx(2) on the descriptor, so the answer is about the
/// file actually opened, not about whatever the name points at a moment later), and the owner's
/// user name (getpwuid_r(3): files, LDAP, whatever NSS is set up with).
/// </summary>
internal static partial class FileOwner
{
    // O_NOFOLLOW is the other open flag that differs between x86-64 and arm64.
    private static readonly int O_NOFOLLOW = RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? 0x8000 : 0x20000;
    private const int O_NONBLOCK = 0x800;
    private const int AT_EMPTY_PATH = 0x1000;
    private const uint STATX_TYPE = 0x1, STATX_MODE = 0x2, STATX_NLINK = 0x4, STATX_UID = 0x8, STATX_SIZE = 0x200;
    private const int S_IFMT = 0xF000, S_IFREG = 0x8000;

    /// <summary>The facts about one open file (struct statx: the same layout on every architecture).</summary>
    public readonly record struct Facts(uint Uid, uint LinkCount, bool IsRegularFile, long Size);

    /// <summary>
    /// Opens a file for reading without following a symbolic link in its last component and
    /// without blocking on a FIFO: a file in a directory that anyone may write to is not trusted
    /// to be what its name says. Returns null with the errno when the open fails.
    /// </summary>
    public static SafeFileHandle? OpenNoFollow(string path, out int errno)
    {
        int fd = Libc.Open(path, Libc.O_RDONLY | Libc.O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
        if (fd < 0)
        {
            errno = Marshal.GetLastPInvokeError();
            return null;
        }
        errno = 0;
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    public static Facts Stat(SafeFileHandle file)
    {
        Span<byte> buffer = stackalloc byte[256];
        int result;
        unsafe
        {
            fixed (byte* p = buffer)
                result = StatX((int)file.DangerousGetHandle(), "", AT_EMPTY_PATH, STATX_TYPE | STATX_MODE | STATX_NLINK | STATX_UID | STATX_SIZE, p);
        }
        if (result != 0)
            throw new IOException($"statx failed (errno {Marshal.GetLastPInvokeError()})");
        // struct statx: u32 mask @0, u32 blksize @4, u64 attributes @8, u32 nlink @16, u32 uid @20,
        // u32 gid @24, u16 mode @28, u16 pad, u64 ino @32, u64 size @40.
        uint nlink = BitConverter.ToUInt32(buffer[16..]);
        uint uid = BitConverter.ToUInt32(buffer[20..]);
        ushort mode = BitConverter.ToUInt16(buffer[28..]);
        long size = BitConverter.ToInt64(buffer[40..]);
        return new Facts(uid, nlink, (mode & S_IFMT) == S_IFREG, size);
    }

    /// <summary>The user name of a uid, or null when the password database has none.</summary>
    public static string? UserName(uint uid)
    {
        // struct passwd on LP64 is 48 bytes (five pointers, two 32-bit ids); pw_name is first.
        Span<byte> passwd = stackalloc byte[64];
        byte[] strings = new byte[16 * 1024];
        unsafe
        {
            fixed (byte* pw = passwd)
            fixed (byte* buf = strings)
            {
                nint found;
                if (GetPwUidR(uid, pw, buf, (nuint)strings.Length, &found) != 0 || found == 0)
                    return null;
                return Marshal.PtrToStringUTF8(*(nint*)pw);
            }
        }
    }

    [LibraryImport("libc", EntryPoint = "statx", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static unsafe partial int StatX(int dirfd, string path, int flags, uint mask, byte* statx);

    [LibraryImport("libc", EntryPoint = "getpwuid_r")]
    private static unsafe partial int GetPwUidR(uint uid, byte* pwd, byte* buffer, nuint length, nint* result);
}
