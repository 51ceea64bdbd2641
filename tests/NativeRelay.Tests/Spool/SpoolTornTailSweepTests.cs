using NativeRelay.Config;
using System.Diagnostics;
using NativeRelay.Spool;
using NativeRelay.Telemetry;
using Xunit.Abstractions;

namespace NativeRelay.Tests.Spool;

/// <summary>
/// A power loss can cut the log's last write at any byte. This test cuts a real spool's log at
/// every byte offset of its last 64 KiB, one copy of the spool per offset, and recovers each: the
/// recovered messages must be exactly those whose commit was whole on disk before the cut (every
/// message whose records and commit end at or before the cut: what had been acknowledged), each
/// reading back byte for byte, and never one more (a message cut in the middle, or a phantom made
/// of torn bytes).
/// <para>
/// Each cut costs a copy of the spool, an open and a recovery (about 4 ms on an idle machine, ten
/// times that under load), so 65,536 of them take minutes to most of an hour: too long for
/// <c>make test</c>. There the sweep cuts at every byte of the last
/// 4 KiB (the last records and the last commit) and at every 61st byte of the 60 KiB before, about
/// 5,100 cuts; <c>make torn-sweep</c> (<c>NATIVERELAY_TORN_STRIDE=1</c>) cuts at every byte of
/// the 64 KiB, and its last result is in perf/RESULTS.md.
/// </para>
/// </summary>
public sealed class SpoolTornTailSweepTests(ITestOutputHelper output) : IDisposable
{
    private const int Window = 64 * 1024;
    // Far beyond a cut's few milliseconds (tens under load): only a cut that hangs reaches it.
    private static readonly TimeSpan CutTimeout = TimeSpan.FromSeconds(60);
    // One segment holds the whole log, so a cut is one truncated file; 64 KiB pages as in production.
    private static readonly SpoolOptions Options = new() { PageSizeBits = 16, MemorySizeBits = 20, SegmentSizeBits = 20 };
    // On tmpfs when there is one: the sweep opens thousands of spools, and the disk adds nothing to what it checks.
    private readonly string _root = Path.Combine(Directory.Exists("/dev/shm") ? "/dev/shm" : Path.GetTempPath(), "nr-sweep-" + Guid.NewGuid().ToString("N"));

    public void Dispose()
    {
        if (Directory.Exists(_root))
            Directory.Delete(_root, recursive: true);
    }

