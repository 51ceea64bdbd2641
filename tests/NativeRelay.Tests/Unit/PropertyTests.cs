using System.Buffers;
using CsCheck;
using NativeRelay.Message;
using NativeRelay.Smtp;
using NativeRelay.Spool;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// Property-based tests (CsCheck) of the codecs: generated inputs, shrunk to a small counterexample
/// on failure. Iterations are bounded so the whole class runs in seconds under `make test`; a
/// failure prints CsCheck's seed, which replays it (Sample(..., seed: "...")).
/// </summary>
public class PropertyTests
{
    private const int Iterations = 2000;

    /// <summary>Bytes that matter to line-oriented codecs, mixed with any byte.</summary>
    private static readonly Gen<byte> LineByte = Gen.Frequency(
        (3, Gen.Const((byte)'\r')), (3, Gen.Const((byte)'\n')), (3, Gen.Const((byte)'.')),
        (3, Gen.Const((byte)'a')), (4, Gen.Byte));

    private static readonly Gen<byte[]> Content = LineByte.Array[0, 400];

    /// <summary>Piece sizes for splitting a buffer (used cyclically).</summary>
    private static readonly Gen<int[]> Splits = Gen.Int[1, 40].Array[1, 8];

    private static IEnumerable<ReadOnlyMemory<byte>> Pieces(ReadOnlyMemory<byte> data, int[] sizes)
    {
        for (int at = 0, k = 0; at < data.Length; k++)
        {
            int n = Math.Min(sizes[k % sizes.Length], data.Length - at);
            yield return data.Slice(at, n);
            at += n;
        }
    }

    // ---- dot-stuffing ------------------------------------------------------------------------

    /// <summary>What the stuffer promises to send for any content: every lone CR, lone LF or CRLF as CRLF, a last line closed.</summary>
    private static byte[] NormalizedLines(byte[] content)
    {
        var result = new List<byte>(content.Length + 2);
        for (int i = 0; i < content.Length; i++)
        {
            byte b = content[i];
            if (b == '\r')
            {
                result.Add((byte)'\r');
                result.Add((byte)'\n');
                if (i + 1 < content.Length && content[i + 1] == '\n')
                    i++;
            }
            else if (b == '\n')
            {
                result.Add((byte)'\r');
                result.Add((byte)'\n');
            }
            else
                result.Add(b);
        }
        if (result.Count > 0 && result[^1] != '\n')
        {
            result.Add((byte)'\r');
            result.Add((byte)'\n');
        }
        return result.ToArray();
    }

    private static byte[] Stuff(byte[] content, int[] splits)
    {
        var output = new ArrayBufferWriter<byte>();
        var state = DotStuffer.NewState();
        foreach (var piece in Pieces(content, splits))
            DotStuffer.Write(piece.Span, output, ref state);
        DotStuffer.WriteTerminator(output, ref state);
        return output.WrittenSpan.ToArray();
    }

    [Fact]
    public void Dot_stuffing_then_unstuffing_gives_back_any_content_with_its_lines_closed()
    {
        Gen.Select(Content, Splits, Splits).Sample((content, stuffSplits, unstuffSplits) =>
        {
            byte[] wire = Stuff(content, stuffSplits);
            var unstuffer = new DotUnstuffer(maxLineLength: 1 << 20, maxMessageSize: 1 << 24);
            var output = new ArrayBufferWriter<byte>();
            int total = 0;
            var status = DataStatus.NeedMoreData;
            foreach (var piece in Pieces(wire, unstuffSplits))
            {
                Assert.Equal(DataStatus.NeedMoreData, status);   // nothing may come after the terminator
                status = unstuffer.Process(piece.Span, output, out int consumed);
                total += consumed;
            }
            Assert.Equal(DataStatus.Complete, status);
            Assert.Equal(wire.Length, total);
            Assert.False(unstuffer.LineTooLong);
            Assert.False(unstuffer.SizeExceeded);
            Assert.Equal(NormalizedLines(content), output.WrittenSpan.ToArray());
        }, iter: Iterations);
    }

