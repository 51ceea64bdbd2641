using System.Net;
using BenchmarkDotNet.Attributes;
using NativeRelay.Config;
using NativeRelay.Hosting;
using NativeRelay.Telemetry;
using NativeRelay.Tools;

namespace NativeRelay.Benchmarks;

/// <summary>
/// The whole relay in one process: `blast` sends 10,000 1 KiB messages over 10 pipelined
/// sessions into a running relay (durable spool in a temporary directory, info-level log to
/// nowhere, the next hop set to `sink`), and each invocation ends when the sink has them all.
/// Reported per message, so the allocation column is what the receiving session, the spool, the
/// delivery side and both tools together allocate per relayed message; the relay and the sink
/// stay up between invocations, so their start-up is not in it. The time is the end-to-end cost
/// per message with all three sharing this machine's cores (the throughput figures that count
/// come from perf/compare.sh).
/// </summary>
[MemoryDiagnoser]
public class EndToEndBenchmarks
{
    private const int Messages = 10_000;

    private string _directory = "";
    private SmtpSink _sink = null!;
    private RelayHost _relay = null!;
    private Log _log = null!;
    private BlastOptions _options = null!;

    [GlobalSetup]
    public async Task Setup()
    {
        _directory = Path.Combine(Path.GetTempPath(), $"nativerelay-bench-e2e-{Guid.NewGuid():N}");
        _sink = new SmtpSink(new SinkOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0), Quiet = true });
        _sink.Start();
        _log = new Log(TextWriter.Null, LogLevel.Info);
        _relay = new RelayHost(RelaySettings.Validate(new RelayOptions
        {
            Hostname = "bench.nativerelay.test",
            Listen = [$"127.0.0.1:{BenchRunner.FreeLoopbackPort()}"],
            Spool = Path.Combine(_directory, "spool"),
            RelayTo = _sink.EndPoint.ToString(),
        }), _log);
        await _relay.StartAsync();
        var endPoint = _relay.Listeners[0].EndPoint;
        _options = new BlastOptions
        {
            Host = endPoint.Address.ToString(),
            Port = endPoint.Port,
            Messages = Messages,
            Sessions = 10,
            Size = 1024,
            Quiet = true,
            Timeout = TimeSpan.FromSeconds(120),
        };
    }

    [GlobalCleanup]
    public async Task Cleanup()
    {
        await _relay.StopAsync(TimeSpan.FromSeconds(10));
        await _sink.DisposeAsync();
        _log.Dispose();
        Directory.Delete(_directory, recursive: true);
    }

    [Benchmark(OperationsPerInvoke = Messages)]
    public async Task<long> RelayMessages1K()
    {
        long before = _sink.Messages;
        var result = await new Blaster(_options).RunAsync();
        if (!result.Success)
            throw new InvalidOperationException($"{result.Failed} message(s) failed");
        using var wait = new CancellationTokenSource(TimeSpan.FromSeconds(120));
        if (!await _sink.WaitForMessagesAsync(before + result.Accepted, wait.Token))
            throw new InvalidOperationException("the sink did not get every message in time");
        return result.Accepted;
    }
}
