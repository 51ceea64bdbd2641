using System.Globalization;
using System.Text;
using NativeRelay.Message;

namespace NativeRelay.Tests.Unit;

public class ReceivedHeaderTests
{
    private static readonly DateTimeOffset FixedTime = new(2026, 11, 23, 6, 55, 1, TimeSpan.Zero);

    private static string Text(ReadOnlySpan<byte> bytes) => Encoding.Latin1.GetString(bytes);

    private static string Write(in ReceivedTrace trace)
    {
        Span<byte> buffer = stackalloc byte[ReceivedHeader.MaxLength];
        int written = ReceivedHeader.Write(trace, buffer);
        return Text(buffer[..written]);
    }

    private static ReceivedTrace Ipv4Trace() => new()
    {
        HeloName = "mail.example.org"u8,
        ClientAddress = "192.0.2.1"u8,
        ClientHostName = "mail.example.org"u8,
        ByHostName = "mx.example.com"u8,
        Protocol = "ESMTP"u8,
        QueueId = "4Fq2Xk1Zz9"u8,
        Timestamp = FixedTime,
    };

    [Fact]
    public void Ipv4ClientWithoutRecipientOrTls()
    {
        Assert.Equal(
            "Received: from mail.example.org (mail.example.org [192.0.2.1])\r\n" +
            "\tby mx.example.com (NativeRelay) with ESMTP id 4Fq2Xk1Zz9; Mon, 23 Nov 2026 06:55:01 +0000\r\n",
            Write(Ipv4Trace()));
    }

    [Fact]
    public void Ipv4ClientWithRecipient()
    {
        ReceivedTrace trace = Ipv4Trace();
        trace.ForRecipient = "bob@example.com"u8;
        Assert.Equal(
            "Received: from mail.example.org (mail.example.org [192.0.2.1])\r\n" +
            "\tby mx.example.com (NativeRelay) with ESMTP id 4Fq2Xk1Zz9\r\n" +
            "\tfor <bob@example.com>; Mon, 23 Nov 2026 06:55:01 +0000\r\n",
            Write(trace));
    }

    [Fact]
    public void Ipv6ClientWithoutReverseNameWithTlsAndRecipient()
    {
        var trace = new ReceivedTrace
        {
            HeloName = "client.example.net"u8,
            ClientAddress = "2001:db8::1"u8,
            ByHostName = "mx.example.com"u8,
            Protocol = "ESMTPS"u8,
            QueueId = "ABC123"u8,
            ForRecipient = "<bob@example.com>"u8,
            TlsDescription = "using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384"u8,
            Timestamp = FixedTime,
        };
        Assert.Equal(
            "Received: from client.example.net (unknown [IPv6:2001:db8::1])\r\n" +
            "\tby mx.example.com (NativeRelay) with ESMTPS id ABC123\r\n" +
            "\t(using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n" +
            "\tfor <bob@example.com>; Mon, 23 Nov 2026 06:55:01 +0000\r\n",
            Write(trace));
    }

    [Fact]
    public void Ipv6LoopbackWithTlsOnly()
    {
        var trace = new ReceivedTrace
        {
            HeloName = "[IPv6:::1]"u8,
            ClientAddress = "::1"u8,
            ClientHostName = "localhost"u8,
            ByHostName = "mx.example.com"u8,
            Protocol = "ESMTPSA"u8,
            QueueId = "Q1"u8,
            TlsDescription = "version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384"u8,
            Timestamp = new DateTimeOffset(2026, 12, 1, 23, 5, 9, TimeSpan.FromHours(-5)),
        };
        Assert.Equal(
            "Received: from [IPv6:::1] (localhost [IPv6:::1])\r\n" +
            "\tby mx.example.com (NativeRelay) with ESMTPSA id Q1\r\n" +
            "\t(version=TLSv1.3 cipher=TLS_AES_256_GCM_SHA384); Tue, 1 Dec 2026 23:05:09 -0500\r\n",
            Write(trace));
    }

