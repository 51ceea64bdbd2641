using NativeRelay.Spool;

namespace NativeRelay.Tests.Spool;

public class QueueIdTests
{
    [Fact]
    public void Ids_are_unique_and_increasing_across_threads()
    {
        var ids = new QueueIdGenerator();
        var all = new ulong[8][];
        Parallel.For(0, 8, t =>
        {
            var mine = new ulong[10_000];
            for (int i = 0; i < mine.Length; i++)
                mine[i] = ids.Next();
            all[t] = mine;
        });
        foreach (var mine in all)
            for (int i = 1; i < mine.Length; i++)
                Assert.True(mine[i] > mine[i - 1]);
        Assert.Equal(80_000, all.SelectMany(x => x).Distinct().Count());
    }

    [Fact]
    public void Observed_ids_are_never_reissued()
    {
        var ids = new QueueIdGenerator();
        ulong future = (ulong)(DateTimeOffset.UtcNow.AddDays(1).ToUnixTimeMilliseconds() << 16);
        ids.Observe(future);
        Assert.True(ids.Next() > future);
    }

    [Fact]
    public void Format_is_sixteen_uppercase_hex_digits_and_parses_back()
    {
        Span<byte> text = stackalloc byte[16];
        QueueIdGenerator.Format(0x01A2_0731_A923_00FFUL, text);
        Assert.Equal("01A20731A92300FF", System.Text.Encoding.ASCII.GetString(text));
        Assert.True(QueueIdGenerator.TryParse("01A20731A92300FF", out ulong id));
        Assert.Equal(0x01A2_0731_A923_00FFUL, id);
        Assert.False(QueueIdGenerator.TryParse("XYZ", out _));
    }
}
