using System.Buffers;
using System.Text;
using NativeRelay.Message;

namespace NativeRelay.Tests.Unit;

public class DotUnstufferTests
{
    private static byte[] Bytes(string text) => Encoding.ASCII.GetBytes(text);

    private static string Text(ReadOnlySpan<byte> bytes) => Encoding.ASCII.GetString(bytes);

    /// <summary>Feeds the chunks in order until the decoder stops asking for more.</summary>
    private static (DataStatus Status, string Output, int ConsumedTotal) Feed(
        DotUnstuffer unstuffer, byte[] input, IEnumerable<int> chunkSizes)
    {
        var output = new ArrayBufferWriter<byte>();
        int offset = 0;
        foreach (int size in chunkSizes)
        {
            int length = Math.Min(size, input.Length - offset);
            DataStatus status = unstuffer.Process(input.AsSpan(offset, length), output, out int consumed);
            if (status != DataStatus.NeedMoreData)
            {
                return (status, Text(output.WrittenSpan), offset + consumed);
            }

            Assert.Equal(length, consumed);
            offset += length;
            if (offset == input.Length)
            {
                break;
            }
        }

        return (DataStatus.NeedMoreData, Text(output.WrittenSpan), offset);
    }

    private static (DataStatus Status, string Output, int ConsumedTotal) FeedWhole(byte[] input, DotUnstuffer? unstuffer = null) =>
        Feed(unstuffer ?? new DotUnstuffer(), input, [input.Length]);

    private static IEnumerable<int> Ones(int count) => Enumerable.Repeat(1, count);

    [Fact]
    public void SimpleMessage()
    {
        byte[] input = Bytes("Subject: x\r\n\r\nHello\r\n.\r\n");
        var unstuffer = new DotUnstuffer();

        var (status, output, consumed) = FeedWhole(input, unstuffer);

        Assert.Equal(DataStatus.Complete, status);
        Assert.Equal("Subject: x\r\n\r\nHello\r\n", output);
        Assert.Equal(input.Length, consumed);
        Assert.Equal(output.Length, unstuffer.MessageSize);
        Assert.False(unstuffer.LineTooLong);
        Assert.False(unstuffer.SizeExceeded);
    }

    [Fact]
    public void RemovesTheStuffedDot()
    {
        byte[] input = Bytes("a\r\n..b\r\n...\r\n..\r\n.c\r\nend.\r\n.\r\n");

        var (status, output, _) = FeedWhole(input);

        Assert.Equal(DataStatus.Complete, status);
        Assert.Equal("a\r\n.b\r\n..\r\n.\r\nc\r\nend.\r\n", output);
    }

    [Fact]
    public void EmptyMessage()
    {
        byte[] input = Bytes(".\r\nQUIT\r\n");
        var unstuffer = new DotUnstuffer();

        var (status, output, consumed) = FeedWhole(input, unstuffer);

        Assert.Equal(DataStatus.Complete, status);
        Assert.Equal("", output);
        Assert.Equal(3, consumed);
        Assert.Equal(0, unstuffer.MessageSize);
    }

    [Fact]
    public void EmptyLinesAreKept()
    {
        var (status, output, _) = FeedWhole(Bytes("\r\n\r\nx\r\n\r\n.\r\n"));
        Assert.Equal(DataStatus.Complete, status);
        Assert.Equal("\r\n\r\nx\r\n\r\n", output);
    }

    // ".\r\n" inside a line, a line that is a single (stuffed) dot, stuffed lines, then a
    // pipelined command after the terminator.
    private const string TrickyInput =
        "Subject: t\r\n\r\nends with a dot.\r\n..\r\n..leading\r\nmid .\r\n line\r\n...\r\n.\r\nQUIT\r\n";

    private const string TrickyOutput =
        "Subject: t\r\n\r\nends with a dot.\r\n.\r\n.leading\r\nmid .\r\n line\r\n..\r\n";

