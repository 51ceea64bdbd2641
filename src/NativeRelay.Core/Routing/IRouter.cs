namespace NativeRelay.Routing;

/// <summary>Decides the next hop for a recipient domain.</summary>
public interface IRouter
{
    Route Resolve(ReadOnlySpan<byte> recipientDomain);
}
