using System.Collections.Concurrent;
using System.Diagnostics;

namespace NativeRelay.Api;

/// <summary>
/// Requests per second per token: a token bucket per token name holding up to one second of
/// requests, refilled continuously. Kept across reloads (keyed by name, the rate read per request).
/// </summary>
public sealed class TokenRateLimiter
{
    private readonly ConcurrentDictionary<string, Bucket> _buckets = new(StringComparer.Ordinal);

    private sealed class Bucket
    {
        public double Tokens;
        public long Stamp;
    }

    /// <summary>True when the request may go ahead; false with the seconds to wait (for Retry-After).</summary>
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
