using System.Buffers;

namespace NativeRelay.Message;

/// <summary>
/// Where the stuffer stands between two calls, so a message can be sent in pieces.
/// Start from <see cref="DotStuffer.NewState"/> or <c>new DotStuffState()</c>; <c>default</c> is
/// not at a line start and would miss a dot on the first line.
/// </summary>
public struct DotStuffState
{
    public DotStuffState()
    {
        AtLineStart = true;
        LastWasCr = false;
    }

    /// <summary>The next byte begins a line (true at the start of the message).</summary>
    public bool AtLineStart;

    /// <summary>The last byte written was a CR whose LF has not been seen yet.</summary>
    public bool LastWasCr;
}

/// <summary>
/// Encoder of the DATA section on the sending side (RFC 5321 4.5.2): doubles a leading dot on
/// every line and ends the data with "." CRLF.
/// </summary>
/// <remarks>
/// Any lone CR or LF in the content is sent as CRLF. RFC 5321 2.3.8 forbids sending them bare, and
/// a bare line ending passed on is exactly what SMTP smuggling needs: a next hop that reads "\n.\n"
/// as the end of data would see a second message. Normalising here means the output has a single,
/// unambiguous idea of where lines begin, and the dot-doubling follows that idea.
/// </remarks>
public static class DotStuffer
{
    private const byte Cr = (byte)'\r';
    private const byte Lf = (byte)'\n';
    private const byte Dot = (byte)'.';

    public static DotStuffState NewState() => new();

    /// <summary>Copies <paramref name="src"/> to <paramref name="dst"/>, doubling a '.' at the start of every line.</summary>
    public static void Write(ReadOnlySpan<byte> src, IBufferWriter<byte> dst, ref DotStuffState state)
    {
        ArgumentNullException.ThrowIfNull(dst);

        // Bytes from runStart on are copied as they are, in one block, when an inserted byte has
        // to go in between (or the input ends); the common message has no such byte at all.
        int runStart = 0;
        int i = 0;
        while (i < src.Length)
        {
            if (state.LastWasCr)
            {
                state.LastWasCr = false;
                state.AtLineStart = true;
                if (src[i] == Lf)
                {
                    i++;
                    continue;
                }

                // The CR already went out, so complete it to a CRLF rather than take it back.
                WriteRun(dst, src[runStart..i]);
                runStart = i;
                dst.Write("\n"u8);
                continue;
            }

            if (state.AtLineStart)
            {
                state.AtLineStart = false;
                if (src[i] == Dot)
                {
                    WriteRun(dst, src[runStart..i]);
                    runStart = i;
                    dst.Write("."u8);
                }
            }

            int stop = src[i..].IndexOfAny(Cr, Lf);
            if (stop < 0)
            {
                break;
            }

            i += stop;
            if (src[i] == Cr)
            {
                i++;
                state.LastWasCr = true;
                continue;
            }

            WriteRun(dst, src[runStart..i]);
            runStart = i;
            dst.Write("\r"u8);
            i++;
            state.AtLineStart = true;
        }

        WriteRun(dst, src[runStart..]);
    }

    // An empty write would still ask the writer for a span, and a full writer grows for it.
    private static void WriteRun(IBufferWriter<byte> dst, ReadOnlySpan<byte> run)
    {
        if (!run.IsEmpty)
        {
            dst.Write(run);
        }
    }

    /// <summary>Ends the data: completes the last line with CRLF if it has none, then writes "." CRLF.</summary>
    /// <remarks>The state is left at a line start, ready for the next message.</remarks>
    public static void WriteTerminator(IBufferWriter<byte> dst, ref DotStuffState state)
    {
        ArgumentNullException.ThrowIfNull(dst);
        if (state.LastWasCr)
        {
            dst.Write("\n.\r\n"u8);
        }
        else if (!state.AtLineStart)
        {
            dst.Write("\r\n.\r\n"u8);
        }
        else
        {
            dst.Write(".\r\n"u8);
        }

        state = NewState();
    }
}
