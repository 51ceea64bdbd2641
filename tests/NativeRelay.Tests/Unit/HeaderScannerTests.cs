using System.Text;
using NativeRelay.Message;

namespace NativeRelay.Tests.Unit;

public class HeaderScannerTests
{
    private static byte[] Bytes(string text) => Encoding.ASCII.GetBytes(text);

    private static string Text(ReadOnlySpan<byte> bytes) => Encoding.ASCII.GetString(bytes);

    [Fact]
    public void ReadsSimpleFieldsAndFindsTheBody()
    {
        byte[] message = Bytes("From: a@example.org\r\nTo: b@example.org\r\nSubject: hi\r\n\r\nbody\r\n");
        var scanner = new HeaderScanner(message);

        Assert.True(scanner.TryReadNext(out HeaderField from));
        Assert.Equal("From", Text(from.Name(message)));
        Assert.Equal(" a@example.org", Text(from.RawValue(message)));
        Assert.Equal(0, from.Start);
        Assert.Equal(4, from.NameLength);
        Assert.Equal(5, from.ValueStart);
        Assert.Equal(21, from.End);
        Assert.False(from.IsFolded);

        Assert.True(scanner.TryReadNext(out HeaderField to));
        Assert.Equal("To", Text(to.Name(message)));
        Assert.Equal(21, to.Start);
        Assert.Equal(" b@example.org", Text(to.RawValue(message)));

        Assert.True(scanner.TryReadNext(out HeaderField subject));
        Assert.Equal("Subject", Text(subject.Name(message)));
        Assert.Equal(" hi", Text(subject.RawValue(message)));
        Assert.Equal(HeaderScanStatus.InProgress, scanner.Status);

        Assert.False(scanner.TryReadNext(out _));
        Assert.Equal(HeaderScanStatus.EndOfHeaders, scanner.Status);
        Assert.Equal(message.Length - "body\r\n".Length, scanner.BodyStart);
        Assert.Equal("body\r\n", Text(message.AsSpan(scanner.BodyStart)));

        // It stays finished.
        Assert.False(scanner.TryReadNext(out _));
        Assert.Equal(HeaderScanStatus.EndOfHeaders, scanner.Status);
    }

    [Fact]
    public void FoldedFieldKeepsItsContinuationLines()
    {
        byte[] message = Bytes("Subject: a long\r\n\tsubject\r\n  line\r\nX: y\r\n\r\n");
        var scanner = new HeaderScanner(message);

        Assert.True(scanner.TryReadNext(out HeaderField subject));
        Assert.True(subject.IsFolded);
        Assert.Equal(" a long\r\n\tsubject\r\n  line", Text(subject.RawValue(message)));
        Assert.Equal("Subject: a long\r\n\tsubject\r\n  line\r\n".Length, subject.End);

        Assert.True(scanner.TryReadNext(out HeaderField x));
        Assert.False(x.IsFolded);
        Assert.Equal("X", Text(x.Name(message)));
        Assert.Equal(" y", Text(x.RawValue(message)));

        Assert.False(scanner.TryReadNext(out _));
        Assert.Equal(HeaderScanStatus.EndOfHeaders, scanner.Status);
        Assert.Equal(message.Length, scanner.BodyStart);
    }

    [Fact]
    public void AcceptsObsoleteWhiteSpaceBeforeTheColon()
    {
        byte[] message = Bytes("Subject \t: old style\r\n\r\n");
        var scanner = new HeaderScanner(message);

        Assert.True(scanner.TryReadNext(out HeaderField field));
        Assert.Equal("Subject", Text(field.Name(message)));
        Assert.Equal(7, field.NameLength);
        Assert.Equal("Subject \t:".Length, field.ValueStart);
        Assert.Equal(" old style", Text(field.RawValue(message)));
        Assert.True(field.NameEquals(message, "subject"u8));
    }

