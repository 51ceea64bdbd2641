using NativeRelay.Config;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Tests.Spool;

/// <summary>
/// A spool keeps the page and segment sizes it was created with: reopened with other
/// spoolTuning values it still reads every message (a log read with another page size would
/// replay records cut at the wrong boundaries), and a damaged layout file is a clear error.
/// </summary>
public sealed class SpoolFormatTests : IDisposable
{
    private readonly SpoolTestKit _kit = new(new SpoolOptions { PageSizeBits = 16, MemorySizeBits = 20, SegmentSizeBits = 22 });

    public void Dispose() => _kit.Dispose();

    [Fact]
    public async Task A_spool_reopened_with_other_page_and_segment_sizes_keeps_its_own()
    {
        // 40 KB messages in 64 KiB pages: most pages end with padding, so a reader with 256 KiB
        // pages would see different record boundaries.
        var written = new Dictionary<ulong, (long Head, byte[] Bytes)>();
        await using (var spool = _kit.Open())
        {
            for (ulong id = 1; id <= 12; id++)
            {
                var bytes = SpoolTestKit.Message(40_000, (int)id);
                var (head, _) = await SpoolTestKit.AppendCommittedAsync(spool, id, bytes);
                written[id] = (head, bytes);
            }
        }
        string format = File.ReadAllText(Path.Combine(_kit.Directory, SpoolFormat.FileName));
        Assert.Contains("pageSizeBits=16", format);
        Assert.Contains("segmentSizeBits=22", format);

        var other = new SpoolTestKit(new SpoolOptions { PageSizeBits = 18, MemorySizeBits = 24, SegmentSizeBits = 28 }, _kit.Directory);
        await using (var spool = other.Open())
        {
            var recovered = SpoolRecovery.Recover(spool, new QueueIdGenerator(), Log.Null);
            Assert.Equal(written.Keys.Order(), recovered.Select(m => m.Id).Order());
            foreach (var (id, (head, bytes)) in written)
            {
                var (_, read) = await spool.ReadMessageAsync(head);
                Assert.True(bytes.AsSpan().SequenceEqual(SpoolTestKit.Content(read)), $"message {id} reads back byte for byte");
                read.Release();
            }
            // New mail goes into the same layout.
            var fresh = SpoolTestKit.Message(50_000, 99);
            var (freshHead, _) = await SpoolTestKit.AppendCommittedAsync(spool, 99, fresh);
            var (_, back) = await spool.ReadMessageAsync(freshHead);
            Assert.True(fresh.AsSpan().SequenceEqual(SpoolTestKit.Content(back)));
            back.Release();
        }
        Assert.Contains("created with pageSizeBits 16 and segmentSizeBits 22", other.LogText);
    }

    [Fact]
    public async Task A_damaged_layout_file_is_a_clear_error_not_a_misread_log()
    {
        await using (var spool = _kit.Open())
            await SpoolTestKit.AppendCommittedAsync(spool, 1, SpoolTestKit.Message(1000, 1));
        File.WriteAllText(Path.Combine(_kit.Directory, SpoolFormat.FileName), "pageSizeBits=sixteen\n");

        var error = Assert.Throws<ConfigException>(() => _kit.Open());
        Assert.Contains(SpoolFormat.FileName, error.Message);
        Assert.Contains("pageSizeBits=sixteen", error.Message);
    }
}
