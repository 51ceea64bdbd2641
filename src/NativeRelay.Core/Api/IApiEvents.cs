namespace NativeRelay.Api;

/// <summary>
/// What the HTTP side tells the events stage: a message accepted into the spool (reception) and a
/// recipient's one-click unsubscribe. Called after the spool commit (reception) or after the
/// unsubscribe was recorded, never on a path that can refuse the request; an implementation must
/// not block. The relay without an events stage uses <see cref="None"/>.
/// </summary>
public interface IApiEvents
{
    void Received(ulong queueId, string sender, string recipient, InjectionMetadata metadata);

    void Unsubscribed(string recipient, string senderDomain, string listId);

    public static readonly IApiEvents None = new NoEvents();

    private sealed class NoEvents : IApiEvents
    {
        public void Received(ulong queueId, string sender, string recipient, InjectionMetadata metadata) { }
        public void Unsubscribed(string recipient, string senderDomain, string listId) { }
    }
}