    [Fact]
    public void EmptyValueAndFieldOfOneCharacter()
    {
        byte[] message = Bytes("X:\r\nY:z\r\n\r\n");
        var scanner = new HeaderScanner(message);

        Assert.True(scanner.TryReadNext(out HeaderField x));
        Assert.Equal(0, x.RawValue(message).Length);
        Assert.True(scanner.TryReadNext(out HeaderField y));
        Assert.Equal("z", Text(y.RawValue(message)));
        Assert.False(scanner.TryReadNext(out _));
        Assert.Equal(HeaderScanStatus.EndOfHeaders, scanner.Status);
    }

    [Fact]
    public void HeaderWithoutBlankLineHasNoBody()
    {
        byte[] message = Bytes("From: a\r\nTo: b\r\n");
        var scanner = new HeaderScanner(message);

        Assert.True(scanner.TryReadNext(out _));
        Assert.True(scanner.TryReadNext(out _));
        Assert.False(scanner.TryReadNext(out _));
        Assert.Equal(HeaderScanStatus.NoBody, scanner.Status);
        Assert.Equal(message.Length, scanner.BodyStart);
    }

    [Fact]
    public void LastFieldWithoutLineEndingIsStillReported()
    {
        byte[] message = Bytes("From: a\r\nSubject: cut");
        var scanner = new HeaderScanner(message);

        Assert.True(scanner.TryReadNext(out _));
        Assert.True(scanner.TryReadNext(out HeaderField subject));
        Assert.Equal(message.Length, subject.End);
        Assert.Equal(" cut", Text(subject.RawValue(message)));
        Assert.Equal(HeaderScanStatus.NoBody, scanner.Status);
        Assert.False(scanner.TryReadNext(out _));
        Assert.Equal(message.Length, scanner.BodyStart);
    }

    [Fact]
    public void FoldedLastFieldWithoutLineEndingIsStillReported()
    {
        byte[] message = Bytes("Subject: a\r\n b\r");
        var scanner = new HeaderScanner(message);

        Assert.True(scanner.TryReadNext(out HeaderField subject));
        Assert.True(subject.IsFolded);
        Assert.Equal(message.Length, subject.End);
        Assert.Equal(" a\r\n b", Text(subject.RawValue(message)));
        Assert.Equal(HeaderScanStatus.NoBody, scanner.Status);
    }

    [Fact]
    public void EmptyInputHasNoBody()
    {
        var scanner = new HeaderScanner(ReadOnlySpan<byte>.Empty);
        Assert.False(scanner.TryReadNext(out _));
        Assert.Equal(HeaderScanStatus.NoBody, scanner.Status);
        Assert.Equal(0, scanner.BodyStart);
    }

    [Fact]
    public void MessageWithOnlyABodyEndsAtOnce()
    {
        byte[] message = Bytes("\r\nbody");
        var scanner = new HeaderScanner(message);
        Assert.False(scanner.TryReadNext(out _));
        Assert.Equal(HeaderScanStatus.EndOfHeaders, scanner.Status);
        Assert.Equal(2, scanner.BodyStart);
    }

    [Theory]
    [InlineData("From: a\r\nthis is not a header\r\nTo: b\r\n\r\n", 9)]
    [InlineData("From: a\r\nNoColon\r\n\r\n", 9)]
    [InlineData("From: a\r\nName with space: x\r\n\r\n", 9)]
    [InlineData("From: a\r\n: empty name\r\n\r\n", 9)]
    [InlineData("From: a\r\nBad\u00e9name: x\r\n\r\n", 9)]
    [InlineData("From: a\r\nTruncatedName", 9)]
    [InlineData("From a@b Mon Jan  1 00:00:00 2026\r\nTo: b\r\n\r\n", 0)]
    public void MalformedLineEndsTheHeaderThere(string text, int offendingOffset)
    {
        byte[] message = Encoding.Latin1.GetBytes(text);
        var scanner = new HeaderScanner(message);
        int fields = 0;
        while (scanner.TryReadNext(out _))
        {
            fields++;
        }

        Assert.Equal(HeaderScanStatus.Malformed, scanner.Status);
        Assert.Equal(offendingOffset, scanner.BodyStart);
        Assert.Equal(offendingOffset == 0 ? 0 : 1, fields);
    }

