using System.Buffers;
using System.Text;
using NativeRelay.Smtp;

namespace NativeRelay.Tests.Unit;

public class SmtpCommandParserTests
{
    private static (SmtpVerb Verb, string Argument) Parse(string line)
    {
        SmtpVerb verb = SmtpCommandParser.Parse(Encoding.Latin1.GetBytes(line), out ReadOnlySpan<byte> argument);
        return (verb, Encoding.Latin1.GetString(argument));
    }

    [Theory]
    [InlineData("hElO client.example", SmtpVerb.Helo, "client.example")]
    [InlineData("EhLo client.example", SmtpVerb.Ehlo, "client.example")]
    [InlineData("mAiL FROM:<a@b.example>", SmtpVerb.Mail, "FROM:<a@b.example>")]
    [InlineData("rCpT TO:<c@d.example>", SmtpVerb.Rcpt, "TO:<c@d.example>")]
    [InlineData("dAtA", SmtpVerb.Data, "")]
    [InlineData("bDaT 1000 LAST", SmtpVerb.Bdat, "1000 LAST")]
    [InlineData("RsEt", SmtpVerb.Rset, "")]
    [InlineData("nOoP ignored text", SmtpVerb.Noop, "ignored text")]
    [InlineData("qUiT", SmtpVerb.Quit, "")]
    [InlineData("VrFy user", SmtpVerb.Vrfy, "user")]
    [InlineData("eXpN list", SmtpVerb.Expn, "list")]
    [InlineData("HeLp mail", SmtpVerb.Help, "mail")]
    [InlineData("StArTtLs", SmtpVerb.StartTls, "")]
    [InlineData("aUtH PLAIN dGVzdA==", SmtpVerb.Auth, "PLAIN dGVzdA==")]
    public void RecognisesEveryVerbInMixedCase(string line, SmtpVerb expectedVerb, string expectedArgument)
    {
        var (verb, argument) = Parse(line);

        Assert.Equal(expectedVerb, verb);
        Assert.Equal(expectedArgument, argument);
    }

    [Theory]
    [InlineData("HELO", SmtpVerb.Helo)]
    [InlineData("EHLO", SmtpVerb.Ehlo)]
    [InlineData("MAIL", SmtpVerb.Mail)]
    [InlineData("RCPT", SmtpVerb.Rcpt)]
    [InlineData("DATA", SmtpVerb.Data)]
    [InlineData("BDAT", SmtpVerb.Bdat)]
    [InlineData("RSET", SmtpVerb.Rset)]
    [InlineData("NOOP", SmtpVerb.Noop)]
    [InlineData("QUIT", SmtpVerb.Quit)]
    [InlineData("VRFY", SmtpVerb.Vrfy)]
    [InlineData("EXPN", SmtpVerb.Expn)]
    [InlineData("HELP", SmtpVerb.Help)]
    [InlineData("STARTTLS", SmtpVerb.StartTls)]
    [InlineData("AUTH", SmtpVerb.Auth)]
    [InlineData("starttls", SmtpVerb.StartTls)]
    [InlineData("quit", SmtpVerb.Quit)]
    public void VerbWithoutArgumentHasEmptyArgument(string line, SmtpVerb expectedVerb)
    {
        var (verb, argument) = Parse(line);

        Assert.Equal(expectedVerb, verb);
        Assert.Equal("", argument);
    }

    [Theory]
    [InlineData("NOOP   ", SmtpVerb.Noop, "")]
    [InlineData("QUIT \t ", SmtpVerb.Quit, "")]
    [InlineData("HELO client.example  ", SmtpVerb.Helo, "client.example")]
    [InlineData("MAIL FROM:<a@b.example> SIZE=10 \t", SmtpVerb.Mail, "FROM:<a@b.example> SIZE=10")]
    [InlineData("STARTTLS ", SmtpVerb.StartTls, "")]
    public void TrailingSpacesAndTabsAreTrimmed(string line, SmtpVerb expectedVerb, string expectedArgument)
    {
        var (verb, argument) = Parse(line);

        Assert.Equal(expectedVerb, verb);
        Assert.Equal(expectedArgument, argument);
    }

    [Theory]
    [InlineData("MAILX FROM:<a@b.example>")]
    [InlineData("MAILFROM:<a@b.example>")]
    [InlineData("MAI")]
    [InlineData("XYZW")]
    [InlineData("STARTTLSX")]
    [InlineData("STARTTL")]
    [InlineData("START TLS")]
    [InlineData("HELO_ client")]
    [InlineData("XEXCH50")]
    [InlineData("M@IL FROM:<a@b.example>")] // '@' | 0x20 is '`', not 'a': the case-folding trick must not alias it
    [InlineData("[UIT")]
    [InlineData("QUI\u0014")]
    [InlineData("\u00c9HLO client")]
    public void UnknownAndGluedVerbsAreUnknown(string line)
    {
        var (verb, _) = Parse(line);

        Assert.Equal(SmtpVerb.Unknown, verb);
    }

