using System.Buffers;

namespace NativeRelay.Message;

public enum HeaderScanStatus
{
    /// <summary>More fields may follow.</summary>
    InProgress,

    /// <summary>The blank line that separates header and body was found.</summary>
    EndOfHeaders,

    /// <summary>The input ended at a field boundary (or inside the last field) without a blank line.</summary>
    NoBody,

    /// <summary>A line is neither a field nor a continuation; from there on it is body.</summary>
    Malformed,
}

/// <summary>
/// Zero-copy scanner of an RFC 5322 header section (2.2, with 3.2.2 folding). It walks the
/// buffer once, hands back offsets, and never allocates, so the relay can look at every header
/// of every message (loop detection, trace insertion) without a per-message cost that grows.
/// </summary>
/// <remarks>
/// CRLF is the only line ending: a lone CR or LF inside a line is part of the value. The DATA
/// decoder already refuses bare line endings, so by the time a message gets here there are none,
/// and treating them as data keeps offsets consistent with what will be relayed.
/// </remarks>
public ref struct HeaderScanner
{
    private const byte Cr = (byte)'\r';
    private const byte Lf = (byte)'\n';
    private const byte Space = (byte)' ';
    private const byte Tab = (byte)'\t';
    private const byte Colon = (byte)':';

    // ftext = %d33-57 / %d59-126 (RFC 5322 3.6.8): printable ASCII without ':'.
    private static readonly SearchValues<byte> FieldNameBytes = SearchValues.Create(
        "!\"#$%&'()*+,-./0123456789;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"u8);

    private readonly ReadOnlySpan<byte> _message;
    private int _position;

    public HeaderScanner(ReadOnlySpan<byte> message)
    {
        _message = message;
        _position = 0;
        Status = HeaderScanStatus.InProgress;
        BodyStart = 0;
    }

    public HeaderScanStatus Status { get; private set; }

    /// <summary>
    /// Where the body begins. EndOfHeaders: just after the blank line. NoBody: the message length.
    /// Malformed: the offending line (the relay passes it on untouched as body).
    /// Meaningless while Status is InProgress.
    /// </summary>
    public int BodyStart { get; private set; }

    /// <summary>
    /// Reads the next field. Returns false once the header section has ended or cannot go on;
    /// Status and BodyStart then say why and where. A field cut off by the end of input is still
    /// returned (with Status already NoBody), so nothing the client sent is hidden from the caller.
    /// </summary>
    public bool TryReadNext(out HeaderField field)
    {
        field = default;
        if (Status != HeaderScanStatus.InProgress)
        {
            return false;
        }

        ReadOnlySpan<byte> message = _message;
        int lineStart = _position;
        if (lineStart >= message.Length)
        {
            return Stop(HeaderScanStatus.NoBody, message.Length);
        }

        byte first = message[lineStart];
        if (first == Cr && lineStart + 1 < message.Length && message[lineStart + 1] == Lf)
        {
            return Stop(HeaderScanStatus.EndOfHeaders, lineStart + 2);
        }

        // A continuation here has no field to belong to: only the very first line can get here
        // with one, because continuations are consumed together with their field.
        int nameLength = message[lineStart..].IndexOfAnyExcept(FieldNameBytes);
        if (nameLength <= 0)
        {
            return Stop(HeaderScanStatus.Malformed, lineStart);
        }

        int afterName = lineStart + nameLength;
        int colon = afterName;
        if (message[colon] != Colon)
        {
            // RFC 5322 4.5.3 (obs-optional) allows WSP between name and ':'; old mailers send it.
            int skipped = message[colon..].IndexOfAnyExcept(Space, Tab);
            if (skipped < 0 || message[colon + skipped] != Colon)
            {
                return Stop(HeaderScanStatus.Malformed, lineStart);
            }

            colon += skipped;
        }

        int valueStart = colon + 1;
        int scan = valueStart;
        bool isFolded = false;
        while (true)
        {
            int lineEnd = message[scan..].IndexOf("\r\n"u8);
            if (lineEnd < 0)
            {
                // A lone CR at the very end is the first half of a line ending the input cut off.
                int valueEnd = message[^1] == Cr ? message.Length - 1 : message.Length;

                field = new HeaderField(lineStart, nameLength, valueStart, valueEnd, message.Length, isFolded);
                _position = message.Length;
                Status = HeaderScanStatus.NoBody;
                BodyStart = message.Length;
                return true;
            }

            int next = scan + lineEnd + 2;
            if (next < message.Length && (message[next] == Space || message[next] == Tab))
            {
                isFolded = true;
                scan = next;
                continue;
            }

            field = new HeaderField(lineStart, nameLength, valueStart, next - 2, next, isFolded);
            _position = next;
            return true;
        }
    }

    /// <summary>Counts fields named <paramref name="asciiName"/> (case-insensitive), e.g. "Received" for loop detection.</summary>
    public static int CountFields(ReadOnlySpan<byte> message, ReadOnlySpan<byte> asciiName)
    {
        var scanner = new HeaderScanner(message);
        int count = 0;
        while (scanner.TryReadNext(out HeaderField field))
        {
            if (field.NameEquals(message, asciiName))
            {
                count++;
            }
        }

        return count;
    }

    /// <summary>Finds the first field named <paramref name="asciiName"/> (case-insensitive).</summary>
    public static bool TryFindFirst(ReadOnlySpan<byte> message, ReadOnlySpan<byte> asciiName, out HeaderField field)
    {
        var scanner = new HeaderScanner(message);
        while (scanner.TryReadNext(out field))
        {
            if (field.NameEquals(message, asciiName))
            {
                return true;
            }
        }

        field = default;
        return false;
    }

    private bool Stop(HeaderScanStatus status, int bodyStart)
    {
        Status = status;
        BodyStart = bodyStart;
        _position = bodyStart;
        return false;
    }
}