    [Fact]
    public void EverySplitIntoTwoChunksGivesTheSameResult()
    {
        byte[] input = Bytes(TrickyInput);
        int terminatorEnd = TrickyInput.IndexOf("QUIT", StringComparison.Ordinal);
        var unstuffer = new DotUnstuffer();

        for (int split = 0; split <= input.Length; split++)
        {
            unstuffer.Reset();
            var (status, output, consumed) = Feed(unstuffer, input, [split, input.Length - split]);

            Assert.Equal(DataStatus.Complete, status);
            Assert.Equal(TrickyOutput, output);
            Assert.Equal(terminatorEnd, consumed);
        }
    }

    [Fact]
    public void OneByteChunksGiveTheSameResult()
    {
        byte[] input = Bytes(TrickyInput);
        var unstuffer = new DotUnstuffer();

        var (status, output, consumed) = Feed(unstuffer, input, Ones(input.Length));

        Assert.Equal(DataStatus.Complete, status);
        Assert.Equal(TrickyOutput, output);
        Assert.Equal(TrickyInput.IndexOf("QUIT", StringComparison.Ordinal), consumed);
    }

    [Fact]
    public void EmptyChunksChangeNothing()
    {
        var unstuffer = new DotUnstuffer();
        var output = new ArrayBufferWriter<byte>();
        Assert.Equal(DataStatus.NeedMoreData, unstuffer.Process(Bytes("a\r"), output, out _));
        Assert.Equal(DataStatus.NeedMoreData, unstuffer.Process(ReadOnlySpan<byte>.Empty, output, out int consumed));
        Assert.Equal(0, consumed);
        Assert.Equal(DataStatus.NeedMoreData, unstuffer.Process(Bytes("\n."), output, out _));
        Assert.Equal(DataStatus.NeedMoreData, unstuffer.Process(ReadOnlySpan<byte>.Empty, output, out _));
        Assert.Equal(DataStatus.Complete, unstuffer.Process(Bytes("\r\n"), output, out consumed));
        Assert.Equal(2, consumed);
        Assert.Equal("a\r\n", Text(output.WrittenSpan));
    }

    // The offset is where the decoder must stop: the byte that shows the line ending to be bare.
    [Theory]
    [InlineData("\n.\n", 0)]
    [InlineData("\r\n.\r", 4)]
    [InlineData("\n.\r\n", 0)]
    [InlineData("\r.\r", 1)]
    [InlineData("\r\n.\n", 3)]
    [InlineData("\r.\r\n", 1)]
    [InlineData("\n.\r", 0)]
    [InlineData("\r\n.\r\r\n", 4)]
    [InlineData("\r\n\n.\r\n", 2)]
    public void SmugglingSequencesAreRefusedNeverTakenAsTheEnd(string smuggled, int badOffsetInSmuggled)
    {
        const string Prefix = "Subject: x\r\n\r\nhello";
        const string Smuggled = "MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\nforged\r\n";
        byte[] input = Bytes(Prefix + smuggled + Smuggled + "\r\n.\r\n");
        var unstuffer = new DotUnstuffer();

        var whole = FeedWhole(input, unstuffer);
        Assert.Equal(DataStatus.BareLineEnding, whole.Status);
        Assert.Equal(Prefix.Length + badOffsetInSmuggled, whole.ConsumedTotal);

        unstuffer.Reset();
        Assert.Equal(DataStatus.BareLineEnding, Feed(unstuffer, input, Ones(input.Length)).Status);

        for (int split = 0; split <= input.Length; split++)
        {
            unstuffer.Reset();
            var twoChunks = Feed(unstuffer, input, [split, input.Length - split]);
            Assert.Equal(DataStatus.BareLineEnding, twoChunks.Status);
            Assert.Equal(Prefix.Length + badOffsetInSmuggled, twoChunks.ConsumedTotal);
        }
    }

    [Theory]
    [InlineData("hello\r\n.\r")]
    [InlineData("hello\r\n.")]
    [InlineData("hello\r\n")]
    [InlineData("hello\r")]
    public void InputThatStopsShortOfTheTerminatorNeedsMore(string text)
    {
        byte[] input = Bytes(text);
        Assert.Equal(DataStatus.NeedMoreData, FeedWhole(input).Status);
        Assert.Equal(DataStatus.NeedMoreData, Feed(new DotUnstuffer(), input, Ones(input.Length)).Status);
    }

