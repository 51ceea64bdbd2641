using NativeRelay.Config;
using NativeRelay.Message;
using NativeRelay.Policy;
using NativeRelay.Spool;

namespace NativeRelay.Local;

/// <summary>
/// The seam for SIGHUP: the delivery loops and the RCPT check hold this one instance;
/// <see cref="Reload"/> builds a complete new agent from the new settings (aliases files read and
/// checked) and swaps it in atomically, and <see cref="ReloadFiles"/> does the same when only the
/// aliases files changed. If anything new is wrong, the running agent stays. Deliveries in
/// progress finish with the agent they started with.
/// </summary>
public sealed class ReloadableLocalDeliveryAgent : ILocalDeliveryAgent
{
    private LocalDeliveryAgent _current;
    private FileStamp[] _aliasStamps;

    public ReloadableLocalDeliveryAgent(LocalDeliveryAgent initial)
    {
        _current = initial;
        _aliasStamps = StampAliasFiles(initial.Settings);
    }

    public LocalDeliveryAgent Current => Volatile.Read(ref _current);

    public void Reload(LocalDeliverySettings settings, string hostname, TimeSpan connectTimeout, TimeSpan replyTimeout, ILocalForwarder? forwarder = null)
    {
        var stamps = StampAliasFiles(settings);
        var next = LocalDeliveryAgent.Create(settings, hostname, connectTimeout, replyTimeout, forwarder);
        Volatile.Write(ref _current, next);
        _aliasStamps = stamps;
    }

    /// <summary>
    /// Re-reads the aliases files when one changed (always when forced), for the SMTP server's
    /// reload (SIGHUP and the periodic check). Returns a line for the log, or null. A file that
    /// cannot be read or parsed keeps the aliases in use ("keeping ..." line).
    /// </summary>
    public string? ReloadFiles(bool force)
    {
        var agent = Current;
        var stamps = StampAliasFiles(agent.Settings);
        if (stamps.Length == 0 || (!force && stamps.AsSpan().SequenceEqual(_aliasStamps)))
            return null;
        _aliasStamps = stamps; // taken before reading: a change during the read is seen at the next check
        try
        {
            var resolver = LocalRecipientResolver.Load(agent.Settings);
            Volatile.Write(ref _current, agent.WithResolver(resolver));
            return DescribeAliases(agent.Settings, resolver, stamps.Length);
        }
        catch (ConfigException e)
        {
            return $"keeping the previous local aliases: {e.Message}";
        }
    }

    /// <summary>For <see cref="RecipientPolicy.LocalLookup"/>: what RCPT may know, by the agent in use now.</summary>
    public LocalRecipientLookup LookupRecipient(ReadOnlySpan<byte> address, ReadOnlySpan<byte> localPart, ReadOnlySpan<byte> domain) =>
        Current.Resolver.Lookup(address, domain);

    private static FileStamp[] StampAliasFiles(LocalDeliverySettings settings) =>
        settings.Domains.Select(d => d.AliasesFile).OfType<string>().Distinct(StringComparer.Ordinal).Select(FileStamp.Of).ToArray();

    /// <summary>Swaps in an agent already built (and so already checked) by the caller.</summary>
    /// <returns>A line for the log about the aliases the new agent read, or null when it has no aliases files.</returns>
    public string? Use(LocalDeliveryAgent next)
    {
        var stamps = StampAliasFiles(next.Settings);
        Volatile.Write(ref _current, next);
        _aliasStamps = stamps;
        return stamps.Length == 0 ? null : DescribeAliases(next.Settings, next.Resolver, stamps.Length);
    }

    private static string DescribeAliases(LocalDeliverySettings settings, LocalRecipientResolver resolver, int files)
    {
        int entries = settings.Domains.Select(resolver.AliasesOf).Distinct().Sum(t => t.Count);
        return $"reloaded local aliases: {entries} entries from {files} file(s)";
    }

    public bool IsLocal(ReadOnlySpan<byte> domain) => Current.IsLocal(domain);

    public Task<LocalResult[]> DeliverAsync(Envelope envelope, MessageBuffer body, IReadOnlyList<int> recipientIndexes, CancellationToken cancel = default) =>
        Current.DeliverAsync(envelope, body, recipientIndexes, cancel);
}
