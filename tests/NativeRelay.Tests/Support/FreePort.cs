using System.Net;
using System.Net.Sockets;

namespace NativeRelay.Tests.Support;

/// <summary>Free loopback ports.</summary>
public static class FreePort
{
    /// <summary>Binds 127.0.0.1:0, reads the port the system chose, and releases it.</summary>
    public static int Get()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }
}
