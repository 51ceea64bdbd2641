using System.Text;

namespace NativeRelay.Traffic.Bounces;

/// <summary>
/// The site a failure is counted under in the metrics: the one place that decides it. For now the
/// next hop's host (the MX or route host that answered), or the recipient's domain when no host
/// was reached (DNS failures); the sites of Traffic (MX rollup, issue 26) take its place here.
/// </summary>
public static class BounceSite
{
    public static string Of(string? nextHopHost, ReadOnlySpan<byte> recipient)
    {
        if (!string.IsNullOrEmpty(nextHopHost))
            return nextHopHost;
        int at = recipient.LastIndexOf((byte)'@');
        return at < 0 || at == recipient.Length - 1 ? "none" : Encoding.UTF8.GetString(recipient[(at + 1)..]).ToLowerInvariant();
    }
}