    [Fact]
    public void HeloCannotInjectALineOrCloseTheComment()
    {
        ReceivedTrace trace = Ipv4Trace();
        trace.HeloName = "evil\r\nX-Injected: yes"u8;
        trace.ClientHostName = "host(a)\\b\n"u8;
        trace.ForRecipient = "bob@example.com>\r\nBcc: <x"u8;

        string header = Write(trace);

        Assert.StartsWith("Received: from evil??X-Injected:?yes (host?a??b? [192.0.2.1])\r\n", header);
        Assert.Contains("\tfor <bob@example.com???Bcc: ?x>;", header);
        Assert.DoesNotContain("\r\nX-Injected", header);
        Assert.DoesNotContain("\r\nBcc", header);
        AssertIsOneWellFormedField(Encoding.Latin1.GetBytes(header));
    }

    [Fact]
    public void NonAsciiHeloIsReplacedButUtf8RecipientIsKept()
    {
        ReceivedTrace trace = Ipv4Trace();
        trace.HeloName = "h\u00e9llo"u8;
        trace.ForRecipient = "j\u00f6rg@example.de"u8;

        byte[] expectedRecipient = Encoding.UTF8.GetBytes("for <j\u00f6rg@example.de>");
        Span<byte> buffer = stackalloc byte[ReceivedHeader.MaxLength];
        ReadOnlySpan<byte> header = buffer[..ReceivedHeader.Write(trace, buffer)];

        Assert.StartsWith("Received: from h??llo (", Text(header));
        Assert.True(header.IndexOf(expectedRecipient) > 0);
    }

    [Fact]
    public void EmptyOptionalPartsAreLeftOut()
    {
        var trace = new ReceivedTrace { ClientAddress = "192.0.2.7"u8, Timestamp = FixedTime };
        Assert.Equal(
            "Received: from unknown (unknown [192.0.2.7])\r\n" +
            "\tby localhost (NativeRelay); Mon, 23 Nov 2026 06:55:01 +0000\r\n",
            Write(trace));
    }

    [Fact]
    public void WorstCaseFitsMaxLengthAndKeepsLinesShort()
    {
        byte[] Junk(int length) => Enumerable.Range(0, length).Select(n => (byte)(n % 7 == 0 ? '\n' : 'a' + n % 26)).ToArray();

        var trace = new ReceivedTrace
        {
            HeloName = Junk(5000),
            ClientAddress = Enumerable.Repeat((byte)':', 5000).ToArray(),
            ClientHostName = Junk(5000),
            ByHostName = Junk(5000),
            Protocol = Junk(5000),
            QueueId = Junk(5000),
            ForRecipient = Junk(5000),
            TlsDescription = Junk(5000),
            Timestamp = new DateTimeOffset(9999, 12, 31, 23, 59, 59, TimeSpan.FromHours(14)),
        };

        byte[] buffer = new byte[ReceivedHeader.MaxLength];
        int written = ReceivedHeader.Write(trace, buffer);
        Assert.Equal(1977, written);
        Assert.True(written <= ReceivedHeader.MaxLength);

        string header = Text(buffer.AsSpan(0, written));
        foreach (string line in header.Split("\r\n"))
        {
            Assert.True(line.Length <= 998, $"line of {line.Length} octets");
        }

        Assert.Contains("Received: from " + Text(Junk(ReceivedHeader.MaxHeloLength)).Replace('\n', '?') + "\r\n\t(", header);
        AssertIsOneWellFormedField(buffer.AsSpan(0, written));
    }

    [Fact]
    public void TooSmallDestinationThrows()
    {
        byte[] small = new byte[40];
        Assert.Throws<ArgumentException>(() => ReceivedHeader.Write(Ipv4Trace(), small));
    }

    [Fact]
    public void ExactlySizedDestinationIsEnough()
    {
        ReceivedTrace trace = Ipv4Trace();
        trace.Timestamp = new DateTimeOffset(2026, 12, 1, 0, 0, 0, TimeSpan.Zero);
        int length = Write(trace).Length;
        byte[] exact = new byte[length];
        Assert.Equal(length, ReceivedHeader.Write(trace, exact));
    }

