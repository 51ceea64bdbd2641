using System.Buffers;
using System.Text;
using BenchmarkDotNet.Attributes;
using NativeRelay.Message;

namespace NativeRelay.Benchmarks;

/// <summary>
/// The per-message work of the Message stage: header scan (loop detection), DATA decoding and
/// encoding, and the trace field. Buffers are made once so that only the codec is measured and
/// any allocation MemoryDiagnoser reports is the codec's own.
/// </summary>
[MemoryDiagnoser]
public class MessageBenchmarks
{
    private byte[] _header = [];
    private byte[] _message1K = [];
    private byte[] _message100K = [];
    private byte[] _stuffed1K = [];
    private byte[] _stuffed100K = [];
    private readonly ArrayBufferWriter<byte> _output = new(256 * 1024);
    private readonly DotUnstuffer _unstuffer = new();
    private readonly byte[] _traceBuffer = new byte[ReceivedHeader.MaxLength];

    [GlobalSetup]
    public void Setup()
    {
        _header = Encoding.ASCII.GetBytes(RealisticHeader() + "\r\n");
        _message1K = MakeMessage(1024);
        _message100K = MakeMessage(100 * 1024);
        _stuffed1K = Stuff(_message1K);
        _stuffed100K = Stuff(_message100K);
    }

    [Benchmark]
    public int ScanHeaderCountReceived() => HeaderScanner.CountFields(_header, "Received"u8);

    [Benchmark]
    public long Unstuff1K() => Unstuff(_stuffed1K);

    [Benchmark]
    public long Unstuff100K() => Unstuff(_stuffed100K);

    [Benchmark]
    public int Stuff1K() => StuffInto(_message1K);

    [Benchmark]
    public int Stuff100K() => StuffInto(_message100K);

    [Benchmark]
    public int WriteReceivedHeader()
    {
        var trace = new ReceivedTrace
        {
            HeloName = "mail.example.org"u8,
            ClientAddress = "2001:db8::25"u8,
            ClientHostName = "mail.example.org"u8,
            ByHostName = "mx1.example.com"u8,
            Protocol = "ESMTPS"u8,
            QueueId = "4Fq2Xk1Zz9"u8,
            ForRecipient = "bob@example.com"u8,
            TlsDescription = "using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384"u8,
            Timestamp = new DateTimeOffset(2026, 11, 23, 6, 55, 1, TimeSpan.Zero),
        };
        return ReceivedHeader.Write(trace, _traceBuffer);
    }

    // Fed as a socket would deliver it, in 16 KiB reads.
    private long Unstuff(byte[] wire)
    {
        _output.ResetWrittenCount();
        _unstuffer.Reset();
        int offset = 0;
        DataStatus status;
        do
        {
            int length = Math.Min(16 * 1024, wire.Length - offset);
            status = _unstuffer.Process(wire.AsSpan(offset, length), _output, out int consumed);
            offset += consumed;
        }
        while (status == DataStatus.NeedMoreData && offset < wire.Length);

        return _unstuffer.MessageSize;
    }

    private int StuffInto(byte[] message)
    {
        _output.ResetWrittenCount();
        DotStuffState state = DotStuffer.NewState();
        DotStuffer.Write(message, _output, ref state);
        DotStuffer.WriteTerminator(_output, ref state);
        return _output.WrittenCount;
    }

    private static byte[] Stuff(byte[] message)
    {
        var output = new ArrayBufferWriter<byte>();
        DotStuffState state = DotStuffer.NewState();
        DotStuffer.Write(message, output, ref state);
        DotStuffer.WriteTerminator(output, ref state);
        return output.WrittenSpan.ToArray();
    }

    private static string RealisticHeader() =>
        "Return-Path: <alice@example.org>\r\n" +
        "Delivered-To: bob@example.com\r\n" +
        "Received: from mx2.example.net (mx2.example.net [198.51.100.7])\r\n\tby mx1.example.com (NativeRelay) with ESMTPS id 4Fq2Xk1Zz9\r\n\tfor <bob@example.com>; Mon, 23 Nov 2026 06:55:01 +0000\r\n" +
        "Received: from relay.example.org (relay.example.org [203.0.113.9])\r\n\tby mx2.example.net (Postfix) with ESMTPS id 7A1B2C3D4E; Mon, 23 Nov 2026 06:55:00 +0000\r\n" +
        "Received: from [192.168.1.20] (unknown [192.0.2.44])\r\n\tby relay.example.org (Postfix) with ESMTPSA id 11AA22BB33; Mon, 23 Nov 2026 06:54:58 +0000\r\n" +
        "Received-SPF: pass (example.org: 203.0.113.9 is authorized) client-ip=203.0.113.9\r\n" +
        "Authentication-Results: mx1.example.com; dkim=pass header.d=example.org; spf=pass smtp.mailfrom=example.org; dmarc=pass\r\n" +
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=example.org; s=sel1;\r\n\tt=1795416898; bh=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=;\r\n\th=From:To:Subject:Date:Message-ID;\r\n\tb=dGhpcyBpcyBub3QgYSByZWFsIHNpZ25hdHVyZSwganVzdCBmaWxsZXIgdGV4dA==\r\n" +
        "Message-ID: <20261123065458.12345@example.org>\r\n" +
        "Date: Mon, 23 Nov 2026 07:54:58 +0100\r\n" +
        "From: Alice <alice@example.org>\r\n" +
        "To: Bob <bob@example.com>\r\n" +
        "Cc: Carol <carol@example.com>\r\n" +
        "Subject: Quarterly figures and the meeting on Thursday\r\n" +
        "MIME-Version: 1.0\r\n" +
        "Content-Type: multipart/alternative;\r\n\tboundary=\"b1_0123456789abcdef\"\r\n" +
        "Content-Language: en-US\r\n" +
        "User-Agent: ExampleMail/1.2\r\n" +
        "X-Mailer: ExampleMail 1.2\r\n" +
        "List-Unsubscribe: <mailto:unsubscribe@example.org>\r\n" +
        "X-Spam-Score: -0.1\r\n";

    // Body lines of typical length; every 40th starts with a dot so the stuffing path is exercised.
    private static byte[] MakeMessage(int size)
    {
        var text = new StringBuilder(RealisticHeader()).Append("\r\n");
        for (int line = 0; text.Length < size; line++)
        {
            text.Append(line % 40 == 0 ? ".a line that starts with a dot and must be stuffed\r\n" : "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n");
        }

        return Encoding.ASCII.GetBytes(text.ToString());
    }
}