    [Fact]
    public void ContinuationAtTheStartIsMalformed()
    {
        byte[] message = Bytes(" folded: nothing\r\nFrom: a\r\n\r\n");
        var scanner = new HeaderScanner(message);
        Assert.False(scanner.TryReadNext(out _));
        Assert.Equal(HeaderScanStatus.Malformed, scanner.Status);
        Assert.Equal(0, scanner.BodyStart);
    }

    [Fact]
    public void BareLineEndingsInsideAValueAreData()
    {
        byte[] message = Bytes("A: x\ny\rz\r\nB: c\r\n\r\n");
        var scanner = new HeaderScanner(message);
        Assert.True(scanner.TryReadNext(out HeaderField a));
        Assert.Equal(" x\ny\rz", Text(a.RawValue(message)));
        Assert.True(scanner.TryReadNext(out HeaderField b));
        Assert.Equal("B", Text(b.Name(message)));
    }

    [Fact]
    public void CountFieldsIgnoresCaseAndLongerNames()
    {
        byte[] message = Bytes(
            "Received: from a\r\n\tby b; Mon, 1 Dec 2026 00:00:00 +0000\r\n" +
            "Received-SPF: pass\r\n" +
            "RECEIVED: from c\r\n" +
            "received: from d\r\n" +
            "Receive: not it\r\n" +
            "X-Received: not it either\r\n" +
            "\r\n" +
            "Received: in the body does not count\r\n");

        Assert.Equal(3, HeaderScanner.CountFields(message, "Received"u8));
        Assert.Equal(3, HeaderScanner.CountFields(message, "received"u8));
        Assert.Equal(3, HeaderScanner.CountFields(message, "RECEIVED"u8));
        Assert.Equal(1, HeaderScanner.CountFields(message, "received-spf"u8));
        Assert.Equal(0, HeaderScanner.CountFields(message, "Subject"u8));
    }

    [Fact]
    public void TryFindFirstReturnsTheFirstMatch()
    {
        byte[] message = Bytes("A: 1\r\nMessage-ID: <x@y>\r\nmessage-id: <z@y>\r\n\r\n");
        Assert.True(HeaderScanner.TryFindFirst(message, "MESSAGE-ID"u8, out HeaderField field));
        Assert.Equal(" <x@y>", Text(field.RawValue(message)));
        Assert.False(HeaderScanner.TryFindFirst(message, "Subject"u8, out _));
    }

    [Fact]
    public void ThousandFieldsAreScannedWithoutAllocating()
    {
        var text = new StringBuilder();
        for (int n = 0; n < 1000; n++)
        {
            if (n % 10 == 0)
            {
                text.Append("Received: from host").Append(n).Append(".example.org\r\n\tby mx.example.com; Mon, 1 Dec 2026 00:00:00 +0000\r\n");
            }
            else
            {
                text.Append("X-Field-").Append(n).Append(": value ").Append(n).Append("\r\n");
            }
        }

        text.Append("\r\nbody\r\n");
        byte[] message = Bytes(text.ToString());

        Assert.Equal(100, HeaderScanner.CountFields(message, "received"u8));
        Assert.Equal(1000, CountAll(message));

        long before = GC.GetAllocatedBytesForCurrentThread();
        int total = 0;
        for (int round = 0; round < 20; round++)
        {
            total += HeaderScanner.CountFields(message, "received"u8);
            total += CountAll(message);
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(20 * 1100, total);
        Assert.Equal(0, allocated);
    }

    private static int CountAll(ReadOnlySpan<byte> message)
    {
        var scanner = new HeaderScanner(message);
        int count = 0;
        while (scanner.TryReadNext(out _))
        {
            count++;
        }

        return scanner.Status == HeaderScanStatus.EndOfHeaders ? count : -1;
    }
}
