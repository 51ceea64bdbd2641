using System.Text;

namespace NativeRelay.Message;

/// <summary>
/// One header field of an RFC 5322 message, as offsets into the buffer it was scanned from.
/// Holding offsets instead of spans keeps the struct storable (in lists, across awaits) while the
/// message bytes live in a pooled buffer; the spans are cut only when the caller has the buffer.
/// </summary>
public readonly struct HeaderField
{
    internal HeaderField(int start, int nameLength, int valueStart, int valueEnd, int end, bool isFolded)
    {
        Start = start;
        NameLength = nameLength;
        ValueStart = valueStart;
        ValueEnd = valueEnd;
        End = end;
        IsFolded = isFolded;
    }

    /// <summary>Offset of the first byte of the field name.</summary>
    public int Start { get; }

    /// <summary>Length of the name, without any obsolete white space between it and the ':'.</summary>
    public int NameLength { get; }

    /// <summary>Offset of the first byte after the ':' (leading white space kept).</summary>
    public int ValueStart { get; }

    /// <summary>
    /// Offset just past the value: End - 2 when the field ends with CRLF, End when the input ran out
    /// first (a field on the last line without a line ending has no CRLF to strip).
    /// </summary>
    public int ValueEnd { get; }

    /// <summary>Offset just past the CRLF that ends the field's last (possibly folded) line.</summary>
    public int End { get; }

    /// <summary>True if the value continues on one or more lines that start with SP or HTAB.</summary>
    public bool IsFolded { get; }

    public ReadOnlySpan<byte> Name(ReadOnlySpan<byte> message) => message.Slice(Start, NameLength);

    /// <summary>The value as sent: leading white space and folding CRLFs kept, final CRLF removed.</summary>
    public ReadOnlySpan<byte> RawValue(ReadOnlySpan<byte> message) => message[ValueStart..ValueEnd];

    /// <summary>Field names are case-insensitive (RFC 5322 1.2.2), so "RECEIVED" matches "Received".</summary>
    public bool NameEquals(ReadOnlySpan<byte> message, ReadOnlySpan<byte> asciiName) =>
        Ascii.EqualsIgnoreCase(Name(message), asciiName);
}
