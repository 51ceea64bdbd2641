using System.Diagnostics;
using System.Numerics;

namespace NativeRelay.Tools;

/// <summary>
/// A fixed-bucket log-linear histogram of durations in microseconds, in the manner of
/// HdrHistogram: values below 128 µs have a bucket each; above that every power of two is split
/// into 64 buckets, so a reported percentile is at most 1/64 (1.6 %) above the true value. The
/// range is 0 to 2^37 µs (38 hours); larger values land in the last bucket. Recording is one
/// array increment (no allocation); one instance belongs to one thread, and <see cref="Merge"/>
/// sums per-session histograms at the end.
/// </summary>
public sealed class LatencyHistogram
{
    private const int LinearBuckets = 128;       // values 0..127 exactly
    private const int SubBuckets = 64;           // per power of two above that
    private const int MaxMagnitude = 36;         // highest bit index kept apart
    public const int BucketCount = LinearBuckets + (MaxMagnitude - 6) * SubBuckets; // 2048

    private readonly long[] _counts = new long[BucketCount];
    private long _max;
    private long _min = long.MaxValue;
    private double _sum;

    public long Count { get; private set; }

    /// <summary>The largest value recorded, exact (µs); 0 when empty.</summary>
    public long Max => Count == 0 ? 0 : _max;

    /// <summary>The smallest value recorded, exact (µs); 0 when empty.</summary>
    public long Min => Count == 0 ? 0 : _min;

    /// <summary>The arithmetic mean (µs); 0 when empty.</summary>
    public double Mean => Count == 0 ? 0 : _sum / Count;

    /// <summary>Records one duration in microseconds (negative values count as 0).</summary>
    public void Record(long microseconds)
    {
        if (microseconds < 0)
            microseconds = 0;
        _counts[BucketOf(microseconds)]++;
        Count++;
        _sum += microseconds;
        if (microseconds > _max)
            _max = microseconds;
        if (microseconds < _min)
            _min = microseconds;
    }

    /// <summary>Records the time from a <see cref="Stopwatch.GetTimestamp"/> value to now.</summary>
    public void RecordSince(long startTimestamp) => Record(ElapsedMicroseconds(startTimestamp, Stopwatch.GetTimestamp()));

    public static long ElapsedMicroseconds(long startTimestamp, long endTimestamp) =>
        (long)((endTimestamp - startTimestamp) * (1_000_000.0 / Stopwatch.Frequency));

    /// <summary>Adds every value of <paramref name="other"/> to this histogram.</summary>
    public void Merge(LatencyHistogram other)
    {
        if (other.Count == 0)
            return;
        for (int i = 0; i < BucketCount; i++)
            _counts[i] += other._counts[i];
        Count += other.Count;
        _sum += other._sum;
        _max = Math.Max(_max, other._max);
        _min = Math.Min(_min, other._min);
    }

    public void Reset()
    {
        Array.Clear(_counts);
        Count = 0;
        _sum = 0;
        _max = 0;
        _min = long.MaxValue;
    }

    /// <summary>
    /// The value at or below which <paramref name="percentile"/> percent of the values lie:
    /// the upper edge of the bucket holding that rank, never above the exact maximum. 0 when empty.
    /// </summary>
    public long Percentile(double percentile)
    {
        if (Count == 0)
            return 0;
        percentile = Math.Clamp(percentile, 0, 100);
        long rank = Math.Max(1, (long)Math.Ceiling(percentile / 100.0 * Count));
        long seen = 0;
        for (int i = 0; i < BucketCount; i++)
        {
            seen += _counts[i];
            if (seen >= rank)
                return Math.Min(Math.Max(UpperBound(i), Min), _max);
        }
        return _max;
    }

    /// <summary>The bucket a value falls in.</summary>
    public static int BucketOf(long value)
    {
        if (value < LinearBuckets)
            return (int)value;
        int magnitude = 63 - BitOperations.LeadingZeroCount((ulong)value); // >= 7
        if (magnitude > MaxMagnitude)
            return BucketCount - 1;
        int shift = magnitude - 6;                   // value >> shift is in [64, 127]
        return LinearBuckets + (shift - 1) * SubBuckets + (int)((value >> shift) - SubBuckets);
    }

    /// <summary>The smallest value of a bucket.</summary>
    public static long LowerBound(int bucket)
    {
        if (bucket < LinearBuckets)
            return bucket;
        int shift = (bucket - LinearBuckets) / SubBuckets + 1;
        long sub = (bucket - LinearBuckets) % SubBuckets + SubBuckets;
        return sub << shift;
    }

    /// <summary>The largest value of a bucket.</summary>
    public static long UpperBound(int bucket)
    {
        if (bucket < LinearBuckets)
            return bucket;
        if (bucket == BucketCount - 1)
            return long.MaxValue;
        int shift = (bucket - LinearBuckets) / SubBuckets + 1;
        long sub = (bucket - LinearBuckets) % SubBuckets + SubBuckets;
        return ((sub + 1) << shift) - 1;
    }

    /// <summary>p50, p90, p99 and max, in milliseconds, for summaries.</summary>
    public LatencySummary Summarize() => new(
        Count,
        Percentile(50) / 1000.0,
        Percentile(90) / 1000.0,
        Percentile(99) / 1000.0,
        Max / 1000.0,
        Mean / 1000.0);
}

/// <summary>Percentiles of one histogram, in milliseconds.</summary>
public readonly record struct LatencySummary(long Count, double P50Ms, double P90Ms, double P99Ms, double MaxMs, double MeanMs)
{
    public override string ToString() =>
        Count == 0 ? "no samples" : $"p50 {Ms(P50Ms)}  p90 {Ms(P90Ms)}  p99 {Ms(P99Ms)}  max {Ms(MaxMs)}";

    internal static string Ms(double ms) => ms switch
    {
        < 1 => $"{ms:0.000} ms",
        < 100 => $"{ms:0.00} ms",
        _ => $"{ms:0} ms",
    };
}
