using System.Text;
using BenchmarkDotNet.Attributes;
using NativeRelay.Config;
using NativeRelay.Message;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Benchmarks;

/// <summary>
/// The spool's hot path on a real FasterLog in a temporary directory (O_SYNC files, so a commit
/// is a real synchronous write to this machine's disk): appending a 1 KiB message record, and
/// the group commit that makes it durable, alone and shared by a batch. The batch benchmarks
/// report the cost per message (OperationsPerInvoke), which is what group commit buys.
/// Allocation columns are per message; the append path reuses its entry objects.
/// </summary>
[MemoryDiagnoser]
public class SpoolBenchmarks
{
    private const int Batch = 64;

    private string _directory = "";
    private SpoolLog _spool = null!;
    private Envelope _envelope = null!;
    private MessageBuffer _body1K = null!;
    private MessageBuffer _body100K = null!;
    private readonly Task[] _waits = new Task[Batch];
    private ulong _id;

    [GlobalSetup]
    public void Setup()
    {
        _directory = Path.Combine(Path.GetTempPath(), $"nativerelay-bench-spool-{Guid.NewGuid():N}");
        _spool = SpoolLog.Open(_directory, new SpoolOptions(), Log.Null);
        _envelope = new Envelope
        {
            Sender = "bounces+12345@mailer.example.org"u8.ToArray(),
            Recipients = ["first.recipient@destination.example.com"u8.ToArray()],
            ClientAddress = "192.0.2.44",
            HeloName = "mailer.example.org",
            ArrivalUnixMs = 1_795_416_898_000,
        };
        _body1K = Body(1024);
        _body100K = Body(100 * 1024);
    }

    [GlobalCleanup]
    public async Task Cleanup()
    {
        await _spool.DisposeAsync();
        _body1K.Release();
        _body100K.Release();
        Directory.Delete(_directory, recursive: true);
    }

    /// <summary>Append only: the in-memory part of spooling a message (no disk wait).</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public async Task<long> Append1K()
    {
        long last = 0;
        for (int i = 0; i < Batch; i++)
            (last, _) = await _spool.AppendMessageAsync(++_id, _envelope, _body1K);
        // Keep the log from running ahead of the disk without bound between iterations.
        await _spool.WaitForCommitAsync(last);
        return last;
    }

    /// <summary>One message, one commit: what a single session waits for before its 250.</summary>
    [Benchmark]
    public async Task<long> AppendAndCommit1K()
    {
        var (head, _) = await _spool.AppendMessageAsync(++_id, _envelope, _body1K);
        await _spool.WaitForCommitAsync(head);
        return head;
    }

    /// <summary>64 sessions' messages appended, then all wait: one commit serves the batch (per message).</summary>
    [Benchmark(OperationsPerInvoke = Batch)]
    public async Task<long> AppendBatchThenGroupCommit1K()
    {
        long head = 0;
        for (int i = 0; i < Batch; i++)
        {
            (head, _) = await _spool.AppendMessageAsync(++_id, _envelope, _body1K);
            _waits[i] = _spool.WaitForCommitAsync(head);
        }
        await Task.WhenAll(_waits);
        return head;
    }

    /// <summary>A 100 KiB message (chunk records, then the head) and its commit.</summary>
    [Benchmark]
    public async Task<long> AppendAndCommit100K()
    {
        var (head, _) = await _spool.AppendMessageAsync(++_id, _envelope, _body100K);
        await _spool.WaitForCommitAsync(head);
        return head;
    }

    private static MessageBuffer Body(int size)
    {
        var text = new StringBuilder("From: a@example.org\r\nTo: b@example.com\r\nSubject: spool benchmark\r\n\r\n");
        while (text.Length < size)
            text.Append("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n");
        var body = MessageBuffer.Rent();
        body.Write(Encoding.ASCII.GetBytes(text.ToString(0, size)));
        return body;
    }
}
