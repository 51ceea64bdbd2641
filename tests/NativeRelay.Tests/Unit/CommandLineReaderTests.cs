using System.Buffers;
using System.Text;
using NativeRelay.Smtp;

namespace NativeRelay.Tests.Unit;

public class CommandLineReaderTests
{
    private const int Max = CommandLineReader.MaxCommandLineLength;

    /// <summary>Builds multi-segment sequences the way a pipe hands them over after several socket reads.</summary>
    internal sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        private Segment(ReadOnlyMemory<byte> memory, long runningIndex)
        {
            Memory = memory;
            RunningIndex = runningIndex;
        }

        public static ReadOnlySequence<byte> Create(params ReadOnlyMemory<byte>[] parts)
        {
            var first = new Segment(parts[0], 0);
            Segment last = first;
            for (int i = 1; i < parts.Length; i++)
            {
                var next = new Segment(parts[i], last.RunningIndex + last.Memory.Length);
                last.Next = next;
                last = next;
            }

            return new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
        }

        public static ReadOnlySequence<byte> Create(params string[] parts) =>
            Create(Array.ConvertAll(parts, part => (ReadOnlyMemory<byte>)Encoding.Latin1.GetBytes(part)));
    }

    private readonly byte[] _scratch = new byte[Max];

    private LineStatus Read(ReadOnlySequence<byte> buffer, out string line, out ReadOnlySequence<byte> rest, out bool copied)
    {
        LineStatus status = CommandLineReader.TryReadLine(buffer, Max, _scratch, out ReadOnlySpan<byte> span, out SequencePosition lineEnd);
        line = Encoding.Latin1.GetString(span);
        rest = buffer.Slice(lineEnd);
        copied = span.Overlaps(_scratch);
        return status;
    }

    private static string AsString(ReadOnlySequence<byte> sequence) => Encoding.Latin1.GetString(sequence.ToArray());

    [Fact]
    public void SingleSegmentLineIsReturnedWithoutCopy()
    {
        var buffer = Segment.Create("NOOP\r\nQUIT");

        Assert.Equal(LineStatus.Found, Read(buffer, out string line, out var rest, out bool copied));
        Assert.Equal("NOOP", line);
        Assert.Equal("QUIT", AsString(rest));
        Assert.False(copied);
    }

    [Fact]
    public void LineSplitOverTwoSegmentsIsCopiedIntoScratch()
    {
        var buffer = Segment.Create("MAIL FR", "OM:<a@b.example>\r\nRCPT");

        Assert.Equal(LineStatus.Found, Read(buffer, out string line, out var rest, out bool copied));
        Assert.Equal("MAIL FROM:<a@b.example>", line);
        Assert.Equal("RCPT", AsString(rest));
        Assert.True(copied);
    }

    [Fact]
    public void LineSplitOverThreeSegments()
    {
        var buffer = Segment.Create("MA", "IL FROM:<x", "@y.example>\r\nDATA\r\n");

        Assert.Equal(LineStatus.Found, Read(buffer, out string line, out var rest, out _));
        Assert.Equal("MAIL FROM:<x@y.example>", line);
        Assert.Equal("DATA\r\n", AsString(rest));
    }

    [Fact]
    public void CarriageReturnAndLineFeedInDifferentSegments()
    {
        var buffer = Segment.Create("NOOP\r", "\n");

        Assert.Equal(LineStatus.Found, Read(buffer, out string line, out var rest, out _));
        Assert.Equal("NOOP", line);
        Assert.True(rest.IsEmpty);
    }

    [Fact]
    public void LineFeedAloneInLastSegment()
    {
        var buffer = Segment.Create("RSET", "\r", "\nQUIT\r\n");

        Assert.Equal(LineStatus.Found, Read(buffer, out string line, out var rest, out _));
        Assert.Equal("RSET", line);
        Assert.Equal("QUIT\r\n", AsString(rest));
    }

    [Fact]
    public void LeadingEmptySegmentsDoNotForceACopy()
    {
        var buffer = Segment.Create("", "", "HELO x\r\n");

        Assert.Equal(LineStatus.Found, Read(buffer, out string line, out var rest, out bool copied));
        Assert.Equal("HELO x", line);
        Assert.True(rest.IsEmpty);
        Assert.False(copied);
    }

    [Fact]
    public void BareLineFeedEndsACommandLine()
    {
        var buffer = Segment.Create("NOOP\nQUIT\n");

        Assert.Equal(LineStatus.Found, Read(buffer, out string first, out var rest, out _));
        Assert.Equal("NOOP", first);
        Assert.Equal(LineStatus.Found, Read(rest, out string second, out rest, out _));
        Assert.Equal("QUIT", second);
        Assert.True(rest.IsEmpty);
    }

    [Fact]
    public void OnlyOneCarriageReturnBeforeTheLineFeedIsStripped()
    {
        var buffer = Segment.Create("NOOP\r\r\n");

        Assert.Equal(LineStatus.Found, Read(buffer, out string line, out _, out _));
        Assert.Equal("NOOP\r", line);
    }

    [Fact]
    public void EmptyLineIsFound()
    {
        var buffer = Segment.Create("\r\nNOOP\r\n");

        Assert.Equal(LineStatus.Found, Read(buffer, out string line, out var rest, out _));
        Assert.Equal("", line);
        Assert.Equal("NOOP\r\n", AsString(rest));
    }

    [Theory]
    [InlineData("NOOP")]
    [InlineData("NOOP\r")]
    [InlineData("NO|OP")]
    [InlineData("MAIL |FROM:|<a@b>\r")]
    [InlineData("")]
    public void IncompleteLineNeedsMoreDataAndConsumesNothing(string segmentsSeparatedByBar)
    {
        var buffer = Segment.Create(segmentsSeparatedByBar.Split('|'));

        LineStatus status = CommandLineReader.TryReadLine(buffer, Max, _scratch, out ReadOnlySpan<byte> line, out SequencePosition lineEnd);

        Assert.Equal(LineStatus.NeedMoreData, status);
        Assert.True(line.IsEmpty);
        Assert.Equal(0, buffer.Slice(buffer.Start, lineEnd).Length);
    }

    [Fact]
    public void LineOfExactly512OctetsIncludingCrlfIsFound()
    {
        string command = "NOOP " + new string('x', Max - 2 - 5);
        var buffer = Segment.Create(command + "\r\n");

        Assert.Equal(LineStatus.Found, Read(buffer, out string line, out var rest, out _));
        Assert.Equal(command, line);
        Assert.Equal(510, line.Length);
        Assert.True(rest.IsEmpty);
    }

    [Fact]
    public void LineOf513OctetsIncludingCrlfIsTooLong()
    {
        string command = "NOOP " + new string('x', Max - 1 - 5);
        var buffer = Segment.Create(command + "\r\nQUIT\r\n");

        LineStatus status = CommandLineReader.TryReadLine(buffer, Max, _scratch, out ReadOnlySpan<byte> line, out SequencePosition lineEnd);

        Assert.Equal(LineStatus.TooLong, status);
        Assert.True(line.IsEmpty);
        Assert.Equal(Max, buffer.Slice(buffer.Start, lineEnd).Length);

        // The caller discards the examined part, skips the rest of the overlong line, and carries on.
        var rest = buffer.Slice(lineEnd);
        Assert.True(CommandLineReader.TrySkipPastLineEnd(rest, out SequencePosition consumed));
        Assert.Equal(LineStatus.Found, Read(rest.Slice(consumed), out string next, out _, out _));
        Assert.Equal("QUIT", next);
    }

    [Fact]
    public void BareLineFeedCountsOneOctetTowardsTheLimit()
    {
        string command = new string('x', Max - 1);
        var buffer = Segment.Create(command + "\n");

        Assert.Equal(LineStatus.Found, Read(buffer, out string line, out _, out _));
        Assert.Equal(command, line);
    }

    [Fact]
    public void TooLongAcrossThreeSegmentsReportsTheLimitPosition()
    {
        string command = new string('y', Max - 1);
        var buffer = Segment.Create(command[..200], command[200..400], command[400..] + "\r\n");

        LineStatus status = CommandLineReader.TryReadLine(buffer, Max, _scratch, out _, out SequencePosition lineEnd);

        Assert.Equal(LineStatus.TooLong, status);
        Assert.Equal(Max, buffer.Slice(buffer.Start, lineEnd).Length);
        Assert.Equal("\n", AsString(buffer.Slice(lineEnd)));
    }

    [Fact]
    public void LongestLineSplitOverSegmentsIsCopiedWhole()
    {
        string command = new string('z', Max - 2);
        var buffer = Segment.Create(command[..100], command[100..] + "\r", "\n");

        Assert.Equal(LineStatus.Found, Read(buffer, out string line, out _, out bool copied));
        Assert.Equal(command, line);
        Assert.True(copied);
    }

    [Theory]
    [InlineData(Max - 1, LineStatus.NeedMoreData)]
    [InlineData(Max, LineStatus.TooLong)]
    [InlineData(Max + 100, LineStatus.TooLong)]
    public void DataWithoutLineFeedIsTooLongOnlyOnceTheLimitIsReached(int length, LineStatus expected)
    {
        var buffer = Segment.Create(new string('a', length));

        Assert.Equal(expected, CommandLineReader.TryReadLine(buffer, Max, _scratch, out _, out _));
    }

    [Fact]
    public void PipelinedLinesAreReadOneAfterAnother()
    {
        var buffer = Segment.Create("MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDA", "TA\r\n");

        Assert.Equal(LineStatus.Found, Read(buffer, out string mail, out var rest, out _));
        Assert.Equal(LineStatus.Found, Read(rest, out string rcpt, out rest, out _));
        Assert.Equal(LineStatus.Found, Read(rest, out string data, out rest, out _));
        Assert.Equal(LineStatus.NeedMoreData, Read(rest, out _, out _, out _));

        Assert.Equal("MAIL FROM:<a@b.example>", mail);
        Assert.Equal("RCPT TO:<c@d.example>", rcpt);
        Assert.Equal("DATA", data);
        Assert.True(rest.IsEmpty);
    }

    [Fact]
    public void SkipPastLineEndWithoutLineFeedConsumesEverything()
    {
        var buffer = Segment.Create("xxxx", "yyyy");

        Assert.False(CommandLineReader.TrySkipPastLineEnd(buffer, out SequencePosition consumed));
        Assert.True(buffer.Slice(consumed).IsEmpty);
    }

    [Fact]
    public void SkipPastLineEndStopsAfterTheLineFeed()
    {
        var buffer = Segment.Create("tail of long line", "\r\nNOOP\r\n");

        Assert.True(CommandLineReader.TrySkipPastLineEnd(buffer, out SequencePosition consumed));
        Assert.Equal("NOOP\r\n", AsString(buffer.Slice(consumed)));
    }

    [Fact]
    public void ScratchSmallerThanTheLimitIsRejected()
    {
        var buffer = Segment.Create("NOOP\r\n");

        Assert.Throws<ArgumentOutOfRangeException>(() =>
            CommandLineReader.TryReadLine(buffer, Max, new byte[Max - 1], out _, out _));
    }
}
