using System.Net;

namespace NativeRelay.Net;

/// <summary>What a session needs to know about the listener it came in on.</summary>
public sealed record ListenerInfo(IPEndPoint EndPoint, ListenerKind Kind = ListenerKind.Smtp)
{
    /// <summary>Submission (RFC 6409) or implicit-TLS submission (RFC 8314): AUTH required, headers completed.</summary>
    public bool IsSubmission => Kind != ListenerKind.Smtp;

    /// <summary>TLS starts with the connection, before the greeting.</summary>
    public bool IsImplicitTls => Kind == ListenerKind.ImplicitTls;
}