    [Fact]
    public void BareCrInsideALineIsRefused()
    {
        var (status, _, consumed) = FeedWhole(Bytes("abc\rdef\r\n.\r\n"));
        Assert.Equal(DataStatus.BareLineEnding, status);
        Assert.Equal(4, consumed);
    }

    [Fact]
    public void BareLfInsideALineIsRefused()
    {
        var (status, _, consumed) = FeedWhole(Bytes("abc\ndef\r\n.\r\n"));
        Assert.Equal(DataStatus.BareLineEnding, status);
        Assert.Equal(3, consumed);
    }

    [Fact]
    public void CrAtTheEndOfAChunkIsJudgedByTheNextChunk()
    {
        var unstuffer = new DotUnstuffer();
        var output = new ArrayBufferWriter<byte>();

        Assert.Equal(DataStatus.NeedMoreData, unstuffer.Process(Bytes("abc\r"), output, out int consumed));
        Assert.Equal(4, consumed);
        Assert.Equal(DataStatus.BareLineEnding, unstuffer.Process(Bytes("d\r\n.\r\n"), output, out consumed));
        Assert.Equal(0, consumed);

        // The refusal sticks until Reset.
        Assert.Equal(DataStatus.BareLineEnding, unstuffer.Process(Bytes(".\r\n"), output, out consumed));
        Assert.Equal(0, consumed);

        unstuffer.Reset();
        output.ResetWrittenCount();
        Assert.Equal(DataStatus.NeedMoreData, unstuffer.Process(Bytes("abc\r"), output, out _));
        Assert.Equal(DataStatus.Complete, unstuffer.Process(Bytes("\n.\r\n"), output, out consumed));
        Assert.Equal(4, consumed);
        Assert.Equal("abc\r\n", Text(output.WrittenSpan));
    }

    [Fact]
    public void PipelinedCommandAfterTheTerminatorIsLeftToTheCaller()
    {
        byte[] input = Bytes("hi\r\n.\r\nMAIL FROM:<a@example.org>\r\n");
        var unstuffer = new DotUnstuffer();
        var output = new ArrayBufferWriter<byte>();

        Assert.Equal(DataStatus.Complete, unstuffer.Process(input, output, out int consumed));
        Assert.Equal(7, consumed);
        Assert.Equal("MAIL FROM:<a@example.org>\r\n", Text(input.AsSpan(consumed)));
        Assert.Equal("hi\r\n", Text(output.WrittenSpan));

        // Once complete, more input is not taken.
        Assert.Equal(DataStatus.Complete, unstuffer.Process(input.AsSpan(consumed), output, out consumed));
        Assert.Equal(0, consumed);
    }

    [Fact]
    public void TerminatorSplitAcrossChunksCountsOnlyItsOwnBytes()
    {
        var unstuffer = new DotUnstuffer();
        var output = new ArrayBufferWriter<byte>();

        Assert.Equal(DataStatus.NeedMoreData, unstuffer.Process(Bytes("hi\r\n.\r"), output, out int consumed));
        Assert.Equal(6, consumed);
        Assert.Equal(DataStatus.Complete, unstuffer.Process(Bytes("\nQUIT\r\n"), output, out consumed));
        Assert.Equal(1, consumed);
        Assert.Equal("hi\r\n", Text(output.WrittenSpan));
    }

    [Fact]
    public void LongLineIsFlaggedAndTheDataStillReadToTheEnd()
    {
        var unstuffer = new DotUnstuffer(maxLineLength: 10);
        string longLine = new('x', 11);
        byte[] input = Bytes("short\r\n" + longLine + "\r\nafter\r\n.\r\nQUIT\r\n");

        var (status, output, consumed) = Feed(unstuffer, input, [5, 3, 4, 100]);

        Assert.Equal(DataStatus.Complete, status);
        Assert.True(unstuffer.LineTooLong);
        Assert.False(unstuffer.SizeExceeded);
        Assert.Equal("short\r\n" + longLine + "\r\nafter\r\n", output);
        Assert.Equal(input.Length - "QUIT\r\n".Length, consumed);
    }

