using System.Buffers;
using System.Text;
using BenchmarkDotNet.Attributes;
using NativeRelay.Smtp;

namespace NativeRelay.Benchmarks;

/// <summary>
/// The command side of one pipelined SMTP transaction: line framing, verb recognition, path and parameter parsing.
/// This is the per-command cost a bulk sender pays before any message byte moves, so it must stay allocation-free.
/// </summary>
[MemoryDiagnoser]
public class CommandParserBenchmarks
{
    private const string Block =
        "MAIL FROM:<bounces+12345@mailer.example.org> SIZE=48213 BODY=8BITMIME\r\n" +
        "RCPT TO:<first.recipient@destination.example.com>\r\n" +
        "RCPT TO:<second.recipient@destination.example.com>\r\n" +
        "DATA\r\n";

    private readonly byte[] _scratch = new byte[CommandLineReader.MaxCommandLineLength];
    private ReadOnlySequence<byte> _singleSegment;
    private ReadOnlySequence<byte> _fragmented;

    [GlobalSetup]
    public void Setup()
    {
        byte[] bytes = Encoding.ASCII.GetBytes(Block);
        _singleSegment = new ReadOnlySequence<byte>(bytes);

        // Small socket reads: every command crosses at least one segment boundary and takes the copy path.
        _fragmented = BenchSegment.Split(bytes, segmentLength: 16);
    }

    /// <summary>The common case: the whole pipelined block arrived in one read.</summary>
    [Benchmark(Baseline = true)]
    public long PipelinedBlock_SingleSegment() => ParseTransaction(_singleSegment, _scratch);

    /// <summary>The worst case: 16-byte reads, so lines are stitched together in the scratch buffer.</summary>
    [Benchmark]
    public long PipelinedBlock_16ByteSegments() => ParseTransaction(_fragmented, _scratch);

    private static long ParseTransaction(ReadOnlySequence<byte> buffer, byte[] scratch)
    {
        long checksum = 0;
        while (CommandLineReader.TryReadLine(buffer, CommandLineReader.MaxCommandLineLength, scratch,
                   out ReadOnlySpan<byte> line, out SequencePosition lineEnd) == LineStatus.Found)
        {
            SmtpVerb verb = SmtpCommandParser.Parse(line, out ReadOnlySpan<byte> argument);
            checksum += (int)verb;

            if (verb is SmtpVerb.Mail or SmtpVerb.Rcpt)
            {
                ReadOnlySpan<byte> prefix = verb == SmtpVerb.Mail ? MailboxPath.MailFromPrefix : MailboxPath.RcptToPrefix;
                PathError error = MailboxPath.Parse(argument, prefix, allowUtf8: false, allowBareAddress: false,
                    out ReadOnlySpan<byte> address, out ReadOnlySpan<byte> parameters);
                checksum += (int)error + address.Length;

                var enumerator = new EsmtpParameters(parameters);
                while (enumerator.MoveNext())
                {
                    if (EsmtpParameters.KeywordEquals(enumerator.Keyword, "SIZE"u8)
                        && EsmtpParameters.TryParseSize(enumerator.Value, out long size))
                    {
                        checksum += size;
                    }
                    else
                    {
                        checksum += enumerator.Value.Length;
                    }
                }
            }

            buffer = buffer.Slice(lineEnd);
        }

        return checksum;
    }

    private sealed class BenchSegment : ReadOnlySequenceSegment<byte>
    {
        private BenchSegment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public static ReadOnlySequence<byte> Split(byte[] bytes, int segmentLength)
        {
            var first = new BenchSegment(bytes.AsMemory(0, Math.Min(segmentLength, bytes.Length)), 0);
            BenchSegment last = first;
            for (int offset = segmentLength; offset < bytes.Length; offset += segmentLength)
            {
                var next = new BenchSegment(bytes.AsMemory(offset, Math.Min(segmentLength, bytes.Length - offset)), offset);
                last.Next = next;
                last = next;
            }

            return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
        }
    }
}
