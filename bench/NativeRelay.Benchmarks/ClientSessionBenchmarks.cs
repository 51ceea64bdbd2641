using System.Net;
using System.Text;
using BenchmarkDotNet.Attributes;
using NativeRelay.Message;
using NativeRelay.Smtp;
using NativeRelay.Spool;
using NativeRelay.Tools;

namespace NativeRelay.Benchmarks;

/// <summary>
/// The relay's sending side for one message: <see cref="SmtpClientSession.SendAsync"/> over a
/// kept-open loopback connection to the in-process sink (MAIL and RCPT pipelined, the body as
/// BDAT since the sink offers CHUNKING, or dot-stuffed DATA otherwise, then the client-side
/// reply parsing).
/// The time includes two loopback round trips and the sink's share of the work; the allocation
/// column is the whole process's (BenchmarkDotNet counts every thread), so it covers the client
/// session, the transport and the sink together.
/// </summary>
[MemoryDiagnoser]
public class ClientSessionBenchmarks
{
    private SmtpSink _sink = null!;
    private SmtpClientSession _session = null!;
    private MessageBuffer _body = null!;
    // What a delivery hands the session: the queued envelope, the recipients of this
    // transaction (indexes into it) and a results array owned by the job.
    private readonly Envelope _envelope = new()
    {
        Sender = "bounces@mailer.example.org"u8.ToArray(),
        Recipients = ["bob@destination.example.com"u8.ToArray()],
        ClientAddress = "192.0.2.44",
        HeloName = "mailer.example.org",
        ArrivalUnixMs = 1_795_416_898_000,
    };
    private readonly int[] _firstRecipient = [0];
    private readonly SmtpReply[] _results = new SmtpReply[1];

    [GlobalSetup]
    public async Task Setup()
    {
        _sink = new SmtpSink(new SinkOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0), Quiet = true });
        _sink.Start();
        _session = await SmtpClientSession.ConnectAsync(_sink.EndPoint,
            new SmtpClientOptions { HeloName = "relay.example.org", ConnectTimeout = TimeSpan.FromSeconds(10), CommandTimeout = TimeSpan.FromSeconds(30) },
            CancellationToken.None);
        var message = BlastMessage.Create(1024, "bounces@mailer.example.org", "bob@destination.example.com", DateTimeOffset.UtcNow, "bench000");
        _body = MessageBuffer.Rent();
        _body.Write(message.ToMessage(1));
    }

    [GlobalCleanup]
    public async Task Cleanup()
    {
        await _session.QuitAsync();
        await _session.DisposeAsync();
        await _sink.DisposeAsync();
        _body.Release();
    }

    [Benchmark]
    public async Task<int> DeliverOne1KMessage()
    {
        await _session.SendAsync(_envelope, _body, _firstRecipient, _results);
        return _results[0].Code;
    }
}