    [Fact]
    public void LineAtTheLimitIsFineAndTheStuffedDotDoesNotCount()
    {
        var unstuffer = new DotUnstuffer(maxLineLength: 10);
        byte[] input = Bytes(new string('x', 10) + "\r\n." + new string('.', 10) + "\r\n.\r\n");

        var (status, _, _) = Feed(unstuffer, input, Ones(input.Length));

        Assert.Equal(DataStatus.Complete, status);
        Assert.False(unstuffer.LineTooLong);
    }

    [Fact]
    public void LineWithoutEndingIsFlaggedAsSoonAsItIsTooLong()
    {
        var unstuffer = new DotUnstuffer(maxLineLength: 10);
        var output = new ArrayBufferWriter<byte>();
        Assert.Equal(DataStatus.NeedMoreData, unstuffer.Process(Bytes(new string('y', 6)), output, out _));
        Assert.False(unstuffer.LineTooLong);
        Assert.Equal(DataStatus.NeedMoreData, unstuffer.Process(Bytes(new string('y', 5)), output, out _));
        Assert.True(unstuffer.LineTooLong);
    }

    [Fact]
    public void OversizedMessageIsCappedAndStillCompletes()
    {
        var unstuffer = new DotUnstuffer(maxMessageSize: 10);
        byte[] input = Bytes("0123456789abcdef\r\n..more\r\nlines\r\n.\r\nQUIT\r\n");

        foreach (int chunk in new[] { input.Length, 1, 3, 7 })
        {
            unstuffer.Reset();
            var output = new ArrayBufferWriter<byte>();
            int offset = 0;
            DataStatus status;
            int consumed;
            do
            {
                int length = Math.Min(chunk, input.Length - offset);
                status = unstuffer.Process(input.AsSpan(offset, length), output, out consumed);
                offset += consumed;
            }
            while (status == DataStatus.NeedMoreData && offset < input.Length);

            Assert.Equal(DataStatus.Complete, status);
            Assert.True(unstuffer.SizeExceeded);
            Assert.Equal(10, unstuffer.MessageSize);
            Assert.Equal("0123456789", Text(output.WrittenSpan));
            Assert.Equal(input.Length - "QUIT\r\n".Length, offset);
        }
    }

    [Fact]
    public void MessageOfExactlyTheLimitIsNotTooBig()
    {
        var unstuffer = new DotUnstuffer(maxMessageSize: 8);
        var (status, output, _) = FeedWhole(Bytes("abc\r\n.d\r\n.\r\n"), unstuffer);

        Assert.Equal(DataStatus.Complete, status);
        Assert.False(unstuffer.SizeExceeded);
        Assert.Equal("abc\r\nd\r\n", output);
        Assert.Equal(8, unstuffer.MessageSize);
    }

    [Fact]
    public void ResetClearsTheFlags()
    {
        var unstuffer = new DotUnstuffer(maxLineLength: 2, maxMessageSize: 3);
        Assert.Equal(DataStatus.Complete, FeedWhole(Bytes("abcdef\r\n.\r\n"), unstuffer).Status);
        Assert.True(unstuffer.LineTooLong);
        Assert.True(unstuffer.SizeExceeded);

        unstuffer.Reset();
        Assert.False(unstuffer.LineTooLong);
        Assert.False(unstuffer.SizeExceeded);
        Assert.Equal(0, unstuffer.MessageSize);
        Assert.Equal(2, unstuffer.MaxLineLength);
        Assert.Equal(3, unstuffer.MaxMessageSize);
    }

