using NativeRelay.Routing;

namespace NativeRelay.Delivery;

/// <summary>
/// The recipients of one message that go to one destination, on their way into (and through) the
/// loop that owns the destination. A message whose recipients resolve to several destinations is
/// split into one job per destination; they run independently and report back to the message.
/// <see cref="Path"/> is the egress path (source, site) traffic control gave the job (null for
/// local delivery); its hash picks the loop. <see cref="Tried"/> has a bit per source (index
/// modulo 64) the job already left from in this round, so moving it to another source of its
/// pool ends when the pool has none left.
/// </summary>
internal readonly record struct DeliveryJob(QueuedMessage Message, Route Route, int[] Recipients, NativeRelay.Traffic.EgressPath? Path = null,
    ulong Tried = 0);

/// <summary>
/// How one attempt reached its next hop, for the delivery log and the DSN: the host and address,
/// TLS, whether the DSN parameters went on to it, and whether the replies are the remote's own
/// (they then name it as Remote-MTA) or were made up here (connection failures, policy).
/// </summary>
/// <param name="TlsPolicy">The policy applied to the connection (none, opportunistic, required, verify, dane).</param>
/// <param name="TlsVerified">What was verified: none (plain text), encrypted, ca, dane.</param>
/// <param name="TlsFailure">The RFC 8460 result type when a policy refused the next hop.</param>
/// <param name="Source">The egress source the attempt left from (traffic control).</param>
/// <param name="Site">The site (MX rollup) of the next hop.</param>
internal sealed record AttemptInfo(string Host, string Ip, string? Tls, bool DsnPassed, bool ReplyFromRemote,
    string? TlsPolicy = null, string? TlsVerified = null, string? TlsFailure = null, string? Source = null, string? Site = null);
