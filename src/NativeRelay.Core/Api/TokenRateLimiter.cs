using System.Collections.Concurrent;
using System.Diagnostics;
using NativeRelay.Traffic.Shaping;

namespace NativeRelay.Api;

/// <summary>
/// Requests per second per token: a token bucket per token name holding up to one second of
/// requests, refilled continuously. Kept across reloads (keyed by name, the rate read per request).
/// On a node of a fleet (<see cref="Shared"/>) the rate is the fleet's: the same batched bucket
/// in Redis as the message rates, keyed by the token's name, at this node's share while Redis is away.
/// </summary>
public sealed class TokenRateLimiter
{
    /// <summary>A request waits this long at most for the fleet's next batch before it is told to come back.</summary>
    private static readonly long FleetWaitTicks = Stopwatch.Frequency / 4;

    /// <summary>How long a request waits for Redis's answer about its token at most (a round trip, or the script sent the first time).</summary>
    private static readonly TimeSpan FleetAnswerWait = TimeSpan.FromSeconds(1.5);

    private readonly ConcurrentDictionary<string, Bucket> _buckets = new(StringComparer.Ordinal);

    private sealed class Bucket
    {
        public double Tokens;
        public long Stamp;
    }

    /// <summary>The fleet's rates (set once at start on a node of a cluster; null: this relay's alone).</summary>
    internal ISharedLimits? Shared { get; set; }

    /// <summary>
    /// Whether the request may go ahead, and otherwise the seconds to wait (for Retry-After). On a
    /// fleet a request may wait a moment for the batch of tokens being fetched (never long: a
    /// fleet at its rate answers "later" at once).
    /// </summary>
    public async ValueTask<(bool Allowed, int RetryAfterSeconds)> TakeAsync(string token, int perSecond)
    {
        if (perSecond <= 0)
            return (true, 0);
        if (Shared is not { } fleet)
            return TryTake(token, perSecond, out int retry) ? (true, 0) : (false, retry);
        var rate = fleet.RequestRate("token:" + token, perSecond);
        for (int i = 0; i < 3; i++)
        {
            long now = Stopwatch.GetTimestamp();
            if (rate.TryTake(now, out long ready))
                return (true, 0);
            if (ready - now > FleetWaitTicks)
                return (false, Math.Max(1, (int)Math.Ceiling((ready - now) / (double)Stopwatch.Frequency)));
            // The answer to the round trip just started (bounded by the Redis timeout, after which
            // the node is degraded and its local share answers).
            using var cancel = new CancellationTokenSource(FleetAnswerWait);
            try
            {
                await rate.WhenReady(cancel.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }
        }
        return (false, 1);
    }

    /// <summary>True when the request may go ahead; false with the seconds to wait (for Retry-After). This relay's bucket alone.</summary>
    public bool TryTake(string token, int perSecond, out int retryAfterSeconds)
    {
        retryAfterSeconds = 0;
        if (perSecond <= 0)
            return true;
        var bucket = _buckets.GetOrAdd(token, static _ => new Bucket { Tokens = double.NaN });
        long now = Stopwatch.GetTimestamp();
        lock (bucket)
        {
            if (double.IsNaN(bucket.Tokens))
                bucket.Tokens = perSecond;
            else
                bucket.Tokens = Math.Min(perSecond, bucket.Tokens + Stopwatch.GetElapsedTime(bucket.Stamp, now).TotalSeconds * perSecond);
            bucket.Stamp = now;
            if (bucket.Tokens >= 1)
            {
                bucket.Tokens -= 1;
                return true;
            }
            retryAfterSeconds = Math.Max(1, (int)Math.Ceiling((1 - bucket.Tokens) / perSecond));
            return false;
        }
    }
}
