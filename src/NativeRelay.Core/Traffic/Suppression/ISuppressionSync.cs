namespace NativeRelay.Traffic.Suppression;

/// <summary>One change of the list: an entry added (when, why) or removed. The address is ASCII-lowercased UTF-8.</summary>
public readonly record struct SuppressionChange(bool Added, long TimeUnixMs, SuppressionScope Scope, byte[] Address, string Reason)
{
    /// <summary>"scope \n address": the entry's name in the fleet's hash and in the pending changes.</summary>
    public string Key => SuppressionSyncKeys.Of(Scope.ToString(), Address);
}

/// <summary>
/// The suppression list's way to the rest of a fleet (the cluster stage's <c>SharedSuppression</c>):
/// every change made on this node (the control socket, HTTP unsubscribes, automatic additions
/// after hard bounces) is told to it, in the order the list made them, and it sends them to the
/// fleet in the background; the other nodes' changes come back through
/// <see cref="SuppressionList.ApplyFromFleet"/>, which tells it nothing (no echo). Without a fleet
/// there is none and nothing changes; the RCPT check never involves it.
/// </summary>
public interface ISuppressionSync
{
    /// <summary>A change made on this node; called under the list's lock, so it must only queue (never wait for Redis).</summary>
    void Changed(in SuppressionChange change);

    /// <summary>The list is committing (the control socket answers after it): the queued changes are made durable too.</summary>
    void Commit();
}

/// <summary>The names of entries as the fleet keeps them.</summary>
public static class SuppressionSyncKeys
{
    public static string Of(string scope, ReadOnlySpan<byte> lowercasedAddress) =>
        scope + "\n" + System.Text.Encoding.UTF8.GetString(lowercasedAddress);

    /// <summary>The address with its ASCII letters lowercased (as the journal keeps it).</summary>
    public static byte[] Lowercased(ReadOnlySpan<byte> address)
    {
        var copy = address.ToArray();
        for (int i = 0; i < copy.Length; i++)
            if ((uint)(copy[i] - 'A') <= 'Z' - 'A')
                copy[i] |= 0x20;
        return copy;
    }
}