    [Fact]
    public async Task Cutting_the_log_at_every_byte_of_its_last_64_KiB_recovers_exactly_the_acknowledged_messages()
    {
        // 1. The original: 60 messages of 1-3 KiB, each committed on its own as the relay does
        //    under light load, so the last 64 KiB hold about 30 messages and their commit records.
        string original = Path.Combine(_root, "original");
        var kit = new SpoolTestKit(Options, original);
        var written = new List<(ulong Id, byte[] Bytes, long End)>();
        long tail;
        await using (var spool = kit.Open())
        {
            for (ulong id = 1; id <= 60; id++)
            {
                var bytes = SpoolTestKit.Message(1000 + (int)(id * 37 % 2000), (int)id);
                await SpoolTestKit.AppendCommittedAsync(spool, id, bytes);
                // Acknowledged once its commit is durable: everything up to the tail now is on disk.
                written.Add((id, bytes, spool.TailAddress));
            }
            tail = spool.TailAddress;
        }
        Assert.True(tail < 1L << Options.SegmentSizeBits, "the log was meant to fit one segment");
        string segment = kit.SegmentFile(0);
        Assert.True(File.Exists(segment));
        var files = Directory.GetFiles(original, "*", SearchOption.AllDirectories)
            .Select(f => Path.GetRelativePath(original, f)).ToArray();

        int stride = int.TryParse(Environment.GetEnvironmentVariable("NATIVERELAY_TORN_STRIDE"), out int s) && s > 0 ? s : 61;
        long from = Math.Max(0, tail - Window);
        long dense = tail - 4096; // every byte from here on, whatever the stride
        // NATIVERELAY_TORN_PROGRESS=FILE: a line per 1,000 cuts, for the long full sweep.
        string? progress = Environment.GetEnvironmentVariable("NATIVERELAY_TORN_PROGRESS");
        var clock = Stopwatch.StartNew();
        int cuts = 0;
        long tOpen = 0, tClose = 0;
        string copy = Path.Combine(_root, "copy");
        for (long cut = from; cut <= tail; cut += cut >= dense ? 1 : stride)
        {
            // 2. A fresh copy of the spool, its log cut at this byte.
            if (Directory.Exists(copy))
                Directory.Delete(copy, recursive: true);
            foreach (var file in files)
            {
                string target = Path.Combine(copy, file);
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                File.Copy(Path.Combine(original, file), target);
            }
            using (var log = new FileStream(Path.Combine(copy, Path.GetRelativePath(original, segment)), FileMode.Open, FileAccess.ReadWrite))
                log.SetLength(cut);

            // 3. Recovery yields exactly the messages acknowledged before the cut.
            long t0 = clock.ElapsedTicks;
            // A cut that makes the open or the recovery loop for ever must fail here, naming the
            // cut, not leave the sweep running until someone stops it.
            var opening = Task.Run(() =>
            {
                // Log.Null, not a Log per cut: a Log's flush timer keeps it alive until it is
                // disposed, and tens of thousands of them firing every 100 ms made the full sweep
                // slow down cut after cut until it seemed to hang.
                var opened = SpoolLog.Open(copy, Options, Log.Null);
                return (Spool: opened, Recovered: SpoolRecovery.Recover(opened, new QueueIdGenerator(), Log.Null));
            });
            if (await Task.WhenAny(opening, Task.Delay(CutTimeout)) != opening)
                Assert.Fail($"cut at {cut} (tail {tail}): opening and recovering the spool did not finish in {CutTimeout.TotalSeconds:0} s");
            var (spool, recovered) = await opening;
            tOpen += clock.ElapsedTicks - t0;
            try
            {
                var expected = written.Where(w => w.End <= cut).Select(w => w.Id).ToArray();
                var ids = recovered.Select(m => m.Id).Order().ToArray();
                if (!expected.SequenceEqual(ids))
                    Assert.Fail($"cut at {cut} (tail {tail}): expected {expected.Length} messages ({Range(expected)}), recovered {ids.Length} ({Range(ids)})");
                foreach (var m in recovered)
                {
                    var (_, body) = await spool.ReadMessageAsync(m.Id, m.HeadAddress);
                    try
                    {
                        if (!written[(int)m.Id - 1].Bytes.AsSpan().SequenceEqual(SpoolTestKit.Content(body)))
                            Assert.Fail($"cut at {cut}: message {m.Id} came back different");
                    }
                    finally
                    {
                        body.Release();
                    }
                }
            }
            finally
            {
                long t1 = clock.ElapsedTicks;
                await spool.DisposeAsync();
                tClose += clock.ElapsedTicks - t1;
            }
            cuts++;
            if (progress is not null && cuts % 1000 == 0)
                File.AppendAllText(progress, $"{DateTime.UtcNow:HH:mm:ss} {cuts} cuts, at {cut} of {from}..{tail}, {clock.Elapsed.TotalSeconds:0.0} s\n");
        }
        output.WriteLine($"{cuts} cuts from {from} to {tail} (stride {stride}) in {clock.Elapsed.TotalSeconds:0.0} s; open and recover {tOpen * 1000.0 / Stopwatch.Frequency:0} ms, close {tClose * 1000.0 / Stopwatch.Frequency:0} ms");
    }

    private static string Range(ulong[] ids) => ids.Length == 0 ? "none" : $"{ids[0]}..{ids[^1]}";
}