    [Fact]
    public void WritingAllocatesNothing()
    {
        byte[] buffer = new byte[ReceivedHeader.MaxLength];
        ReceivedTrace trace = Ipv4Trace();
        trace.ForRecipient = "bob@example.com"u8;
        trace.TlsDescription = "using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384"u8;
        trace.HeloName = "bad\r\nhelo"u8;
        int expected = ReceivedHeader.Write(trace, buffer);

        long before = GC.GetAllocatedBytesForCurrentThread();
        int total = 0;
        for (int round = 0; round < 100; round++)
        {
            total += ReceivedHeader.Write(trace, buffer);
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(100 * expected, total);
        Assert.Equal(0, allocated);
    }

    [Theory]
    [InlineData(2026, 11, 23, 6, 55, 1, 0, "Mon, 23 Nov 2026 06:55:01 +0000")]
    [InlineData(2026, 12, 1, 0, 0, 0, 0, "Tue, 1 Dec 2026 00:00:00 +0000")]
    [InlineData(2024, 2, 29, 23, 59, 59, -300, "Thu, 29 Feb 2024 23:59:59 -0500")]
    [InlineData(2025, 1, 9, 12, 30, 0, 330, "Thu, 9 Jan 2025 12:30:00 +0530")]
    [InlineData(2025, 6, 15, 8, 7, 6, -570, "Sun, 15 Jun 2025 08:07:06 -0930")]
    [InlineData(9999, 12, 31, 23, 59, 59, 840, "Fri, 31 Dec 9999 23:59:59 +1400")]
    public void DateIsWrittenInRfc5322Form(int year, int month, int day, int hour, int minute, int second, int offsetMinutes, string expected)
    {
        var timestamp = new DateTimeOffset(year, month, day, hour, minute, second, TimeSpan.FromMinutes(offsetMinutes));
        Span<byte> buffer = stackalloc byte[Rfc5322Date.MaxLength];
        int written = Rfc5322Date.Write(timestamp, buffer);
        Assert.Equal(expected, Text(buffer[..written]));
    }

    [Fact]
    public void DateAgreesWithTheFrameworkFormatterOverManyDays()
    {
        var random = new Random(5322);
        Span<byte> buffer = stackalloc byte[Rfc5322Date.MaxLength];
        for (int n = 0; n < 2000; n++)
        {
            var timestamp = new DateTimeOffset(
                new DateTime(1900, 1, 1).AddSeconds(random.NextInt64(0, 200L * 365 * 86400)),
                TimeSpan.FromMinutes(random.Next(-14 * 60, 14 * 60 + 1)));
            string offset = timestamp.ToString("zzz", CultureInfo.InvariantCulture).Replace(":", "");
            string expected = timestamp.ToString("ddd, d MMM yyyy HH:mm:ss ", CultureInfo.InvariantCulture) + offset;

            int written = Rfc5322Date.Write(timestamp, buffer);
            Assert.Equal(expected, Text(buffer[..written]));
        }
    }

    [Fact]
    public void DateNeedsRoomForItself()
    {
        byte[] small = new byte[29];
        Assert.Throws<ArgumentException>(() => Rfc5322Date.Write(FixedTime, small));
        Assert.Equal(30, Rfc5322Date.Write(new DateTimeOffset(2026, 12, 1, 0, 0, 0, TimeSpan.Zero), new byte[30]));
    }

    private static void AssertIsOneWellFormedField(ReadOnlySpan<byte> header)
    {
        byte[] message = [.. header, .. "\r\nbody"u8];
        var scanner = new HeaderScanner(message);
        Assert.True(scanner.TryReadNext(out HeaderField field));
        Assert.True(field.NameEquals(message, "received"u8));
        Assert.True(field.IsFolded);
        Assert.Equal(header.Length, field.End);
        Assert.False(scanner.TryReadNext(out _));
        Assert.Equal(HeaderScanStatus.EndOfHeaders, scanner.Status);
        Assert.Equal(-1, header.IndexOfAnyExcept(AllowedHeaderBytes(header)));
    }

    // Bytes a field may hold besides printable ASCII: SP, the folding TAB, and the CRLF pairs.
    private static ReadOnlySpan<byte> AllowedHeaderBytes(ReadOnlySpan<byte> header)
    {
        var allowed = new List<byte> { (byte)' ', (byte)'\t', (byte)'\r', (byte)'\n' };
        for (int b = 33; b <= 126; b++)
        {
            allowed.Add((byte)b);
        }

        Assert.Equal(header.Count("\r\n"u8), header.Count((byte)'\r'));
        Assert.Equal(header.Count("\r\n"u8), header.Count((byte)'\n'));
        return allowed.ToArray();
    }
}
