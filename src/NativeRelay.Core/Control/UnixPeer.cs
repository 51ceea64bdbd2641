using System.Buffers.Binary;
using System.Net.Sockets;
using System.Runtime.InteropServices;

namespace NativeRelay.Control;

/// <summary>Who is at the other end of a Unix domain socket (SO_PEERCRED), and who we are.</summary>
public static partial class UnixPeer
{
    private const int SolSocket = 1;
    private const int SoPeerCred = 17;

    /// <summary>The peer's user id, or null where the platform cannot tell.</summary>
    public static int? UserId(Socket socket)
    {
        Span<byte> ucred = stackalloc byte[12]; // pid, uid, gid
        try
        {
            if (socket.GetRawSocketOption(SolSocket, SoPeerCred, ucred) < 12)
                return null;
        }
        catch (SocketException)
        {
            return null;
        }
        return BinaryPrimitives.ReadInt32LittleEndian(ucred[4..]);
    }

    public static int EffectiveUserId => (int)GetEffectiveUserId();

    /// <summary>The relay serves clients of its own user and root, nobody else.</summary>
    public static bool RelayServes(int relayUser, int? clientUser) => clientUser is int c && (c == relayUser || c == 0);

    /// <summary>The CLI talks to a relay of its own user or root's; root talks to any.</summary>
    public static bool ClientTrusts(int clientUser, int? relayUser) => relayUser is int r && (r == clientUser || r == 0 || clientUser == 0);

    [LibraryImport("libc", EntryPoint = "geteuid")]
    private static partial uint GetEffectiveUserId();
}
