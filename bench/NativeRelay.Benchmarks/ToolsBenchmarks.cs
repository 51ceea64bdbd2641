using System.Buffers;
using System.Text;
using BenchmarkDotNet.Attributes;
using NativeRelay.Smtp;
using NativeRelay.Tools;

namespace NativeRelay.Benchmarks;

/// <summary>
/// The per-message work of the load tools, which must stay far cheaper than the relay they
/// measure: reading the client-side SMTP replies of one pipelined transaction (MAIL, RCPT,
/// DATA, then the final 250), the EHLO reply with its capabilities, stamping a message's
/// sequence number, and recording a latency. None of them may allocate.
/// </summary>
[MemoryDiagnoser]
public class ToolsBenchmarks
{
    private readonly byte[] _scratch = new byte[SmtpReplyParser.MaxLineLength];
    private ReadOnlySequence<byte> _transactionReplies;
    private ReadOnlySequence<byte> _ehloReply;
    private BlastMessage _message = null!;
    private byte[] _header = [];
    private readonly LatencyHistogram _histogram = new();
    private long _sequence;

    [GlobalSetup]
    public void Setup()
    {
        _transactionReplies = new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(
            "250 2.1.0 Sender ok\r\n250 2.1.5 Recipient ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 01A2074B13090000\r\n"));
        _ehloReply = new ReadOnlySequence<byte>(Encoding.ASCII.GetBytes(
            "250-mx.example.com Hello client.example.org\r\n250-PIPELINING\r\n250-SIZE 26214400\r\n250-8BITMIME\r\n" +
            "250-ENHANCEDSTATUSCODES\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250-DSN\r\n250 HELP\r\n"));
        _message = BlastMessage.Create(1024, "blast@example.org", "sink@example.com", DateTimeOffset.UtcNow, "bench000");
        _header = _message.NewHeaderCopy();
    }

    /// <summary>The four replies of one pipelined transaction.</summary>
    [Benchmark(Baseline = true)]
    public int ParseTransactionReplies()
    {
        var buffer = _transactionReplies;
        var caps = SmtpCapabilities.None;
        int sum = 0;
        while (SmtpReplyParser.TryRead(ref buffer, _scratch, out int code, out _, ref caps) == ReplyStatus.Complete)
            sum += code;
        return sum;
    }

    /// <summary>A nine-line EHLO reply with capability keywords.</summary>
    [Benchmark]
    public SmtpCapabilities ParseEhloReply()
    {
        var buffer = _ehloReply;
        var caps = SmtpCapabilities.None;
        SmtpReplyParser.TryRead(ref buffer, _scratch, out _, out _, ref caps, parseCapabilities: true);
        return caps;
    }

    /// <summary>What blast does to make each message unique.</summary>
    [Benchmark]
    public byte StampMessageId()
    {
        _message.Stamp(_header, ++_sequence);
        return _header[_message.SequenceOffset + BlastMessage.SequenceDigits - 1];
    }

    [Benchmark]
    public long RecordLatency()
    {
        _histogram.Record(++_sequence % 50_000);
        return _histogram.Count;
    }
}
