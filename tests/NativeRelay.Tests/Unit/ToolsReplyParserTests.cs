using System.Buffers;
using System.Text;
using NativeRelay.Smtp;
using NativeRelay.Tools;

namespace NativeRelay.Tests.Unit;

public class ToolsReplyParserTests
{
    private readonly byte[] _scratch = new byte[SmtpReplyParser.MaxLineLength];

    private (ReplyStatus Status, int Code, string Text, long Left) Read(ReadOnlySequence<byte> buffer, bool capabilities = false)
    {
        var caps = SmtpCapabilities.None;
        var status = SmtpReplyParser.TryRead(ref buffer, _scratch, out int code, out var text, ref caps, capabilities);
        return (status, code, Encoding.ASCII.GetString(text), buffer.Length);
    }

    private static ReadOnlySequence<byte> Seq(string text) => new(Encoding.ASCII.GetBytes(text));

    [Theory]
    [InlineData("250 2.0.0 Ok\r\n", 250, "2.0.0 Ok")]
    [InlineData("354 go ahead\r\n", 354, "go ahead")]
    [InlineData("250\r\n", 250, "")]
    [InlineData("550 5.7.1 no\n", 550, "5.7.1 no")]
    [InlineData("250-first\r\n250-second\r\n250 last\r\n", 250, "last")]
    public void Reads_one_whole_reply(string wire, int code, string text)
    {
        var r = Read(Seq(wire));
        Assert.Equal(ReplyStatus.Complete, r.Status);
        Assert.Equal(code, r.Code);
        Assert.Equal(text, r.Text);
        Assert.Equal(0, r.Left);
    }

    [Fact]
    public void Reads_pipelined_replies_one_at_a_time()
    {
        var buffer = Seq("250 2.1.0 Ok\r\n550 5.1.1 unknown\r\n354 go\r\n");
        var caps = SmtpCapabilities.None;
        var codes = new List<int>();
        while (SmtpReplyParser.TryRead(ref buffer, _scratch, out int code, out _, ref caps) == ReplyStatus.Complete)
            codes.Add(code);
        Assert.Equal([250, 550, 354], codes);
        Assert.True(buffer.IsEmpty);
    }

    [Theory]
    [InlineData("")]
    [InlineData("25")]
    [InlineData("250 partial")]
    [InlineData("250-first\r\n250 la")]
    [InlineData("250-first\r\n")]
    public void Waits_for_a_complete_reply_without_consuming(string wire)
    {
        var r = Read(Seq(wire));
        Assert.Equal(ReplyStatus.NeedMoreData, r.Status);
        Assert.Equal(wire.Length, r.Left);
    }

    [Theory]
    [InlineData("hello\r\n")]
    [InlineData("2x0 nope\r\n")]
    [InlineData("250_bad separator\r\n")]
    [InlineData("099 too low\r\n")]
    [InlineData("\r\n")]
    public void Refuses_what_is_not_a_reply(string wire)
    {
        Assert.Equal(ReplyStatus.Malformed, Read(Seq(wire)).Status);
    }

    [Fact]
    public void An_endless_line_is_malformed_rather_than_buffered_forever()
    {
        Assert.Equal(ReplyStatus.Malformed, Read(Seq("250 " + new string('x', SmtpReplyParser.MaxLineLength + 10))).Status);
    }

    [Fact]
    public void Reads_replies_split_across_segments()
    {
        const string wire = "250-sink.example Hello\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 CHUNKING\r\n";
        for (int split = 1; split < wire.Length; split++)
        {
            var buffer = TwoSegments(Encoding.ASCII.GetBytes(wire), split);
            var caps = SmtpCapabilities.None;
            Assert.Equal(ReplyStatus.Complete, SmtpReplyParser.TryRead(ref buffer, _scratch, out int code, out var text, ref caps, parseCapabilities: true));
            Assert.Equal(250, code);
            Assert.Equal("CHUNKING", Encoding.ASCII.GetString(text));
            Assert.Equal(SmtpCapabilities.Pipelining | SmtpCapabilities.Size | SmtpCapabilities.Chunking, caps);
        }
    }

    [Fact]
    public void Collects_ehlo_capabilities_case_insensitively()
    {
        var buffer = Seq("250-mx Hello\r\n250-pipelining\r\n250-8BITMIME\r\n250-STARTTLS\r\n250-SMTPUTF8\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250 X-UNKNOWN\r\n");
        var caps = SmtpCapabilities.None;
        Assert.Equal(ReplyStatus.Complete, SmtpReplyParser.TryRead(ref buffer, _scratch, out _, out _, ref caps, parseCapabilities: true));
        Assert.Equal(SmtpCapabilities.Pipelining | SmtpCapabilities.EightBitMime | SmtpCapabilities.StartTls
                     | SmtpCapabilities.SmtpUtf8 | SmtpCapabilities.Dsn | SmtpCapabilities.EnhancedStatusCodes, caps);
    }

    [Fact]
    public void Parsing_allocates_nothing()
    {
        var bytes = Encoding.ASCII.GetBytes("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n");
        var caps = SmtpCapabilities.None;
        var warm = new ReadOnlySequence<byte>(bytes);
        SmtpReplyParser.TryRead(ref warm, _scratch, out _, out _, ref caps);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 1000; i++)
        {
            var buffer = new ReadOnlySequence<byte>(bytes);
            while (SmtpReplyParser.TryRead(ref buffer, _scratch, out _, out _, ref caps) == ReplyStatus.Complete)
            {
            }
        }
        Assert.Equal(before, GC.GetAllocatedBytesForCurrentThread());
    }

    private static ReadOnlySequence<byte> TwoSegments(byte[] bytes, int split)
    {
        var first = new Segment(bytes.AsMemory(0, split), 0);
        var second = first.Append(bytes.AsMemory(split));
        return new ReadOnlySequence<byte>(first, 0, second, second.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory, RunningIndex + Memory.Length);
            Next = next;
            return next;
        }
    }
}
