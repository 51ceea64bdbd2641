using System.Net;

namespace NativeRelay.Net;

/// <summary>What a session needs to know about the listener it came in on.</summary>
public sealed record ListenerInfo(IPEndPoint EndPoint);
