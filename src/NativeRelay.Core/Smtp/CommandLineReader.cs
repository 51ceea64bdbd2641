using System.Buffers;
using System.Runtime.CompilerServices;

namespace NativeRelay.Smtp;

/// <summary>Outcome of <see cref="CommandLineReader.TryReadLine"/>.</summary>
public enum LineStatus : byte
{
    /// <summary>A complete line was found; consume up to <c>lineEnd</c>.</summary>
    Found,

    /// <summary>No line end yet and the buffer is still below the limit; consume nothing, examine everything, read more.</summary>
    NeedMoreData,

    /// <summary>No line end within the limit; the caller replies 500, discards up to <c>lineEnd</c>, then
    /// skips to the next LF with <see cref="CommandLineReader.TrySkipPastLineEnd"/>.</summary>
    TooLong,
}

/// <summary>
/// Finds SMTP command lines in the bytes a connection has received so far.
/// </summary>
/// <remarks>
/// <para>A command line ends with CRLF. A bare LF is accepted too (as Postfix does): for commands it cannot smuggle
/// anything, because each command is a separate unit and the CR, if present, is simply stripped. DATA content is
/// stricter and is not read with this type.</para>
/// <para>Only one CR directly before the LF is stripped. A CR anywhere else stays in the line, where the argument
/// parsers reject it as an invalid character.</para>
/// <para>Lifetime rule for the returned line: it points either into <c>buffer</c> (line inside one segment, zero copy)
/// or into <c>scratch</c> (line spans segments). Use it before advancing the pipe reader past it and before reusing
/// <c>scratch</c>; copy whatever must outlive the command.</para>
/// </remarks>
public static class CommandLineReader
{
    /// <summary>RFC 5321 4.5.3.1.4: a command line is at most 512 octets including its CRLF.</summary>
    public const int MaxCommandLineLength = 512;

    private const byte LineFeed = (byte)'\n';
    private const byte CarriageReturn = (byte)'\r';

    /// <summary>Finds the next command line in <paramref name="buffer"/>.</summary>
    /// <param name="buffer">Received, not yet consumed bytes.</param>
    /// <param name="maxLength">Longest accepted line INCLUDING its line ending (512 for SMTP commands). The LF must be
    /// among the first <paramref name="maxLength"/> octets.</param>
    /// <param name="scratch">At least <paramref name="maxLength"/> bytes; used only when the line spans segments.</param>
    /// <param name="line">The line without CRLF / LF; empty unless <see cref="LineStatus.Found"/>.</param>
    /// <param name="lineEnd"><see cref="LineStatus.Found"/>: just after the LF.
    /// <see cref="LineStatus.TooLong"/>: just after the first <paramref name="maxLength"/> octets (all examined, none
    /// of them a LF), so the caller can discard them. <see cref="LineStatus.NeedMoreData"/>: <c>buffer.Start</c>
    /// (nothing consumed; pass <c>buffer.End</c> as "examined").</param>
    public static LineStatus TryReadLine(in ReadOnlySequence<byte> buffer, int maxLength, Span<byte> scratch,
                                         out ReadOnlySpan<byte> line, out SequencePosition lineEnd)
    {
        // A programming error, so fail loudly and always rather than only when a line happens to span segments.
        ArgumentOutOfRangeException.ThrowIfLessThan(maxLength, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(scratch.Length, maxLength, nameof(scratch));

        // Fast path: almost every command arrives whole in the first segment.
        ReadOnlySpan<byte> first = buffer.FirstSpan;
        int firstWindow = Math.Min(first.Length, maxLength);
        int lineFeed = first[..firstWindow].IndexOf(LineFeed);
        if (lineFeed >= 0)
        {
            line = StripCarriageReturn(first[..lineFeed]);
            lineEnd = buffer.GetPosition(lineFeed + 1);
            return LineStatus.Found;
        }

        if (firstWindow == maxLength)
        {
            line = default;
            lineEnd = buffer.GetPosition(maxLength);
            return LineStatus.TooLong;
        }

        if (buffer.IsSingleSegment)
        {
            line = default;
            lineEnd = buffer.Start;
            return LineStatus.NeedMoreData;
        }

        return ReadLineSpanningSegments(buffer, maxLength, scratch, out line, out lineEnd);
    }

    /// <summary>
    /// After <see cref="LineStatus.TooLong"/>: finds the LF that ends the rest of the overlong line so it can be discarded.
    /// </summary>
    /// <param name="buffer">Bytes received after the discarded part.</param>
    /// <param name="consumed">Just after the LF when found; otherwise <c>buffer.End</c> (discard all, keep skipping).</param>
    /// <returns>True when the LF was found and the next byte starts a fresh command line.</returns>
    public static bool TrySkipPastLineEnd(in ReadOnlySequence<byte> buffer, out SequencePosition consumed)
    {
        SequencePosition? lineFeed = buffer.PositionOf(LineFeed);
        if (lineFeed is { } position)
        {
            consumed = buffer.GetPosition(1, position);
            return true;
        }

        consumed = buffer.End;
        return false;
    }

    // Kept out of line so the fast path above stays small enough to inline into the session loop.
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static LineStatus ReadLineSpanningSegments(in ReadOnlySequence<byte> buffer, int maxLength, Span<byte> scratch,
                                                       out ReadOnlySpan<byte> line, out SequencePosition lineEnd)
    {
        SequencePosition next = buffer.Start;
        SequencePosition segmentStart = next;
        int scanned = 0;

        while (buffer.TryGet(ref next, out ReadOnlyMemory<byte> memory))
        {
            ReadOnlySpan<byte> segment = memory.Span;
            int window = Math.Min(segment.Length, maxLength - scanned);
            int lineFeed = segment[..window].IndexOf(LineFeed);
            if (lineFeed >= 0)
            {
                lineEnd = buffer.GetPosition(lineFeed + 1, segmentStart);
                if (scanned == 0)
                {
                    // Leading empty segments only; the line itself lies in this one segment.
                    line = StripCarriageReturn(segment[..lineFeed]);
                    return LineStatus.Found;
                }

                // scanned + lineFeed < maxLength <= scratch.Length, so both copies fit.
                buffer.Slice(buffer.Start, segmentStart).CopyTo(scratch);
                segment[..lineFeed].CopyTo(scratch[scanned..]);
                line = StripCarriageReturn(scratch[..(scanned + lineFeed)]);
                return LineStatus.Found;
            }

            scanned += window;
            if (scanned == maxLength)
            {
                line = default;
                lineEnd = buffer.GetPosition(window, segmentStart);
                return LineStatus.TooLong;
            }

            segmentStart = next;
        }

        line = default;
        lineEnd = buffer.Start;
        return LineStatus.NeedMoreData;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ReadOnlySpan<byte> StripCarriageReturn(ReadOnlySpan<byte> line) =>
        line.Length > 0 && line[^1] == CarriageReturn ? line[..^1] : line;
}
