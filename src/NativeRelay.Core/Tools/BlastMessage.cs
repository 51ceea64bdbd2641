using System.Buffers;
using System.Buffers.Text;
using System.Text;
using NativeRelay.Message;

namespace NativeRelay.Tools;

/// <summary>
/// The message <c>nativerelay blast</c> sends, built once: a valid RFC 5322 message of exactly
/// the requested size (header section included, before dot-stuffing), with a Message-ID whose
/// sequence number is the only thing that changes per message. It is kept in wire form: the
/// header section (no line of it starts with a dot, so it needs no stuffing) as a template each
/// session copies once, and the body already dot-stuffed with the ".CRLF" terminator, shared by
/// every session. Sending a message is then: 12 digits written into the session's header copy,
/// and two copies into the output pipe.
/// </summary>
public sealed class BlastMessage
{
    /// <summary>Digits of the per-message sequence number in the Message-ID.</summary>
    public const int SequenceDigits = 12;

    // Body lines: 76 characters of text before the CRLF; every 50th line starts with a dot so
    // that the receiver's un-stuffing is exercised on every message of a few KiB or more.
    private const int LineText = 76;
    private const string Filler =
        "The quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. 0123456789 ";

    private BlastMessage(byte[] header, int sequenceOffset, byte[] bodyWire, int size)
    {
        HeaderTemplate = header;
        SequenceOffset = sequenceOffset;
        BodyWire = bodyWire;
        Size = size;
    }

    /// <summary>The header section with the empty line that ends it; sequence digits all zero.</summary>
    public byte[] HeaderTemplate { get; }

    /// <summary>Where the <see cref="SequenceDigits"/> digits are in <see cref="HeaderTemplate"/>.</summary>
    public int SequenceOffset { get; }

    /// <summary>The body, dot-stuffed, followed by the "." CRLF terminator.</summary>
    public byte[] BodyWire { get; }

    /// <summary>The message size in octets as the receiver stores it (after un-stuffing), the SIZE= value.</summary>
    public int Size { get; }

    /// <summary>Octets on the wire for one message's data (stuffed body and terminator included).</summary>
    public int WireLength => HeaderTemplate.Length + BodyWire.Length;

    /// <summary>The smallest size a message with these addresses can have (its header section).</summary>
    /// (The date is one with a two-digit day, the longest form; the run ID is 8 characters.)
    public static int MinimumSize(string from, string rcpt) =>
        BuildHeader(from, rcpt, new DateTimeOffset(2000, 12, 31, 23, 59, 59, TimeSpan.Zero), "00000000", extraSubject: 0, out _).Length;

    /// <summary>Builds the message. <paramref name="runId"/> makes Message-IDs differ between runs.</summary>
    public static BlastMessage Create(int size, string from, string rcpt, DateTimeOffset date, string runId)
    {
        int headerLength = BuildHeader(from, rcpt, date, runId, 0, out _).Length;
        if (size < headerLength)
            throw new ArgumentOutOfRangeException(nameof(size), $"at least {headerLength} bytes are needed for the header section");
        int bodyLength = size - headerLength;
        int extraSubject = 0;
        if (bodyLength == 1)
        {
            // A body of one octet cannot be a line (it must end in CRLF): lengthen the subject instead.
            extraSubject = 1;
            bodyLength = 0;
        }
        var header = BuildHeader(from, rcpt, date, runId, extraSubject, out int sequenceOffset);
        var body = BuildBody(bodyLength);

        var wire = new ArrayBufferWriter<byte>(body.Length + body.Length / 40 + 8);
        var state = DotStuffer.NewState();
        DotStuffer.Write(body, wire, ref state);
        DotStuffer.WriteTerminator(wire, ref state);
        return new BlastMessage(header, sequenceOffset, wire.WrittenSpan.ToArray(), header.Length + body.Length);
    }

    /// <summary>A session's own copy of the header template, to stamp sequence numbers into.</summary>
    public byte[] NewHeaderCopy() => (byte[])HeaderTemplate.Clone();

    /// <summary>Writes <paramref name="sequence"/> (zero-padded, wrapping past 10^12) into a header copy.</summary>
    public void Stamp(Span<byte> header, long sequence)
    {
        Utf8Formatter.TryFormat(sequence % 1_000_000_000_000L, header.Slice(SequenceOffset, SequenceDigits),
            out _, new StandardFormat('D', SequenceDigits));
    }

    /// <summary>The whole unstuffed message for one sequence number (tests and --save checks).</summary>
    public byte[] ToMessage(long sequence)
    {
        var header = NewHeaderCopy();
        Stamp(header, sequence);
        var body = BuildBody(Size - header.Length);
        return [.. header, .. body];
    }

    private static byte[] BuildHeader(string from, string rcpt, DateTimeOffset date, string runId, int extraSubject, out int sequenceOffset)
    {
        Span<byte> dateBytes = stackalloc byte[Rfc5322Date.MaxLength];
        int dateLength = Rfc5322Date.Write(date, dateBytes);
        string domain = from[(from.LastIndexOf('@') + 1)..];
        var sb = new StringBuilder(320);
        sb.Append("Date: ").Append(Encoding.ASCII.GetString(dateBytes[..dateLength])).Append("\r\n");
        sb.Append("From: NativeRelay blast <").Append(from).Append(">\r\n");
        sb.Append("To: <").Append(rcpt).Append(">\r\n");
        sb.Append("Subject: nativerelay blast test message").Append('!', extraSubject).Append("\r\n");
        sb.Append("Message-ID: <blast.").Append(runId).Append('.');
        sequenceOffset = sb.Length;
        sb.Append('0', SequenceDigits).Append('@').Append(domain).Append(">\r\n");
        sb.Append("MIME-Version: 1.0\r\n");
        sb.Append("Content-Type: text/plain; charset=us-ascii\r\n");
        sb.Append("X-Mailer: nativerelay blast\r\n");
        sb.Append("\r\n");
        return Encoding.ASCII.GetBytes(sb.ToString());
    }

    // Exactly `length` octets of CRLF-ended lines (length is 0 or at least 2).
    private static byte[] BuildBody(int length)
    {
        var body = new byte[length];
        int offset = 0;
        int line = 0;
        while (offset < length)
        {
            int remaining = length - offset;
            int lineLength = Math.Min(LineText + 2, remaining);
            if (remaining - lineLength == 1)
                lineLength--; // never leave a single octet for the last line
            int text = lineLength - 2;
            for (int i = 0; i < text; i++)
                body[offset + i] = (byte)Filler[(line * 7 + i) % Filler.Length];
            if (text > 0 && line % 50 == 1)
                body[offset] = (byte)'.';
            body[offset + text] = (byte)'\r';
            body[offset + text + 1] = (byte)'\n';
            offset += lineLength;
            line++;
        }
        return body;
    }
}
