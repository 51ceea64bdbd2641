using NativeRelay.Config;

namespace NativeRelay.Delivery;

/// <summary>
/// Exponential backoff with jitter: the first retry after about <c>retryInitialSeconds</c>, each
/// later one twice as far, capped at <c>retryMaxSeconds</c>. Jitter (±20%) spreads the retries of
/// a big deferred batch so they do not all hit the destination in the same second.
/// </summary>
public sealed class RetryPolicy(DeliveryOptions options)
{
    public TimeSpan MaxLifetime { get; } = TimeSpan.FromHours(options.MaxLifetimeHours);

    public long NextAttemptUnixMs(int attemptsSoFar, long nowUnixMs)
    {
        double seconds = options.RetryInitialSeconds * Math.Pow(2, Math.Max(0, attemptsSoFar - 1));
        seconds = Math.Min(seconds, options.RetryMaxSeconds);
        seconds *= 0.8 + 0.4 * Random.Shared.NextDouble();
        return nowUnixMs + (long)(seconds * 1000);
    }

    public bool IsExpired(long arrivalUnixMs, long nowUnixMs) =>
        nowUnixMs - arrivalUnixMs > (long)MaxLifetime.TotalMilliseconds;
}
