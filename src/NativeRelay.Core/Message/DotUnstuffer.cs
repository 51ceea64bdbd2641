using System.Buffers;

namespace NativeRelay.Message;

public enum DataStatus
{
    /// <summary>All input was consumed; the terminator has not been seen yet.</summary>
    NeedMoreData,

    /// <summary>CRLF "." CRLF was found; check LineTooLong and SizeExceeded before accepting.</summary>
    Complete,

    /// <summary>A CR without LF or an LF without CR: the message must be refused (SMTP smuggling).</summary>
    BareLineEnding,
}

/// <summary>
/// Incremental decoder of the DATA section (RFC 5321 4.5.2) on the receiving side: removes the
/// stuffed leading dot of each line and finds the end of the data, for input that arrives in
/// chunks split anywhere.
/// </summary>
/// <remarks>
/// Only CRLF "." CRLF ends the data. Every other spelling of a line ending is refused instead of
/// being read leniently, because a relay that reads "\n.\n" or "\r\n.\r" as the end while the next
/// hop does not (or the other way round) lets a sender smuggle a second message past the checks
/// of the first. The decoder never looks back into an earlier chunk: everything it must remember
/// (a dot at line start, a CR at the end of a chunk) is kept in <see cref="_position"/>.
/// </remarks>
public sealed class DotUnstuffer
{
    private const byte Cr = (byte)'\r';
    private const byte Lf = (byte)'\n';
    private const byte Dot = (byte)'.';

    private enum Position : byte
    {
        LineStart,
        AfterLeadingDot,
        InLine,
        AfterCr,
        AfterTerminatorCr,
        Completed,
        Rejected,
    }

    private Position _position;
    private long _lineLength;
    private int _maxLineLength;
    private long _maxMessageSize;

    public DotUnstuffer(int maxLineLength = 998, long maxMessageSize = 25 * 1024 * 1024)
    {
        MaxLineLength = maxLineLength;
        MaxMessageSize = maxMessageSize;
    }

    /// <summary>Longest allowed line in octets, CRLF excluded, counted after unstuffing (RFC 5322 2.1.1 says 998).</summary>
    public int MaxLineLength
    {
        get => _maxLineLength;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            _maxLineLength = value;
        }
    }

    /// <summary>Most bytes ever written to the output for one message.</summary>
    public long MaxMessageSize
    {
        get => _maxMessageSize;
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            _maxMessageSize = value;
        }
    }

    /// <summary>Bytes written to the output so far, after unstuffing; never more than MaxMessageSize.</summary>
    public long MessageSize { get; private set; }

    /// <summary>Some line was longer than MaxLineLength. The data is still read to its end.</summary>
    public bool LineTooLong { get; private set; }

    /// <summary>The message is larger than MaxMessageSize; output stopped there, input is still read to the end.</summary>
    public bool SizeExceeded { get; private set; }

    /// <summary>Makes the decoder ready for the next message; the limits are kept.</summary>
    public void Reset()
    {
        _position = Position.LineStart;
        _lineLength = 0;
        MessageSize = 0;
        LineTooLong = false;
        SizeExceeded = false;
    }

    /// <summary>
    /// Decodes the next chunk of DATA input into <paramref name="output"/>.
    /// <paramref name="consumed"/> is: for NeedMoreData, all of <paramref name="input"/>; for
    /// Complete, the bytes up to and including the LF of the terminator, so the caller can go on
    /// with pipelined commands right after it; for BareLineEnding, the offset of the byte that
    /// showed the line ending to be bare (the lone LF itself, or the byte after a lone CR).
    /// Once Complete or BareLineEnding was returned, later calls return the same with consumed 0
    /// until <see cref="Reset"/>.
    /// </summary>
    public DataStatus Process(ReadOnlySpan<byte> input, IBufferWriter<byte> output, out int consumed)
    {
        ArgumentNullException.ThrowIfNull(output);
        if (_position == Position.Completed)
        {
            consumed = 0;
            return DataStatus.Complete;
        }

        if (_position == Position.Rejected)
        {
            consumed = 0;
            return DataStatus.BareLineEnding;
        }

        // Bytes from runStart to the current offset are message content not yet written: copying
        // them in one block when a dot has to be dropped (or the chunk ends) is what keeps the
        // common case to one memcpy per chunk.
        int runStart = 0;
        int i = 0;
        while (i < input.Length)
        {
            switch (_position)
            {
                case Position.LineStart:
                    if (input[i] == Dot)
                    {
                        Emit(input[runStart..i], output);
                        i++;
                        runStart = i;
                        _position = Position.AfterLeadingDot;
                    }
                    else
                    {
                        _position = Position.InLine;
                    }

                    break;

                case Position.AfterLeadingDot:
                    if (input[i] == Cr)
                    {
                        // This CR is either part of the terminator or a bare CR that gets the
                        // message refused; in neither case is it content, so it leaves the run.
                        i++;
                        runStart = i;
                        _position = Position.AfterTerminatorCr;
                    }
                    else
                    {
                        _position = Position.InLine;
                    }

                    break;

                case Position.AfterTerminatorCr:
                    if (input[i] != Lf)
                    {
                        return Reject(i, out consumed);
                    }

                    consumed = i + 1;
                    _position = Position.Completed;
                    return DataStatus.Complete;

                case Position.InLine:
                    if (!ScanLines(input, ref i))
                    {
                        return Reject(i, out consumed);
                    }

                    break;

                case Position.AfterCr:
                    if (input[i] != Lf)
                    {
                        return Reject(i, out consumed);
                    }

                    i++;
                    _lineLength = 0;
                    _position = Position.LineStart;
                    break;
            }
        }

        Emit(input[runStart..], output);
        consumed = input.Length;
        return DataStatus.NeedMoreData;
    }

    /// <summary>
    /// The fast path: runs over whole lines in one go while the byte after each CRLF is known and
    /// is not a dot. Stops at the end of input, at a line ending split by the chunk boundary,
    /// or before a line that starts with a dot. Returns false at a bare LF (i then points at it).
    /// </summary>
    private bool ScanLines(ReadOnlySpan<byte> input, ref int i)
    {
        while (true)
        {
            int stop = input[i..].IndexOfAny(Cr, Lf);
            if (stop < 0)
            {
                CountLineBytes(input.Length - i);
                i = input.Length;
                return true;
            }

            CountLineBytes(stop);
            i += stop;
            if (input[i] == Lf)
            {
                return false;
            }

            if (i + 2 < input.Length && input[i + 1] == Lf && input[i + 2] != Dot)
            {
                i += 2;
                _lineLength = 0;
                continue;
            }

            i++;
            _position = Position.AfterCr;
            return true;
        }
    }

    private void CountLineBytes(int count)
    {
        _lineLength += count;
        if (_lineLength > _maxLineLength)
        {
            LineTooLong = true;
        }
    }

    private void Emit(ReadOnlySpan<byte> content, IBufferWriter<byte> output)
    {
        if (content.IsEmpty || SizeExceeded)
        {
            return;
        }

        long room = _maxMessageSize - MessageSize;
        if (content.Length > room)
        {
            // Keep what fits so MessageSize reports exactly the limit; the caller refuses the
            // message anyway, but must not be made to buffer an unbounded amount first.
            content = content[..(int)room];
            SizeExceeded = true;
        }

        if (!content.IsEmpty)
        {
            output.Write(content);
            MessageSize += content.Length;
        }
    }

    private DataStatus Reject(int offset, out int consumed)
    {
        consumed = offset;
        _position = Position.Rejected;
        return DataStatus.BareLineEnding;
    }
}