    [Fact]
    public void Unstuffing_any_bytes_in_any_split_gives_one_answer()
    {
        Gen.Select(Content, Splits).Sample((wire, splits) =>
        {
            var (status, consumed, output) = Unstuff(wire, [wire.Length == 0 ? 1 : wire.Length]);
            var (status2, consumed2, output2) = Unstuff(wire, splits);
            Assert.Equal(status, status2);
            Assert.Equal(consumed, consumed2);
            if (status == DataStatus.Complete)
                Assert.Equal(output, output2);
        }, iter: Iterations);

        static (DataStatus, int, byte[]) Unstuff(byte[] wire, int[] splits)
        {
            var unstuffer = new DotUnstuffer(maxLineLength: 64, maxMessageSize: 1 << 20);
            var output = new ArrayBufferWriter<byte>();
            int total = 0;
            foreach (var piece in Pieces(wire, splits))
            {
                var status = unstuffer.Process(piece.Span, output, out int consumed);
                total += consumed;
                if (status != DataStatus.NeedMoreData)
                    return (status, total, output.WrittenSpan.ToArray());
            }
            return (DataStatus.NeedMoreData, total, output.WrittenSpan.ToArray());
        }
    }

    // ---- BDAT --------------------------------------------------------------------------------

    private sealed record BdatOutcome(bool Failed, bool SizeExceeded, bool LineTooLong, bool BareLineEnding, byte[] Message);

    private static BdatOutcome Bdat(byte[] message, int[] chunkSizes, int[] readSizes)
    {
        var reader = new BdatReader(maxLineLength: 50, maxMessageSize: 300);
        var output = new ArrayBufferWriter<byte>();
        reader.StartMessage();
        var chunks = Pieces(message, chunkSizes).ToList();
        if (chunks.Count == 0)
            chunks.Add(ReadOnlyMemory<byte>.Empty);   // BDAT 0 LAST
        for (int c = 0; c < chunks.Count; c++)
        {
            reader.StartChunk(chunks[c].Length, last: c == chunks.Count - 1);
            foreach (var read in Pieces(chunks[c], readSizes))
                Assert.Equal(read.Length, reader.Consume(read.Span, output));
            Assert.Equal(0, reader.ChunkRemaining);
        }
        reader.FinishMessage(output);
        return new BdatOutcome(reader.Failed, reader.SizeExceeded, reader.LineTooLong, reader.BareLineEnding, output.WrittenSpan.ToArray());
    }

    [Fact]
    public void Bdat_chunking_of_any_split_gives_the_same_message()
    {
        Gen.Select(LineByte.Array[0, 360], Splits, Splits).Sample((message, chunkSizes, readSizes) =>
        {
            var whole = Bdat(message, [Math.Max(message.Length, 1)], [Math.Max(message.Length, 1)]);
            var split = Bdat(message, chunkSizes, readSizes);
            Assert.Equal(whole.Failed, split.Failed);
            if (!whole.Failed)
                Assert.Equal(whole.Message, split.Message);
            // Within the size limit the first fault found is the same wherever the chunks end
            // (over it, one chunk is refused before a byte is read, split ones after some were).
            if (message.Length <= 300)
                Assert.Equal((whole.SizeExceeded, whole.LineTooLong, whole.BareLineEnding),
                             (split.SizeExceeded, split.LineTooLong, split.BareLineEnding));
        }, iter: Iterations);
    }

    // ---- header scanner ----------------------------------------------------------------------

    private static readonly string[] HeaderPieces =
    [
            "From", "X-Tag", "Subject", "a", ":", ": ", " ", "\t", "\r\n", "\r", "\n", "\r\n ", "\r\n\t",
            "\r\n\r\n", "value", "v:w", "\u00e9", "\u0001", "\u007f", "\r\n\r"];

    private static readonly Gen<byte[]> HeaderText = Gen.Int[0, HeaderPieces.Length - 1].Select(i => HeaderPieces[i])
        .Array[0, 30]
        .Select(parts => System.Text.Encoding.UTF8.GetBytes(string.Concat(parts)));