    [Theory]
    [InlineData("")]
    [InlineData("   ")]
    [InlineData("\t")]
    public void EmptyOrBlankLineIsUnknownWithEmptyArgument(string line)
    {
        var (verb, argument) = Parse(line);

        Assert.Equal(SmtpVerb.Unknown, verb);
        Assert.Equal("", argument);
    }

    [Fact]
    public void VerbFollowedByTrailingTabIsRecognised()
    {
        Assert.Equal(SmtpVerb.Noop, Parse("NOOP\t").Verb);
    }

    [Fact]
    public void TabIsNotAVerbSeparator()
    {
        // RFC 5321 separates verb and argument with SP only; "MAIL\tFROM:..." is one unknown word.
        Assert.Equal(SmtpVerb.Unknown, Parse("MAIL\tFROM:<a@b.example>").Verb);
    }

    [Fact]
    public void ArgumentStartsAfterTheSingleSpace()
    {
        var (verb, argument) = Parse("MAIL  FROM:<a@b.example>");

        Assert.Equal(SmtpVerb.Mail, verb);
        Assert.Equal(" FROM:<a@b.example>", argument);
    }

    [Fact]
    public void UnknownVerbStillReturnsItsArgument()
    {
        var (verb, argument) = Parse("XCLIENT ADDR=192.0.2.1");

        Assert.Equal(SmtpVerb.Unknown, verb);
        Assert.Equal("ADDR=192.0.2.1", argument);
    }

    [Fact]
    public void HotPathAllocatesNothing()
    {
        // One pipelined transaction as it would sit in a pipe buffer, split so one line crosses segments.
        byte[] block = Encoding.ASCII.GetBytes(
            "MAIL FROM:<sender@example.org> SIZE=12345 BODY=8BITMIME\r\n" +
            "RCPT TO:<\"quoted rcpt\"@[IPv6:2001:db8::1]> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@example.com\r\n" +
            "RCPT TO:<@relay.example:user@example.com>\r\n" +
            "DATA\r\n");
        ReadOnlySequence<byte> sequence = CommandLineReaderTests.Segment.Create(block.AsMemory(0, 20), block.AsMemory(20, 70), block.AsMemory(90));
        byte[] scratch = new byte[CommandLineReader.MaxCommandLineLength];
        byte[] xtext = new byte[64];

        long warmChecksum = RunTransaction(sequence, scratch, xtext);
        for (int i = 0; i < 2000; i++)
        {
            RunTransaction(sequence, scratch, xtext);
        }

        long before = GC.GetAllocatedBytesForCurrentThread();
        long checksum = 0;
        for (int i = 0; i < 2000; i++)
        {
            checksum += RunTransaction(sequence, scratch, xtext);
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(0, allocated);
        Assert.Equal(warmChecksum * 2000, checksum);
        // 4 lines, 2 MAIL params + 2 + 0 RCPT params, SIZE, a decoded ORCPT: a real amount of work was done.
        Assert.True(warmChecksum > 12345);
    }

    private static long RunTransaction(ReadOnlySequence<byte> buffer, byte[] scratch, byte[] xtext)
    {
        long checksum = 0;
        while (CommandLineReader.TryReadLine(buffer, CommandLineReader.MaxCommandLineLength, scratch,
                   out ReadOnlySpan<byte> line, out SequencePosition lineEnd) == LineStatus.Found)
        {
            SmtpVerb verb = SmtpCommandParser.Parse(line, out ReadOnlySpan<byte> argument);
            checksum += (int)verb;
            ReadOnlySpan<byte> prefix = verb == SmtpVerb.Mail ? MailboxPath.MailFromPrefix : MailboxPath.RcptToPrefix;
            if (verb is SmtpVerb.Mail or SmtpVerb.Rcpt
                && MailboxPath.Parse(argument, prefix, allowUtf8: false, allowBareAddress: false,
                       out ReadOnlySpan<byte> address, out ReadOnlySpan<byte> parameters) == PathError.None)
            {
                checksum += address.Length;
                var enumerator = new EsmtpParameters(parameters);
                while (enumerator.MoveNext())
                {
                    checksum++;
                    if (EsmtpParameters.KeywordEquals(enumerator.Keyword, "SIZE"u8)
                        && EsmtpParameters.TryParseSize(enumerator.Value, out long size))
                    {
                        checksum += size;
                    }
                    else if (EsmtpParameters.KeywordEquals(enumerator.Keyword, "ORCPT"u8)
                             && EsmtpParameters.DecodeXtext(enumerator.Value, xtext, out int written) == OperationStatus.Done)
                    {
                        checksum += written;
                    }
                }
            }

            buffer = buffer.Slice(lineEnd);
        }

        return checksum;
    }
}