    [Fact]
    public void NegativeLimitsAreRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new DotUnstuffer(maxLineLength: -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => new DotUnstuffer(maxMessageSize: -1));
    }

    [Fact]
    public void SteadyStateMessageAllocatesNothing()
    {
        var text = new StringBuilder("Subject: steady\r\n\r\n");
        for (int n = 0; n < 1500; n++)
        {
            text.Append(n % 7 == 0 ? "..a stuffed line of text that goes on for a while\r\n" : "an ordinary line of body text, about seventy bytes long......\r\n");
        }

        byte[] input = Bytes(text.Append(".\r\n").ToString());
        var output = new ArrayBufferWriter<byte>(input.Length);
        var unstuffer = new DotUnstuffer();

        // No Assert inside the measured loop: the assertion library may allocate on its own.
        DataStatus DecodeOnce()
        {
            output.ResetWrittenCount();
            unstuffer.Reset();
            int offset = 0;
            DataStatus status;
            do
            {
                int length = Math.Min(4096, input.Length - offset);
                status = unstuffer.Process(input.AsSpan(offset, length), output, out int consumed);
                offset += consumed;
            }
            while (status == DataStatus.NeedMoreData && offset < input.Length);

            return status;
        }

        Assert.Equal(DataStatus.Complete, DecodeOnce());
        Assert.Equal(DataStatus.Complete, DecodeOnce());

        int completed = 0;
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int round = 0; round < 20; round++)
        {
            completed += DecodeOnce() == DataStatus.Complete ? 1 : 0;
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(20, completed);
        Assert.Equal(0, allocated);
        Assert.True(output.WrittenCount > 90_000);
    }

    /// <summary>
    /// The decoding rules one byte at a time, written for clarity only: what the decoder must do
    /// whatever shortcuts it takes (the fast path that runs over whole lines in particular).
    /// </summary>
    private static (DataStatus Status, byte[] Output, int Consumed, bool LineTooLong, bool SizeExceeded) Reference(
        byte[] input, int maxLineLength, long maxMessageSize)
    {
        const int lineStart = 0, afterDot = 1, inLine = 2, afterCr = 3, afterTerminatorCr = 4;
        var output = new List<byte>();
        int state = lineStart;
        long line = 0;
        bool tooLong = false, sizeExceeded = false;

        void Emit(byte b)
        {
            if (output.Count < maxMessageSize)
                output.Add(b);
            else
                sizeExceeded = true;
        }

        for (int k = 0; k < input.Length; k++)
        {
            byte b = input[k];
            if (state == lineStart)
            {
                if (b == '.') { state = afterDot; continue; }
                state = inLine;
            }
            else if (state == afterDot)
            {
                if (b == '\r') { state = afterTerminatorCr; continue; }
                state = inLine;
            }
            else if (state == afterTerminatorCr)
            {
                return b == '\n'
                    ? (DataStatus.Complete, output.ToArray(), k + 1, tooLong, sizeExceeded)
                    : (DataStatus.BareLineEnding, output.ToArray(), k, tooLong, sizeExceeded);
            }
            else if (state == afterCr)
            {
                if (b != '\n')
                    return (DataStatus.BareLineEnding, output.ToArray(), k, tooLong, sizeExceeded);
                Emit(b);
                line = 0;
                state = lineStart;
                continue;
            }

            // In a line.
            if (b == '\n')
                return (DataStatus.BareLineEnding, output.ToArray(), k, tooLong, sizeExceeded);
            Emit(b);
            if (b == '\r') { state = afterCr; continue; }
            if (++line > maxLineLength)
                tooLong = true;
        }

        return (DataStatus.NeedMoreData, output.ToArray(), input.Length, tooLong, sizeExceeded);
    }

    /// <summary>
    /// Mail-like data: lines around the limit, dot lines, and pipelined commands after the end; with
    /// <paramref name="strays"/>, lone CRs and LFs now and then, which get the data refused.
    /// </summary>
    private static byte[] RandomData(Random random, int maxLineLength, bool strays)
    {
        var data = new List<byte>();
        int lines = random.Next(0, 60);
        for (int n = 0; n < lines; n++)
        {
            int dots = random.Next(10) == 0 ? random.Next(1, 3) : 0;
            for (int d = 0; d < dots; d++)
                data.Add((byte)'.');
            int length = random.Next(4) == 0 ? random.Next(0, 3 * maxLineLength + 3) : random.Next(0, Math.Min(maxLineLength, 80) + 2);
            for (int c = 0; c < length; c++)
                data.Add((byte)(random.Next(200) switch { 0 when strays => '\r', 1 when strays => '\n', 2 => '.', _ => 'a' + random.Next(26) }));
            switch (strays ? random.Next(40) : 3)
            {
                case 0: data.Add((byte)'\n'); break;
                case 1: data.Add((byte)'\r'); break;
                case 2: break;
                default: data.Add((byte)'\r'); data.Add((byte)'\n'); break;
            }
        }

        if (random.Next(4) != 0)
            data.AddRange(".\r\nQUIT\r\n"u8.ToArray());
        return data.ToArray();
    }

    [Fact]
    public void MatchesTheByteWiseRulesOnRandomDataCutAnywhere()
    {
        var random = new Random(20261207);
        int refused = 0, completed = 0;
        int[] limits = [5, 31, 32, 33, 63, 64, 65, 100, 998];
        for (int round = 0; round < 4000; round++)
        {
            int maxLine = limits[random.Next(limits.Length)];
            long maxSize = random.Next(8) == 0 ? random.Next(0, 3000) : 1_000_000;
            // One round in five has stray line endings; the rest decode to the end (or to a
            // line limit or size limit), so output and flags are compared there.
            byte[] input = RandomData(random, maxLine, strays: random.Next(5) == 0);
            var expected = Reference(input, maxLine, maxSize);

            var unstuffer = new DotUnstuffer(maxLine, maxSize);
            var cuts = new List<int>();
            for (int left = input.Length; left > 0;)
            {
                int size = random.Next(3) == 0 ? random.Next(1, 8) : random.Next(1, 700);
                cuts.Add(size);
                left -= size;
            }

            var (status, output, consumed) = Feed(unstuffer, input, cuts);
            string what = $"round {round}, limit {maxLine}, size limit {maxSize}, {input.Length} bytes";
            Assert.True(expected.Status == status, $"{what}: {status}, expected {expected.Status}");
            Assert.True(expected.Consumed == consumed, $"{what}: consumed {consumed}, expected {expected.Consumed}");
            if (status == DataStatus.BareLineEnding)
            {
                refused++;
                continue; // refused: what was decoded before the bad byte is thrown away
            }

            if (status == DataStatus.Complete)
                completed++;
            Assert.True(Text(expected.Output) == output, $"{what}: output differs");
            Assert.True(expected.LineTooLong == unstuffer.LineTooLong, $"{what}: LineTooLong {unstuffer.LineTooLong}");
            Assert.True(expected.SizeExceeded == unstuffer.SizeExceeded, $"{what}: SizeExceeded {unstuffer.SizeExceeded}");
            Assert.Equal(expected.Output.Length, unstuffer.MessageSize);
        }

        // Both kinds of ending were exercised, most rounds to their end.
        Assert.InRange(refused, 300, 1000);
        Assert.InRange(completed, 2000, 3700);
    }

    [Theory]
    [InlineData(998, 998, false)]
    [InlineData(998, 999, true)]
    [InlineData(64, 64, false)]
    [InlineData(64, 65, true)]
    public void LongPlainStretchesAreCountedExactlyAtTheLimit(int maxLine, int longLine, bool tooLong)
    {
        // Lines of plain text the fast path runs over, with one line of the given length
        // deep inside, read whole and in chunks that cut it anywhere.
        var text = new StringBuilder();
        for (int n = 0; n < 40; n++)
            text.Append(new string('p', 7 + n % 13)).Append("\r\n");
        text.Append(new string('L', longLine)).Append("\r\n");
        for (int n = 0; n < 40; n++)
            text.Append(new string('q', 5 + n % 11)).Append("\r\n");
        byte[] input = Bytes(text.Append(".\r\n").ToString());

        foreach (int chunk in new[] { input.Length, 4096, 97, 33, 32, 31 })
        {
            var unstuffer = new DotUnstuffer(maxLine);
            var (status, output, consumed) = Feed(unstuffer, input, Enumerable.Repeat(chunk, input.Length / chunk + 1));
            Assert.Equal(DataStatus.Complete, status);
            Assert.Equal(input.Length, consumed);
            Assert.Equal(Text(input)[..^3], output);
            Assert.Equal(tooLong, unstuffer.LineTooLong);
        }
    }
}