    private sealed record RefField(int Start, int NameLength, int ValueStart, int ValueEnd, int End, bool IsFolded);

    /// <summary>A slow reference reading of RFC 5322 2.2 (fields, 3.2.2 folding, CRLF-only line ends, 4.5.3 WSP before ':').</summary>
    private static (List<RefField> Fields, HeaderScanStatus Status, int BodyStart) Reference(byte[] m)
    {
        var fields = new List<RefField>();
        int p = 0;
        while (true)
        {
            if (p == m.Length)
                return (fields, HeaderScanStatus.NoBody, m.Length);
            if (p + 1 < m.Length && m[p] == '\r' && m[p + 1] == '\n')
                return (fields, HeaderScanStatus.EndOfHeaders, p + 2);
            int n = p;
            while (n < m.Length && m[n] >= 33 && m[n] <= 126 && m[n] != ':')
                n++;
            int colon = n;
            while (colon < m.Length && (m[colon] == ' ' || m[colon] == '\t'))
                colon++;
            if (n == p || colon == m.Length || m[colon] != ':')
                return (fields, HeaderScanStatus.Malformed, p);
            // The field runs to the first CRLF not followed by SP or HTAB.
            bool folded = false;
            int end = -1;
            for (int i = colon + 1; i + 1 < m.Length; i++)
            {
                if (m[i] != '\r' || m[i + 1] != '\n')
                    continue;
                if (i + 2 < m.Length && (m[i + 2] == ' ' || m[i + 2] == '\t'))
                {
                    folded = true;
                    continue;
                }
                end = i + 2;
                break;
            }
            if (end < 0)
            {
                int valueEnd = m[^1] == '\r' ? m.Length - 1 : m.Length;
                fields.Add(new RefField(p, n - p, colon + 1, valueEnd, m.Length, folded));
                return (fields, HeaderScanStatus.NoBody, m.Length);
            }
            fields.Add(new RefField(p, n - p, colon + 1, end - 2, end, folded));
            p = end;
        }
    }

    [Fact]
    public void Header_scanner_agrees_with_a_slow_reference_parser()
    {
        HeaderText.Sample(message =>
        {
            var (expected, status, bodyStart) = Reference(message);
            var scanner = new HeaderScanner(message);
            var actual = new List<RefField>();
            while (scanner.TryReadNext(out var f))
                actual.Add(new RefField(f.Start, f.NameLength, f.ValueStart, f.ValueEnd, f.End, f.IsFolded));
            Assert.Equal(expected, actual);
            Assert.Equal(status, scanner.Status);
            Assert.Equal(bodyStart, scanner.BodyStart);
        }, iter: Iterations);
    }

    // ---- spool records -----------------------------------------------------------------------

    private static readonly Gen<string> Text = Gen.Char["abcXYZ019.-:[]@ \u00e9\u65e5"].Array[0, 40].Select(c => new string(c));
    private static readonly Gen<byte[]> Address = Gen.Byte.Array[0, 60];
    private static readonly Gen<byte[]?> OptionalBytes = Gen.Frequency((1, Gen.Const((byte[]?)null)), (2, Gen.Byte.Array[1, 40].Select(b => (byte[]?)b)));
    private static readonly Gen<string?> OptionalText = Gen.Frequency((1, Gen.Const((string?)null)), (2, Text.Where(t => t.Length > 0).Select(t => (string?)t)));

    private static readonly Gen<Envelope> Envelopes =
        from recipients in Address.Array[1, 12]
        from sender in Address
        from client in Text
        from helo in Text
        from arrival in Gen.Long
        from flags in Gen.UInt[0, 63]
        from envId in OptionalBytes
        from user in OptionalText
        from withNotify in Gen.Bool
        from notify in Gen.Byte[0, 15].Array[recipients.Length]
        from withOrcpt in Gen.Bool
        from orcpt in OptionalBytes.Array[recipients.Length]
        from notBefore in Gen.OneOf(Gen.Const(0L), Gen.Long)
        from metadata in OptionalBytes
        from pool in OptionalText
        select new Envelope
        {
            Sender = sender, Recipients = recipients, ClientAddress = client, HeloName = helo,
            ArrivalUnixMs = arrival, Flags = (EnvelopeFlags)flags, EnvelopeId = envId, AuthenticatedUser = user,
            Notify = withNotify ? notify.Select(b => (DsnNotify)b).ToArray() : null,
            OriginalRecipients = withOrcpt ? orcpt : null,
            NotBeforeUnixMs = notBefore, Metadata = metadata, Pool = pool,
        };

