using NativeRelay.Routing;

namespace NativeRelay.Delivery;

/// <summary>
/// The recipients of one message that go to one destination, on their way into (and through) the
/// loop that owns the destination. A message whose recipients resolve to several destinations is
/// split into one job per destination; they run independently and report back to the message.
/// </summary>
internal readonly record struct DeliveryJob(QueuedMessage Message, Route Route, int[] Recipients);

/// <summary>
/// How one attempt reached its next hop, for the delivery log and the DSN: the host and address,
/// TLS, whether the DSN parameters went on to it, and whether the replies are the remote's own
/// (they then name it as Remote-MTA) or were made up here (connection failures, policy).
/// </summary>
internal sealed record AttemptInfo(string Host, string Ip, string? Tls, bool DsnPassed, bool ReplyFromRemote);
