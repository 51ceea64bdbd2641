using NativeRelay.Config;

namespace NativeRelay.Routing;

/// <summary>
/// Routing from configuration alone: with --relay-to every domain goes to that smarthost; without
/// it there is no route until MX resolution exists, and mail waits in the queue (logged clearly).
/// </summary>
public sealed class StaticRouter : IRouter
{
    private readonly Route _route;

    public StaticRouter(NextHop? relayTo)
    {
        _route = relayTo is null
            ? Route.None("no route: MX delivery is not available yet and no relayTo is configured")
            : new Route($"relay:{relayTo}", [new RouteHost(relayTo.Host, relayTo.Port)]);
    }

    public Route Resolve(ReadOnlySpan<byte> recipientDomain) => _route;
}
