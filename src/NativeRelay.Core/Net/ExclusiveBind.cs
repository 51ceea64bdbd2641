using System.Net;
using System.Net.Sockets;

namespace NativeRelay.Net;

/// <summary>
/// Binds a listening socket so that a second process cannot listen on the same address.
/// <para>
/// .NET's <see cref="SocketOptionName.ReuseAddress"/> sets SO_REUSEPORT as well as SO_REUSEADDR on
/// Linux. SO_REUSEPORT lets any number of sockets listen on one port, and the kernel then splits
/// new connections between them: a second relay started by mistake would silently take half the
/// mail into another spool. Plain SO_REUSEADDR is what servers want: it allows a bind while old
/// connections of a stopped instance sit in TIME_WAIT (so a restart binds at once), and refuses
/// one while anybody is listening (EADDRINUSE).
/// </para>
/// </summary>
public static class ExclusiveBind
{
    // <asm-generic/socket.h>: the same values on every Linux architecture .NET runs on.
    private const int SolSocket = 1;
    private const int SoReuseAddr = 2;

    public static void Bind(Socket socket, EndPoint endPoint)
    {
        if (OperatingSystem.IsLinux())
            socket.SetRawSocketOption(SolSocket, SoReuseAddr, BitConverter.GetBytes(1));
        else
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true);
        socket.Bind(endPoint);
    }

    /// <summary>The one line an operator reads when a bind fails: what, where, and the likely cause.</summary>
    public static string Describe(EndPoint endPoint, SocketException e) => e.SocketErrorCode switch
    {
        SocketError.AddressAlreadyInUse => $"cannot listen on {endPoint}: the address is already in use (another relay or server is listening there)",
        SocketError.AddressNotAvailable => $"cannot listen on {endPoint}: the address is not on this host",
        SocketError.AccessDenied => $"cannot listen on {endPoint}: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
        _ => $"cannot listen on {endPoint}: {e.SocketErrorCode} ({e.Message})",
    };
}
