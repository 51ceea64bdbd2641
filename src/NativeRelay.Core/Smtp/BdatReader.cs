using System.Buffers;

namespace NativeRelay.Smtp;

/// <summary>
/// Reads the chunks of one BDAT message (RFC 3030) into the message buffer: each chunk is taken
/// by its exact byte count, with no dot-unstuffing and no look for a terminator, so nothing a
/// chunk holds is ever read as a command. The content rules are those of DATA: CRLF is the only
/// line ending (a bare CR or LF gets the message refused, so it can never be relayed on to a
/// lenient next hop as a smuggled end of data), lines are at most <see cref="MaxLineLength"/>,
/// and the message at most <see cref="MaxMessageSize"/>. Once a rule is broken the rest of the
/// chunk is still consumed (its length is known) but no longer stored.
/// </summary>
/// <remarks>
/// State that spans chunks and reads (a CR at the end of one chunk, the length of the current
/// line) is kept in fields, so chunks may be split anywhere by TCP.
/// </remarks>
internal sealed class BdatReader
{
    private const byte Cr = (byte)'\r';
    private const byte Lf = (byte)'\n';

    private bool _afterCr;
    private long _lineLength;

    public BdatReader(int maxLineLength, long maxMessageSize)
    {
        MaxLineLength = maxLineLength;
        MaxMessageSize = maxMessageSize;
    }

    public int MaxLineLength { get; }
    public long MaxMessageSize { get; }

    /// <summary>Bytes of the current chunk not read yet.</summary>
    public long ChunkRemaining { get; private set; }

    /// <summary>Size of the current chunk as the client declared it.</summary>
    public long ChunkSize { get; private set; }

    /// <summary>The current chunk is the last one (BDAT n LAST).</summary>
    public bool IsLast { get; private set; }

    /// <summary>Bytes stored so far.</summary>
    public long MessageSize { get; private set; }

    /// <summary>Bytes declared by all chunks so far.</summary>
    public long DeclaredSize { get; private set; }

    public bool SizeExceeded { get; private set; }
    public bool LineTooLong { get; private set; }
    public bool BareLineEnding { get; private set; }

    /// <summary>Some rule was broken: the message will be refused.</summary>
    public bool Failed => SizeExceeded || LineTooLong || BareLineEnding;

    /// <summary>True when the content so far is empty or ends with CRLF.</summary>
    public bool AtLineStart => !_afterCr && _lineLength == 0;

    public void StartMessage()
    {
        _afterCr = false;
        _lineLength = 0;
        MessageSize = 0;
        DeclaredSize = 0;
        ChunkRemaining = 0;
        ChunkSize = 0;
        IsLast = false;
        SizeExceeded = false;
        LineTooLong = false;
        BareLineEnding = false;
    }

    public void StartChunk(long size, bool last)
    {
        ChunkSize = size;
        ChunkRemaining = size;
        IsLast = last;
        DeclaredSize += size;
        // Known to overflow before a byte arrives: refuse now, store nothing more.
        if (DeclaredSize > MaxMessageSize)
            SizeExceeded = true;
    }

    /// <summary>Consumes up to <see cref="ChunkRemaining"/> bytes of <paramref name="input"/>; returns how many.</summary>
    public int Consume(ReadOnlySpan<byte> input, IBufferWriter<byte> output)
    {
        int take = (int)Math.Min(input.Length, ChunkRemaining);
        var chunk = input[..take];
        ChunkRemaining -= take;
        if (Failed)
            return take;
        Check(chunk);
        if (Failed)
            return take;
        long room = MaxMessageSize - MessageSize;
        if (chunk.Length > room)
        {
            SizeExceeded = true;
            return take;
        }
        output.Write(chunk);
        MessageSize += chunk.Length;
        return take;
    }

    /// <summary>
    /// At BDAT LAST: a message whose last line has no CRLF gets one (as it will when sent on with
    /// DATA); a lone CR at the very end is a bare CR.
    /// </summary>
    public void FinishMessage(IBufferWriter<byte> output)
    {
        if (Failed || AtLineStart)
            return;
        if (_afterCr)
        {
            BareLineEnding = true;
            return;
        }
        if (MessageSize + 2 > MaxMessageSize)
        {
            SizeExceeded = true;
            return;
        }
        output.Write("\r\n"u8);
        MessageSize += 2;
        _lineLength = 0;
    }

    private void Check(ReadOnlySpan<byte> chunk)
    {
        int i = 0;
        while (i < chunk.Length)
        {
            if (_afterCr)
            {
                if (chunk[i] != Lf)
                {
                    BareLineEnding = true;
                    return;
                }
                _afterCr = false;
                _lineLength = 0;
                i++;
                continue;
            }
            int stop = chunk[i..].IndexOfAny(Cr, Lf);
            if (stop < 0)
            {
                CountLine(chunk.Length - i);
                return;
            }
            CountLine(stop);
            i += stop;
            if (chunk[i] == Lf)
            {
                BareLineEnding = true;
                return;
            }
            _afterCr = true;
            i++;
        }
    }

    private void CountLine(int count)
    {
        _lineLength += count;
        if (_lineLength > MaxLineLength)
            LineTooLong = true;
    }
}
