using System.Runtime.InteropServices;

namespace NativeRelay.Interop;

/// <summary>
/// Random bytes from the kernel's CSPRNG with getrandom(2), for the paths that must run without
/// OpenSSL: .NET's RandomNumberGenerator is OpenSSL's RAND_bytes on Linux (its shim aborts the
/// process when OpenSSL is missing) and Guid.NewGuid reads /dev/urandom, which a root without /dev
/// lacks (docs/deploy/FOOTPRINT.md). getrandom needs neither: glibc 2.25+ and Linux 3.17+.
/// </summary>
internal static partial class KernelRandom
{
    private const int EINTR = 4;

    public static byte[] GetBytes(int count)
    {
        var bytes = new byte[count];
        Fill(bytes);
        return bytes;
    }

    public static unsafe void Fill(Span<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            nint n;
            fixed (byte* p = buffer)
                n = GetRandom(p, (nuint)buffer.Length, 0);
            if (n < 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                if (errno == EINTR)
                    continue;
                throw new IOException($"getrandom failed (errno {errno})");
            }
            buffer = buffer[(int)n..];
        }
    }

    [LibraryImport("libc", EntryPoint = "getrandom", SetLastError = true)]
    private static unsafe partial nint GetRandom(byte* buffer, nuint length, uint flags);
}
