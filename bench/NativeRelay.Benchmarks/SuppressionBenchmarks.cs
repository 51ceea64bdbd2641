using System.Diagnostics;
using System.Text;
using BenchmarkDotNet.Attributes;
using NativeRelay.Telemetry;
using NativeRelay.Traffic.Suppression;

namespace NativeRelay.Benchmarks;

/// <summary>
/// The suppression list at a million entries (issue 26: under 100 MiB, a lookup no dearer than a
/// hash probe): the RCPT check for an address on the list, one not on it, and one not on it while
/// pool and sender-domain entries exist (three probes). The setup prints what the million entries
/// cost: the table's bytes, the managed heap's growth, the journal's size, the time to build the
/// list and to replay its journal at start. Addresses are probed in a shuffled order so the
/// table's 32 MiB is read as the RCPT path reads it, mostly from memory rather than cache.
/// </summary>
[MemoryDiagnoser]
public class SuppressionBenchmarks
{
    private const int Entries = 1_000_000;
    private const int Probes = 4096;

    private string _spool = null!;
    private SuppressionList _list = null!;
    private byte[][] _present = null!;
    private byte[][] _absent = null!;
    private readonly byte[] _senderDomain = "news.example"u8.ToArray();
    private int _next;

    private static byte[] Address(int i) => Encoding.ASCII.GetBytes($"user{i}.{i * 7919 % 100_003}@domain{i % 5000}.example");

    [GlobalSetup]
    public void Setup()
    {
        _spool = Directory.CreateTempSubdirectory("nr-bench-suppress-").FullName;
        long heapBefore = GC.GetTotalMemory(forceFullCollection: true);
        var clock = Stopwatch.StartNew();
        var list = SuppressionList.Open(_spool, Log.Null);
        for (int i = 0; i < Entries; i++)
            list.TryAdd(Address(i), SuppressionScope.Global, "bench", 1_700_000_000_000);
        list.Commit();
        double build = clock.Elapsed.TotalSeconds;
        long heapFilled = GC.GetTotalMemory(forceFullCollection: true) - heapBefore;
        list.Dispose();

        heapBefore = GC.GetTotalMemory(forceFullCollection: true);
        clock.Restart();
        _list = SuppressionList.Open(_spool, Log.Null);
        double replay = clock.Elapsed.TotalSeconds;
        long heapReopened = GC.GetTotalMemory(forceFullCollection: true) - heapBefore;
        // A few scoped entries, so the third benchmark's extra probes run.
        _list.TryAdd("someone@example.com"u8, SuppressionScope.Pool("bulk"), "bench", 0);
        _list.TryAdd("someone@example.com"u8, SuppressionScope.Domain("news.example"), "bench", 0);

        var random = new Random(26);
        _present = Enumerable.Range(0, Probes).Select(_ => Address(random.Next(Entries))).ToArray();
        _absent = Enumerable.Range(0, Probes).Select(i => Address(Entries + random.Next(Entries))).ToArray();
        Console.WriteLine($"// suppression list: {_list.Count:N0} entries; table {_list.TableBytes / 1048576.0:0.0} MiB; managed heap +{heapFilled / 1048576.0:0.0} MiB after building, "
                          + $"+{heapReopened / 1048576.0:0.0} MiB after reopening; journal {_list.JournalBytes / 1048576.0:0.0} MiB; "
                          + $"built in {build:0.00} s (one commit), journal replayed in {replay:0.00} s");
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _list.Dispose();
        Directory.Delete(_spool, recursive: true);
    }

    [Benchmark(Description = "RCPT check: on the list (global)")]
    public bool Present() => _list.IsSuppressed(_present[_next++ & (Probes - 1)], null, default);

    [Benchmark(Description = "RCPT check: not on the list")]
    public bool Absent() => _list.IsSuppressed(_absent[_next++ & (Probes - 1)], null, default);

    [Benchmark(Description = "RCPT check: not on the list, pool and domain scopes in use")]
    public bool AbsentAllScopes() => _list.IsSuppressed(_absent[_next++ & (Probes - 1)], "bulk", _senderDomain);
}
