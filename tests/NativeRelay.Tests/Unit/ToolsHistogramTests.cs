using NativeRelay.Tools;

namespace NativeRelay.Tests.Unit;

public class ToolsHistogramTests
{
    [Fact]
    public void Empty_histogram_reports_zeros()
    {
        var h = new LatencyHistogram();
        Assert.Equal(0, h.Count);
        Assert.Equal(0, h.Percentile(50));
        Assert.Equal(0, h.Percentile(99));
        Assert.Equal(0, h.Max);
        Assert.Equal(0, h.Min);
        Assert.Equal(0, h.Mean);
        Assert.Equal("no samples", h.Summarize().ToString());
    }

    [Fact]
    public void Every_value_lies_in_its_bucket_and_buckets_are_at_most_1_64th_wide()
    {
        var values = new List<long>();
        for (long v = 0; v < 5000; v++)
            values.Add(v);
        for (long v = 5000; v < 1L << 37; v = v * 17 / 16 + 1)
        {
            values.Add(v);
            values.Add(v + 1);
            values.Add(v - 1);
        }
        foreach (long v in values)
        {
            int bucket = LatencyHistogram.BucketOf(v);
            Assert.InRange(bucket, 0, LatencyHistogram.BucketCount - 1);
            Assert.InRange(v, LatencyHistogram.LowerBound(bucket), LatencyHistogram.UpperBound(bucket));
            if (v >= 128)
            {
                long width = LatencyHistogram.UpperBound(bucket) - LatencyHistogram.LowerBound(bucket) + 1;
                Assert.True(width * 64 <= LatencyHistogram.LowerBound(bucket), $"bucket {bucket} of {v} is {width} wide");
            }
        }
    }

    [Fact]
    public void Buckets_are_contiguous_and_ordered()
    {
        for (int b = 1; b < LatencyHistogram.BucketCount - 1; b++)
            Assert.Equal(LatencyHistogram.UpperBound(b - 1) + 1, LatencyHistogram.LowerBound(b));
    }

    [Fact]
    public void Percentiles_of_a_uniform_distribution_are_within_the_bucket_precision()
    {
        var h = new LatencyHistogram();
        for (long v = 1; v <= 100_000; v++)
            h.Record(v);
        Assert.Equal(100_000, h.Count);
        AssertNear(50_000, h.Percentile(50));
        AssertNear(90_000, h.Percentile(90));
        AssertNear(99_000, h.Percentile(99));
        Assert.Equal(100_000, h.Percentile(100));
        Assert.Equal(100_000, h.Max);
        Assert.Equal(1, h.Min);
        Assert.Equal(50_000.5, h.Mean, 3);

        static void AssertNear(long expected, long actual) =>
            Assert.True(actual >= expected && actual <= expected + expected / 64 + 1, $"expected about {expected}, got {actual}");
    }

    [Fact]
    public void Small_values_are_exact_and_a_single_value_is_every_percentile()
    {
        var h = new LatencyHistogram();
        h.Record(42);
        Assert.Equal(42, h.Percentile(0));
        Assert.Equal(42, h.Percentile(50));
        Assert.Equal(42, h.Percentile(100));

        var big = new LatencyHistogram();
        big.Record(1_234_567);
        Assert.Equal(1_234_567, big.Percentile(50));
        Assert.Equal(1_234_567, big.Percentile(99));
    }

    [Fact]
    public void A_tail_shows_in_p99_but_not_in_p50()
    {
        var h = new LatencyHistogram();
        for (int i = 0; i < 980; i++)
            h.Record(1000);
        for (int i = 0; i < 20; i++)
            h.Record(50_000);
        Assert.InRange(h.Percentile(50), 1000, 1015);
        Assert.InRange(h.Percentile(99), 50_000, 50_000);
        var s = h.Summarize();
        Assert.Equal(1000, s.Count);
        Assert.InRange(s.P50Ms, 1.0, 1.02);
        Assert.Equal(50.0, s.MaxMs);
    }

    [Fact]
    public void Negative_and_huge_values_are_clamped_into_the_range_with_exact_max()
    {
        var h = new LatencyHistogram();
        h.Record(-5);
        h.Record(long.MaxValue / 2);
        Assert.Equal(0, h.Min);
        Assert.Equal(long.MaxValue / 2, h.Max);
        Assert.Equal(long.MaxValue / 2, h.Percentile(100));
        Assert.Equal(LatencyHistogram.BucketCount - 1, LatencyHistogram.BucketOf(long.MaxValue));
    }

    [Fact]
    public void Merge_adds_counts_and_keeps_extremes()
    {
        var a = new LatencyHistogram();
        var b = new LatencyHistogram();
        for (int i = 1; i <= 100; i++)
            a.Record(i);
        for (int i = 1001; i <= 1100; i++)
            b.Record(i);
        a.Merge(b);
        a.Merge(new LatencyHistogram());
        Assert.Equal(200, a.Count);
        Assert.Equal(1, a.Min);
        Assert.Equal(1100, a.Max);
        Assert.InRange(a.Percentile(50), 100, 100);
        Assert.InRange(a.Percentile(75), 1050, 1050 + 1050 / 64 + 1);

        a.Reset();
        Assert.Equal(0, a.Count);
        Assert.Equal(0, a.Percentile(50));
    }

    [Fact]
    public void Recording_allocates_nothing()
    {
        var h = new LatencyHistogram();
        h.Record(1);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 100_000; i++)
            h.Record(i * 37L);
        long after = GC.GetAllocatedBytesForCurrentThread();
        Assert.Equal(before, after);
    }
}
