using System.Buffers;
using System.Text;
using NativeRelay.Message;

namespace NativeRelay.Tests.Unit;

public class DotStufferTests
{
    private static byte[] Bytes(string text) => Encoding.ASCII.GetBytes(text);

    private static string Text(ReadOnlySpan<byte> bytes) => Encoding.ASCII.GetString(bytes);

    private static string Stuff(params string[] pieces)
    {
        var output = new ArrayBufferWriter<byte>();
        DotStuffState state = DotStuffer.NewState();
        foreach (string piece in pieces)
        {
            DotStuffer.Write(Bytes(piece), output, ref state);
        }

        DotStuffer.WriteTerminator(output, ref state);
        return Text(output.WrittenSpan);
    }

    [Fact]
    public void DoublesTheDotAtTheStartOfEveryLine()
    {
        Assert.Equal(
            "..first\r\na.b\r\n..b\r\n...\r\n..\r\nx.\r\n.\r\n",
            Stuff(".first\r\na.b\r\n.b\r\n..\r\n.\r\nx.\r\n"));
    }

    [Fact]
    public void LineStartIsRememberedAcrossCalls()
    {
        Assert.Equal("a\r\n..b\r\n..\r\n.\r\n", Stuff("a\r", "\n", ".b\r\n", ".", "\r\n"));
        Assert.Equal("..\r\n.\r\n", Stuff("", ".", "", "\r", "\n"));
    }

    [Fact]
    public void TerminatorAfterCrlf()
    {
        Assert.Equal("a\r\n.\r\n", Stuff("a\r\n"));
    }

    [Fact]
    public void TerminatorCompletesAnUnfinishedLine()
    {
        Assert.Equal("a\r\n.\r\n", Stuff("a"));
        Assert.Equal("a\r\n.\r\n", Stuff("a\r"));
        Assert.Equal("..\r\n.\r\n", Stuff("."));
    }

    [Fact]
    public void EmptyMessageIsJustTheTerminator()
    {
        Assert.Equal(".\r\n", Stuff());
        Assert.Equal(".\r\n", Stuff(""));
    }

    [Fact]
    public void BareLineEndingsAreSentAsCrlf()
    {
        Assert.Equal("a\r\nb\r\n.\r\n", Stuff("a\nb\r\n"));
        Assert.Equal("a\r\nb\r\n.\r\n", Stuff("a\rb\r\n"));
        Assert.Equal("a\r\n\r\nb\r\n.\r\n", Stuff("a\r\rb\r\n"));
        Assert.Equal("a\r\nb\r\n.\r\n", Stuff("a\r", "b\r\n"));

        // The classic smuggling payload goes out as a harmless stuffed line.
        Assert.Equal("x\r\n..\r\ny\r\n.\r\n", Stuff("x\n.\ny\r\n"));
        Assert.Equal("x\r\n..\r\ny\r\n.\r\n", Stuff("x\r\n.\ry\r\n"));
    }

    [Fact]
    public void TerminatorLeavesTheStateReadyForTheNextMessage()
    {
        var output = new ArrayBufferWriter<byte>();
        DotStuffState state = DotStuffer.NewState();
        DotStuffer.Write(Bytes("a"), output, ref state);
        DotStuffer.WriteTerminator(output, ref state);
        DotStuffer.Write(Bytes(".b\r\n"), output, ref state);
        DotStuffer.WriteTerminator(output, ref state);
        Assert.Equal("a\r\n.\r\n..b\r\n.\r\n", Text(output.WrittenSpan));
    }

    [Fact]
    public void NewStateStartsAtALineStart()
    {
        Assert.True(DotStuffer.NewState().AtLineStart);
        Assert.False(DotStuffer.NewState().LastWasCr);
        Assert.True(new DotStuffState().AtLineStart);
    }

