using System.Net;
using BenchmarkDotNet.Attributes;
using NativeRelay.Tools;

namespace NativeRelay.Benchmarks;

/// <summary>
/// The load tools end to end in one process: `blast` sending 10,000 1 KiB messages over 4
/// kept-open pipelined sessions into `sink` on loopback. Reported per message
/// (OperationsPerInvoke), so the allocation column is what blaster and sink together allocate
/// per message, including each run's fixed costs (4 connections, result objects) spread over the
/// 10,000 (about 360 KB a run: histograms, error tables, buffers and pipes of 8 connection ends).
/// Runs of 2,000 and 20,000 messages put the part that grows with the count at about 18 B a
/// message: thread-pool work items of the socket/pipe transport, most likely (the tools' own
/// per-message path allocates nothing; see ToolsBenchmarks and the unit tests).
/// </summary>
[MemoryDiagnoser]
public class BlastSinkBenchmarks
{
    private const int Messages = 10_000;

    private SmtpSink _sink = null!;
    private BlastOptions _options = null!;

    [GlobalSetup]
    public void Setup()
    {
        _sink = new SmtpSink(new SinkOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0), Quiet = true });
        _sink.Start();
        _options = new BlastOptions
        {
            Host = "127.0.0.1",
            Port = _sink.EndPoint.Port,
            Messages = Messages,
            Sessions = 4,
            Size = 1024,
            Quiet = true,
            Timeout = TimeSpan.FromSeconds(60),
        };
    }

    [GlobalCleanup]
    public async Task Cleanup() => await _sink.DisposeAsync();

    [Benchmark(OperationsPerInvoke = Messages)]
    public async Task<long> BlastIntoSink1K()
    {
        var result = await new Blaster(_options).RunAsync();
        if (!result.Success)
            throw new InvalidOperationException($"{result.Failed} message(s) failed");
        return result.Accepted;
    }
}
