using System.Buffers;
using System.Buffers.Text;
using System.Text;
using NativeRelay.Smtp;

namespace NativeRelay.Tools;

/// <summary>Outcome of <see cref="SmtpReplyParser.TryRead"/>.</summary>
public enum ReplyStatus : byte
{
    /// <summary>No complete reply yet; nothing consumed.</summary>
    NeedMoreData,

    /// <summary>One whole reply (all its lines) was consumed.</summary>
    Complete,

    /// <summary>A line that is not "ddd", "ddd text" or "ddd-text", or a reply line longer than the limit.</summary>
    Malformed,
}

/// <summary>
/// Reads SMTP replies (RFC 5321 4.2) on the client side from received bytes, in place: one call
/// consumes one complete reply, possibly of several lines, and returns its code. Used by the load
/// generator, which reads many pipelined replies per write and must not allocate per reply.
/// </summary>
public static class SmtpReplyParser
{
    /// <summary>Longest reply line accepted (RFC 5321 4.5.3.1.5 says 512 octets with CRLF).</summary>
    public const int MaxLineLength = 2048;

    /// <summary>
    /// Consumes one complete reply from <paramref name="buffer"/> (which then starts after it).
    /// <paramref name="text"/> is the last line's text after the code and separator: it points
    /// into <paramref name="buffer"/> or <paramref name="scratch"/> (at least
    /// <see cref="MaxLineLength"/> octets, used when a line spans segments), so use it before
    /// either changes. When <paramref name="capabilities"/> is non-null, every line's keyword of
    /// a 250 reply is added to it (the EHLO reply).
    /// </summary>
    public static ReplyStatus TryRead(ref ReadOnlySequence<byte> buffer, Span<byte> scratch, out int code,
        out ReadOnlySpan<byte> text, ref SmtpCapabilities capabilities, bool parseCapabilities = false)
    {
        code = 0;
        text = default;
        var rest = buffer;
        while (true)
        {
            ReadOnlySpan<byte> line;
            SequencePosition next;
            var first = rest.FirstSpan;
            int lf = first.IndexOf((byte)'\n');
            if (lf >= 0)
            {
                line = first[..lf];
                next = rest.GetPosition(lf + 1);
            }
            else
            {
                if (rest.IsSingleSegment)
                    return rest.Length > MaxLineLength ? ReplyStatus.Malformed : ReplyStatus.NeedMoreData;
                var position = rest.PositionOf((byte)'\n');
                if (position is null)
                    return rest.Length > MaxLineLength ? ReplyStatus.Malformed : ReplyStatus.NeedMoreData;
                var lineSequence = rest.Slice(0, position.Value);
                if (lineSequence.Length > scratch.Length)
                    return ReplyStatus.Malformed;
                lineSequence.CopyTo(scratch);
                line = scratch[..(int)lineSequence.Length];
                next = rest.GetPosition(1, position.Value);
            }
            if (!line.IsEmpty && line[^1] == '\r')
                line = line[..^1];
            if (line.Length > MaxLineLength || line.Length < 3
                || !Utf8Parser.TryParse(line[..3], out int lineCode, out int used) || used != 3 || lineCode < 100)
                return ReplyStatus.Malformed;
            bool last = line.Length == 3 || line[3] == ' ';
            if (!last && line[3] != '-')
                return ReplyStatus.Malformed;
            var lineText = line.Length > 4 ? line[4..] : default;
            if (parseCapabilities && lineCode == 250)
                capabilities |= Capability(lineText);
            rest = rest.Slice(next);
            if (last)
            {
                code = lineCode;
                text = lineText;
                buffer = rest;
                return ReplyStatus.Complete;
            }
        }
    }

    /// <summary>The capability an EHLO reply line names (its first word), or None.</summary>
    public static SmtpCapabilities Capability(ReadOnlySpan<byte> line)
    {
        int space = line.IndexOf((byte)' ');
        var keyword = space < 0 ? line : line[..space];
        if (Ascii.EqualsIgnoreCase(keyword, "PIPELINING"u8)) return SmtpCapabilities.Pipelining;
        if (Ascii.EqualsIgnoreCase(keyword, "8BITMIME"u8)) return SmtpCapabilities.EightBitMime;
        if (Ascii.EqualsIgnoreCase(keyword, "SIZE"u8)) return SmtpCapabilities.Size;
        if (Ascii.EqualsIgnoreCase(keyword, "SMTPUTF8"u8)) return SmtpCapabilities.SmtpUtf8;
        if (Ascii.EqualsIgnoreCase(keyword, "CHUNKING"u8)) return SmtpCapabilities.Chunking;
        if (Ascii.EqualsIgnoreCase(keyword, "STARTTLS"u8)) return SmtpCapabilities.StartTls;
        if (Ascii.EqualsIgnoreCase(keyword, "ENHANCEDSTATUSCODES"u8)) return SmtpCapabilities.EnhancedStatusCodes;
        if (Ascii.EqualsIgnoreCase(keyword, "DSN"u8)) return SmtpCapabilities.Dsn;
        return SmtpCapabilities.None;
    }
}