    [Fact]
    public void RoundTripThroughTheUnstufferInRandomChunks()
    {
        var random = new Random(20261123);
        var unstuffer = new DotUnstuffer(maxLineLength: 100_000, maxMessageSize: long.MaxValue);

        for (int round = 0; round < 400; round++)
        {
            byte[] message = RandomMessage(random);

            var stuffed = new ArrayBufferWriter<byte>();
            DotStuffState state = DotStuffer.NewState();
            foreach (ReadOnlyMemory<byte> piece in RandomChunks(random, message))
            {
                DotStuffer.Write(piece.Span, stuffed, ref state);
            }

            DotStuffer.WriteTerminator(stuffed, ref state);
            byte[] wire = stuffed.WrittenSpan.ToArray();

            unstuffer.Reset();
            var unstuffed = new ArrayBufferWriter<byte>();
            int offset = 0;
            DataStatus status = DataStatus.NeedMoreData;
            foreach (ReadOnlyMemory<byte> piece in RandomChunks(random, wire))
            {
                status = unstuffer.Process(piece.Span, unstuffed, out int consumed);
                offset += consumed;
                if (status != DataStatus.NeedMoreData)
                {
                    break;
                }
            }

            Assert.Equal(DataStatus.Complete, status);
            Assert.Equal(wire.Length, offset);
            Assert.True(message.AsSpan().SequenceEqual(unstuffed.WrittenSpan), $"round {round} differs");
            Assert.False(unstuffer.LineTooLong);
        }
    }

