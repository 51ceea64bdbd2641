using NativeRelay.Message;
using NativeRelay.Spool;

namespace NativeRelay.Local;

/// <summary>
/// The seam for SIGHUP: the delivery loops hold this one instance; <see cref="Reload"/> builds a
/// complete new agent from the new settings (aliases files read and checked) and swaps it in
/// atomically. If anything in the new configuration is wrong, the ConfigException propagates and
/// the running agent stays. Deliveries in progress finish with the agent they started with.
/// </summary>
public sealed class ReloadableLocalDeliveryAgent(LocalDeliveryAgent initial) : ILocalDeliveryAgent
{
    private LocalDeliveryAgent _current = initial;

    public LocalDeliveryAgent Current => Volatile.Read(ref _current);

    public void Reload(LocalDeliverySettings settings, string hostname, TimeSpan connectTimeout, TimeSpan replyTimeout, ILocalForwarder? forwarder = null)
    {
        var next = LocalDeliveryAgent.Create(settings, hostname, connectTimeout, replyTimeout, forwarder);
        Volatile.Write(ref _current, next);
    }

    /// <summary>Swaps in an agent already built (and so already checked) by the caller.</summary>
    public void Use(LocalDeliveryAgent next) => Volatile.Write(ref _current, next);

    public bool IsLocal(ReadOnlySpan<byte> domain) => Current.IsLocal(domain);

    public Task<LocalResult[]> DeliverAsync(Envelope envelope, MessageBuffer body, IReadOnlyList<int> recipientIndexes, CancellationToken cancel = default) =>
        Current.DeliverAsync(envelope, body, recipientIndexes, cancel);
}