    [Fact]
    public void Spool_head_record_encoder_and_decoder_round_trip_any_envelope()
    {
        Gen.Select(Envelopes, Gen.Byte.Array[0, 300], Gen.Long.Array[0, 5], Gen.ULong).Sample((envelope, body, chunks, id) =>
        {
            var buffer = MessageBuffer.Rent();
            try
            {
                buffer.Write(body);
                var entry = new MessageHeadEntry();
                entry.ChunkAddresses.AddRange(chunks);
                int inlineOffset = body.Length / 3;
                entry.Prepare(id, envelope, buffer, inlineOffset);
                var record = new byte[entry.SerializedLength];
                entry.SerializeTo(record);

                var head = MessageHead.TryParse(record);
                Assert.NotNull(head);
                Assert.Equal(id, head.Id);
                Assert.Equal(body.Length, head.TotalLength);
                Assert.Equal(chunks, head.ChunkAddresses);
                Assert.Equal(body.AsSpan(inlineOffset).ToArray(), record.AsSpan(head.InlineOffset, head.InlineLength).ToArray());
                var e = head.Envelope;
                Assert.Equal(envelope.Sender, e.Sender);
                Assert.Equal(envelope.Recipients, e.Recipients);
                Assert.Equal(envelope.ClientAddress, e.ClientAddress);
                Assert.Equal(envelope.HeloName, e.HeloName);
                Assert.Equal(envelope.ArrivalUnixMs, e.ArrivalUnixMs);
                Assert.Equal(envelope.Flags, e.Flags);
                Assert.Equal(envelope.EnvelopeId, e.EnvelopeId);
                Assert.Equal(envelope.AuthenticatedUser, e.AuthenticatedUser);
                Assert.Equal(envelope.Notify, e.Notify);
                Assert.Equal(envelope.OriginalRecipients, e.OriginalRecipients);
                Assert.Equal(envelope.NotBeforeUnixMs, e.NotBeforeUnixMs);
                Assert.Equal(envelope.Metadata, e.Metadata);
                Assert.Equal(envelope.Pool, e.Pool);

                // Every strict prefix of the record is refused, never misread or thrown on.
                for (int cut = 0; cut < record.Length; cut += 1 + record.Length / 16)
                    Assert.Null(MessageHead.TryParse(record.AsSpan(0, cut)));
            }
            finally
            {
                buffer.Release();
            }
        }, iter: 500);
    }

    [Fact]
    public void Spool_status_record_round_trips()
    {
        var changes = Gen.Select(Gen.UShort, Gen.Byte[0, 4], (i, s) => (i, (RecipientState)s)).Array[0, 20];
        Gen.Select(Gen.ULong, Gen.Long, Gen.Byte[0, 7], Gen.Int[0, int.MaxValue], Gen.Long, changes).Sample((id, time, flags, attempts, next, ch) =>
        {
            var status = new StatusRecord
            {
                Id = id, TimeUnixMs = time, Flags = (StatusFlags)flags, Attempts = attempts, NextAttemptUnixMs = next, Changes = ch,
            };
            var record = new byte[status.SerializedLength];
            status.SerializeTo(record);
            Assert.True(StatusRecord.TryParse(record, out var back));
            Assert.Equal((id, time, (StatusFlags)flags, attempts, next), (back.Id, back.TimeUnixMs, back.Flags, back.Attempts, back.NextAttemptUnixMs));
            Assert.Equal(ch, back.Changes);
        }, iter: Iterations);
    }
}
