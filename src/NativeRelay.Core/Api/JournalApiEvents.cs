using System.Text;
using NativeRelay.Events;

namespace NativeRelay.Api;

/// <summary>
/// The HTTP side's events into the relay's event stage. Receptions are already published by the
/// spool intake the API shares with SMTP (durable before the 202, like SMTP's 250), so only the
/// unsubscribes, which no message carries, are published here.
/// </summary>
public sealed class JournalApiEvents(IEventPublisher events) : IApiEvents
{
    public void Received(ulong queueId, string sender, string recipient, InjectionMetadata metadata)
    {
        // Published by SpoolIntake at the append (with the injection's pool, tags and metadata).
    }

    public void Unsubscribed(string recipient, string senderDomain, string listId) =>
        events.PublishUnsubscribe(Encoding.UTF8.GetBytes(recipient), senderDomain, listId.Length == 0 ? null : listId);
}