    [Fact]
    public void SteadyStateStuffingAllocatesNothing()
    {
        var text = new StringBuilder();
        for (int n = 0; n < 1500; n++)
        {
            text.Append(n % 5 == 0 ? ".a line that needs a second dot\r\n" : "an ordinary line of body text\r\n");
        }

        byte[] message = Bytes(text.ToString());
        var output = new ArrayBufferWriter<byte>(message.Length * 2);

        int StuffOnce()
        {
            output.ResetWrittenCount();
            DotStuffState state = DotStuffer.NewState();
            for (int offset = 0; offset < message.Length; offset += 4096)
            {
                DotStuffer.Write(message.AsSpan(offset, Math.Min(4096, message.Length - offset)), output, ref state);
            }

            DotStuffer.WriteTerminator(output, ref state);
            return output.WrittenCount;
        }

        int expected = StuffOnce();
        StuffOnce();
        long before = GC.GetAllocatedBytesForCurrentThread();
        int same = 0;
        for (int round = 0; round < 20; round++)
        {
            same += StuffOnce() == expected ? 1 : 0;
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(20, same);
        Assert.Equal(0, allocated);
        Assert.Equal(message.Length + 300 + 3, expected);
    }

    private static byte[] RandomMessage(Random random)
    {
        var message = new List<byte>();
        int lines = random.Next(0, 40);
        for (int n = 0; n < lines; n++)
        {
            switch (random.Next(8))
            {
                case 0:
                    break;
                case 1:
                    message.Add((byte)'.');
                    break;
                case 2:
                    message.AddRange(".."u8.ToArray());
                    break;
                case 3:
                    message.Add((byte)'.');
                    AddText(random, message, random.Next(0, 80));
                    break;
                case 4:
                    AddText(random, message, random.Next(900, 3000));
                    break;
                default:
                    AddText(random, message, random.Next(0, 80));
                    break;
            }

            message.Add((byte)'\r');
            message.Add((byte)'\n');
        }

        return message.ToArray();
    }

    private static void AddText(Random random, List<byte> message, int length)
    {
        for (int n = 0; n < length; n++)
        {
            // Dots are frequent so they land at chunk edges and line ends; the rest is any
            // byte that is not a line ending, 8-bit included.
            int pick = random.Next(256);
            byte b = pick < 40 ? (byte)'.' : (byte)pick;
            message.Add(b is (byte)'\r' or (byte)'\n' ? (byte)'x' : b);
        }
    }

    private static IEnumerable<ReadOnlyMemory<byte>> RandomChunks(Random random, byte[] data)
    {
        int offset = 0;
        while (offset < data.Length)
        {
            int length = Math.Min(data.Length - offset, random.Next(3) == 0 ? random.Next(1, 4) : random.Next(1, 700));
            yield return data.AsMemory(offset, length);
            offset += length;
        }

        // An empty chunk at the end must be harmless.
        yield return ReadOnlyMemory<byte>.Empty;
    }

    // A byte at a time, the rules and nothing else: what the vectorised skip of plain stretches
    // must agree with, whatever the input and wherever it is cut.
    private static string StuffByteWise(byte[] input)
    {
        var output = new StringBuilder();
        bool atLineStart = true, lastWasCr = false;
        foreach (byte b in input)
        {
            if (lastWasCr)
            {
                lastWasCr = false;
                atLineStart = true;
                output.Append('\n');
                if (b == (byte)'\n')
                {
                    continue;
                }
            }

            if (atLineStart)
            {
                atLineStart = false;
                if (b == (byte)'.')
                {
                    output.Append('.');
                }
            }

            if (b == (byte)'\r')
            {
                output.Append('\r');
                lastWasCr = true;
            }
            else if (b == (byte)'\n')
            {
                output.Append("\r\n");
                atLineStart = true;
            }
            else
            {
                output.Append((char)b);
            }
        }

        output.Append(lastWasCr ? "\n.\r\n" : atLineStart ? ".\r\n" : "\r\n.\r\n");
        return output.ToString();
    }

    [Fact]
    public void AgreesWithTheByteWiseRulesOnRandomInputCutAnywhere()
    {
        // Mostly plain CRLF lines (the vectorised path's case) with dots, lone CRs and lone LFs
        // sprinkled at every position relative to the 16- and 32-byte steps, in random pieces.
        var random = new Random(29);
        byte[] rare = Bytes(".\r\n");
        for (int round = 0; round < 3000; round++)
        {
            int length = random.Next(0, 400);
            var input = new byte[length];
            double oddness = random.NextDouble() * 0.2;
            for (int i = 0; i < length; i++)
            {
                input[i] = random.NextDouble() < oddness ? rare[random.Next(rare.Length)] : (byte)('a' + random.Next(3));
                if (input[i] == (byte)'a' && random.Next(40) == 0 && i + 1 < length)
                {
                    input[i] = (byte)'\r';
                    input[++i] = (byte)'\n';
                }
            }

            var pieces = new List<string>();
            for (int at = 0; at < length;)
            {
                int take = Math.Min(length - at, random.Next(1, 120));
                pieces.Add(Text(input.AsSpan(at, take)));
                at += take;
            }

            Assert.Equal(StuffByteWise(input), Stuff(pieces.ToArray()));
        }
    }

    [Fact]
    public void ALongPlainMessageIsCopiedAsItIsAndDotsPastTheVectorStepsAreDoubled()
    {
        string line = new string('x', 77) + "\r\n";
        string plain = string.Concat(Enumerable.Repeat(line, 40));
        Assert.Equal(plain + ".\r\n", Stuff(plain));
        // A dot line, a lone LF and a lone CR deep into the message, each after many plain lines.
        Assert.Equal(plain + "..x\r\n" + plain + "a\r\nb\r\nc\r\n" + plain + ".\r\n",
            Stuff(plain + ".x\r\n" + plain + "a\nb\rc\r\n" + plain));
    }

    [Theory]
    [InlineData("", 0)]
    [InlineData("a", 0)]
    [InlineData("ab", 1)]
    [InlineData("a\r\nb", 3)]
    [InlineData("a\rb", 1)]
    [InlineData("ab\nc", 1)]
    [InlineData("a\r\n.b", 2)]
    public void PlainLengthStopsAtTheFirstPairThatNeedsWork(string input, int expected)
    {
        Assert.Equal(expected, DotStuffer.PlainLength(Bytes(input)));
    }
}
