using System.Buffers.Binary;
using System.Text;
using FASTER.core;
using NativeRelay.Message;

namespace NativeRelay.Spool;

/// <summary>
/// The kinds of record in the log. Every record starts with the same 12 bytes: kind (1), format
/// version (1), flags (1), reserved (1), message id (8), all little-endian. FasterLog adds its own
/// length and per-entry checksum around each record, so a torn write is caught there.
/// </summary>
public enum RecordKind : byte
{
    /// <summary>The envelope and the last part of a message's bytes; written last, so it is the commit point of the message.</summary>
    MessageHead = 1,
    /// <summary>An earlier part of a large message's bytes, written before its head.</summary>
    MessageChunk = 2,
    /// <summary>A delivery outcome or schedule change for some of a message's recipients.</summary>
    Status = 3,
    /// <summary>Filler with no meaning (written after the log was reopened, to step over addresses that were lost).</summary>
    Padding = 4,
}

/// <summary>Flags in byte 2 of the common header.</summary>
[Flags]
public enum RecordFlags : byte
{
    None = 0,
    /// <summary>
    /// A head copied forward by compaction. It carries a snapshot of the message's delivery state
    /// (attempts and every recipient's state) taken after every status record that precedes it,
    /// so the records it replaces can be truncated away.
    /// </summary>
    Copy = 1,
}

public enum RecipientState : byte
{
    Pending = 0,
    Delivered = 1,
    Failed = 2,
}

[Flags]
public enum StatusFlags : byte
{
    None = 0,
    /// <summary>Every recipient has a final state: the message leaves the queue.</summary>
    Done = 1,
    /// <summary>Held by an administrator (queue hold): not attempted until a record with <see cref="Released"/>.</summary>
    Held = 2,
    /// <summary>Released by an administrator (queue release): clears <see cref="Held"/>.</summary>
    Released = 4,
    /// <summary>The delay warning (DSN) has been sent; it is sent once per message.</summary>
    DelayWarned = 8,
}

internal static class RecordFormat
{
    public const byte Version = 1;
    public const int CommonHeaderSize = 12;

    public static void WriteCommonHeader(Span<byte> dest, RecordKind kind, ulong id, RecordFlags flags = RecordFlags.None)
    {
        dest[0] = (byte)kind;
        dest[1] = Version;
        dest[2] = (byte)flags;
        dest[3] = 0;
        BinaryPrimitives.WriteUInt64LittleEndian(dest[4..], id);
    }

    public static bool TryReadCommonHeader(ReadOnlySpan<byte> record, out RecordKind kind, out ulong id)
    {
        kind = default;
        id = 0;
        if (record.Length < CommonHeaderSize || record[1] != Version)
            return false;
        kind = (RecordKind)record[0];
        id = BinaryPrimitives.ReadUInt64LittleEndian(record[4..]);
        return kind is RecordKind.MessageHead or RecordKind.MessageChunk or RecordKind.Status or RecordKind.Padding;
    }

    public static RecordFlags Flags(ReadOnlySpan<byte> record) => (RecordFlags)record[2];
}

/// <summary>
/// A message head record: envelope, the addresses of its chunk records, and inline the bytes
/// that follow the last chunk. Serialized straight into the log page (no intermediate copy).
/// Layout after the common header: arrival ms (8), flags (4), total length (8), client (2+n),
/// helo (2+n), sender (2+n), recipient count (4) and each (2+n), chunk count (4) and each
/// address (8), inline length (4) and bytes.
/// </summary>
internal sealed class MessageHeadEntry : ILogEnqueueEntry
{
    public ulong Id;
    public Envelope Envelope = null!;
    public MessageBuffer Body = null!;
    public long InlineOffset;
    public int InlineLength;
    public List<long> ChunkAddresses = new();
    private int _envelopeLength;

    public void Prepare(ulong id, Envelope envelope, MessageBuffer body, long inlineOffset)
    {
        Id = id;
        Envelope = envelope;
        Body = body;
        InlineOffset = inlineOffset;
        InlineLength = checked((int)(body.ContentLength - inlineOffset));
        _envelopeLength = 8 + 4 + 8
            + 2 + Encoding.UTF8.GetByteCount(envelope.ClientAddress)
            + 2 + Encoding.UTF8.GetByteCount(envelope.HeloName)
            + 2 + envelope.Sender.Length
            + 4;
        foreach (var r in envelope.Recipients)
            _envelopeLength += 2 + r.Length;
        _envelopeLength += DsnExtensionLength(envelope);
        _envelopeLength += 4 + 8 * ChunkAddresses.Count + 4;
    }

    public int SerializedLength => RecordFormat.CommonHeaderSize + _envelopeLength + InlineLength;

    private static int DsnExtensionLength(Envelope e) => DsnExtension.Length(e);

    private static void WriteDsnExtension(ref SpanWriter w, Envelope e) => DsnExtension.Write(ref w, e);

    public void SerializeTo(Span<byte> dest)
    {
        RecordFormat.WriteCommonHeader(dest, RecordKind.MessageHead, Id);
        var w = new SpanWriter(dest[RecordFormat.CommonHeaderSize..]);
        w.I64(Envelope.ArrivalUnixMs);
        w.U32((uint)Envelope.Flags);
        w.I64(Body.ContentLength);
        w.Utf8(Envelope.ClientAddress);
        w.Utf8(Envelope.HeloName);
        w.Bytes16(Envelope.Sender);
        w.U32((uint)Envelope.Recipients.Length);
        foreach (var r in Envelope.Recipients)
            w.Bytes16(r);
        WriteDsnExtension(ref w, Envelope);
        w.U32((uint)ChunkAddresses.Count);
        foreach (var a in ChunkAddresses)
            w.I64(a);
        w.U32((uint)InlineLength);
        Body.CopyTo(InlineOffset, w.Take(InlineLength));
    }
}

/// <summary>
/// The DSN and submission extension of a head record (after the recipients): ENVID (2+n), auth
/// user (2+n), then a flag byte (bit 0: NOTIFY present, bit 1: ORCPT present, bit 2: injection
/// part present, bit 3: pool present) and, per recipient, NOTIFY (1) and/or ORCPT (2+n); then,
/// with bit 2, the HTTP injection's not-before time (8, Unix ms) and metadata (4+n); then, with
/// bit 3, the egress pool (2+n). Spools written before bits 2 and 3 existed never set them, so
/// they read as before (no schedule, no metadata, the default pool).
/// </summary>
internal static class DsnExtension
{
    public static int Length(Envelope e)
    {
        int n = 2 + (e.EnvelopeId?.Length ?? 0) + 2 + System.Text.Encoding.UTF8.GetByteCount(e.AuthenticatedUser ?? "") + 1;
        if (HasInjectionPart(e))
            n += 8 + 4 + (e.Metadata?.Length ?? 0);
        if (e.Pool is not null)
            n += 2 + System.Text.Encoding.UTF8.GetByteCount(e.Pool);
        if (e.Notify is not null)
            n += e.Recipients.Length;
        if (e.OriginalRecipients is not null)
            foreach (var o in e.OriginalRecipients)
                n += 2 + (o?.Length ?? 0);
        return n;
    }

    public static void Write(ref SpanWriter w, Envelope e)
    {
        w.Bytes16(e.EnvelopeId ?? []);
        w.Utf8(e.AuthenticatedUser ?? "");
        w.U8((byte)((e.Notify is not null ? 1 : 0) | (e.OriginalRecipients is not null ? 2 : 0) | (HasInjectionPart(e) ? 4 : 0)
                    | (e.Pool is not null ? 8 : 0)));
        if (e.Notify is not null)
            foreach (var n in e.Notify)
                w.U8((byte)n);
        if (e.OriginalRecipients is not null)
            foreach (var o in e.OriginalRecipients)
                w.Bytes16(o ?? []);
        if (HasInjectionPart(e))
        {
            w.I64(e.NotBeforeUnixMs);
            var metadata = e.Metadata ?? [];
            w.U32((uint)metadata.Length);
            metadata.CopyTo(w.Take(metadata.Length));
        }
        if (e.Pool is not null)
            w.Utf8(e.Pool);
    }

    private static bool HasInjectionPart(Envelope e) => e.NotBeforeUnixMs != 0 || e.Metadata is not null;

    /// <summary>Steps over the extension without building anything.</summary>
    public static bool Skip(ref SpanReader r, int recipients)
    {
        if (!r.Skip16() || !r.Skip16() || !r.U8(out byte flags))
            return false;
        if ((flags & 1) != 0 && !r.Skip(recipients))
            return false;
        if ((flags & 2) != 0)
            for (int i = 0; i < recipients; i++)
                if (!r.Skip16())
                    return false;
        if ((flags & 4) != 0 && (!r.I64(out _) || !r.U32(out uint metadata) || !r.Skip(metadata)))
            return false;
        if ((flags & 8) != 0 && !r.Skip16())
            return false;
        return true;
    }

    public static bool TryRead(ref SpanReader r, int recipients, out byte[]? envId, out string? user,
        out DsnNotify[]? notify, out byte[]?[]? orcpt, out long notBefore, out byte[]? metadata, out string? pool)
    {
        notBefore = 0;
        metadata = null;
        notify = null;
        orcpt = null;
        user = null;
        pool = null;
        if (!r.Bytes16(out var id) || !r.Utf8(out var u) || !r.U8(out byte flags))
        {
            envId = null;
            return false;
        }
        envId = id.Length == 0 ? null : id;
        user = u.Length == 0 ? null : u;
        if ((flags & 1) != 0)
        {
            notify = new DsnNotify[recipients];
            for (int i = 0; i < recipients; i++)
            {
                if (!r.U8(out byte b))
                    return false;
                notify[i] = (DsnNotify)b;
            }
        }
        if ((flags & 2) != 0)
        {
            orcpt = new byte[]?[recipients];
            for (int i = 0; i < recipients; i++)
            {
                if (!r.Bytes16(out var o))
                    return false;
                orcpt[i] = o.Length == 0 ? null : o;
            }
        }
        if ((flags & 4) != 0)
        {
            if (!r.I64(out notBefore) || !r.U32(out uint length) || length > r.Remaining)
                return false;
            metadata = length == 0 ? null : r.Take((int)length).ToArray(); // no metadata is written as length 0
        }
        if ((flags & 8) != 0)
        {
            if (!r.Utf8(out var p))
                return false;
            pool = p;
        }
        return true;
    }
}

/// <summary>A chunk record: common header, offset in the message (8), then the bytes.</summary>
internal sealed class MessageChunkEntry : ILogEnqueueEntry
{
    public ulong Id;
    public MessageBuffer Body = null!;
    public long Offset;
    public int Length;

    public int SerializedLength => RecordFormat.CommonHeaderSize + 8 + Length;

    public void SerializeTo(Span<byte> dest)
    {
        RecordFormat.WriteCommonHeader(dest, RecordKind.MessageChunk, Id);
        BinaryPrimitives.WriteInt64LittleEndian(dest[RecordFormat.CommonHeaderSize..], Offset);
        Body.CopyTo(Offset, dest.Slice(RecordFormat.CommonHeaderSize + 8, Length));
    }
}

/// <summary>
/// A status record. Layout after the common header: time ms (8), flags (1), attempts (4), next
/// attempt ms (8), count (2), then per recipient index (2) and state (1).
/// </summary>
public readonly struct StatusRecord
{
    public required ulong Id { get; init; }
    public required long TimeUnixMs { get; init; }
    public required StatusFlags Flags { get; init; }
    public required int Attempts { get; init; }
    public required long NextAttemptUnixMs { get; init; }
    /// <summary>Recipients whose state changed, as (index, state) pairs.</summary>
    public required (ushort Index, RecipientState State)[] Changes { get; init; }

    public int SerializedLength => RecordFormat.CommonHeaderSize + 8 + 1 + 4 + 8 + 2 + 3 * Changes.Length;

    public void SerializeTo(Span<byte> dest)
    {
        RecordFormat.WriteCommonHeader(dest, RecordKind.Status, Id);
        var w = new SpanWriter(dest[RecordFormat.CommonHeaderSize..]);
        w.I64(TimeUnixMs);
        w.U8((byte)Flags);
        w.U32((uint)Attempts);
        w.I64(NextAttemptUnixMs);
        w.U16((ushort)Changes.Length);
        foreach (var (index, state) in Changes)
        {
            w.U16(index);
            w.U8((byte)state);
        }
    }

    public static bool TryParse(ReadOnlySpan<byte> record, out StatusRecord status)
    {
        status = default;
        if (!RecordFormat.TryReadCommonHeader(record, out var kind, out ulong id) || kind != RecordKind.Status)
            return false;
        var r = new SpanReader(record[RecordFormat.CommonHeaderSize..]);
        if (!r.I64(out long time) || !r.U8(out byte flags) || !r.U32(out uint attempts) || !r.I64(out long next) || !r.U16(out ushort n))
            return false;
        var changes = new (ushort, RecipientState)[n];
        for (int i = 0; i < n; i++)
        {
            if (!r.U16(out ushort index) || !r.U8(out byte state))
                return false;
            changes[i] = (index, (RecipientState)state);
        }
        status = new StatusRecord
        {
            Id = id, TimeUnixMs = time, Flags = (StatusFlags)flags, Attempts = (int)attempts,
            NextAttemptUnixMs = next, Changes = changes,
        };
        return true;
    }
}

internal sealed class StatusEntry : ILogEnqueueEntry
{
    public StatusRecord Record;
    public int SerializedLength => Record.SerializedLength;
    public void SerializeTo(Span<byte> dest) => Record.SerializeTo(dest);
}

/// <summary>
/// Where the parts of a head record are, read without allocating (recovery walks every head with
/// this; only a delivery or an admin command builds the <see cref="Envelope"/>). After the
/// envelope come the chunk count (4) and addresses (8 each); a <see cref="RecordFlags.Copy"/> head
/// then has its state snapshot: attempts (4), the standing status flags (1: held, delay warned),
/// recipient count (2) and one state byte per recipient; last the inline length (4) and bytes.
/// </summary>
internal readonly struct HeadLayout
{
    public ulong Id { get; init; }
    public RecordFlags Flags { get; init; }
    public long ArrivalUnixMs { get; init; }
    public long TotalLength { get; init; }
    public int RecipientCount { get; init; }
    /// <summary>Offset of the chunk count: the envelope is [CommonHeaderSize, ChunkCountOffset).</summary>
    public int ChunkCountOffset { get; init; }
    public int ChunkCount { get; init; }
    /// <summary>Offset of the snapshot block (Copy heads), else -1.</summary>
    public int SnapshotOffset { get; init; }
    public int InlineOffset { get; init; }
    public int InlineLength { get; init; }

    public bool IsCopy => (Flags & RecordFlags.Copy) != 0;

    public long ChunkAddress(ReadOnlySpan<byte> record, int index) =>
        BinaryPrimitives.ReadInt64LittleEndian(record[(ChunkCountOffset + 4 + 8 * index)..]);

    public int SnapshotAttempts(ReadOnlySpan<byte> record) =>
        (int)BinaryPrimitives.ReadUInt32LittleEndian(record[SnapshotOffset..]);

    /// <summary>The snapshot's standing flags (<see cref="StatusFlags.Held"/>, <see cref="StatusFlags.DelayWarned"/>).</summary>
    public StatusFlags SnapshotFlags(ReadOnlySpan<byte> record) => (StatusFlags)record[SnapshotOffset + 4];

    /// <summary>The snapshot's recipient states (one byte each), empty when the head is not a copy.</summary>
    public ReadOnlySpan<byte> SnapshotStates(ReadOnlySpan<byte> record) =>
        SnapshotOffset < 0 ? default : record.Slice(SnapshotOffset + 7, BinaryPrimitives.ReadUInt16LittleEndian(record[(SnapshotOffset + 5)..]));

    public static bool TryRead(ReadOnlySpan<byte> record, out HeadLayout layout)
    {
        layout = default;
        if (!RecordFormat.TryReadCommonHeader(record, out var kind, out ulong id) || kind != RecordKind.MessageHead)
            return false;
        var flags = RecordFormat.Flags(record);
        var r = new SpanReader(record[RecordFormat.CommonHeaderSize..]);
        if (!r.I64(out long arrival) || !r.U32(out _) || !r.I64(out long total) || total < 0
            || !r.Skip16() || !r.Skip16() || !r.Skip16()
            || !r.U32(out uint rcptCount) || rcptCount > 100_000)
            return false;
        for (uint i = 0; i < rcptCount; i++)
            if (!r.Skip16())
                return false;
        if (!DsnExtension.Skip(ref r, (int)rcptCount))
            return false;
        int chunkCountOffset = RecordFormat.CommonHeaderSize + r.Position;
        if (!r.U32(out uint chunkCount) || chunkCount > 1_000_000 || !r.Skip((long)chunkCount * 8))
            return false;
        int snapshotOffset = -1;
        if ((flags & RecordFlags.Copy) != 0)
        {
            snapshotOffset = RecordFormat.CommonHeaderSize + r.Position;
            if (!r.U32(out _) || !r.U8(out _) || !r.U16(out ushort states) || states != rcptCount || !r.Skip(states))
                return false;
        }
        if (!r.U32(out uint inline) || inline != r.Remaining)
            return false;
        layout = new HeadLayout
        {
            Id = id,
            Flags = flags,
            ArrivalUnixMs = arrival,
            TotalLength = total,
            RecipientCount = (int)rcptCount,
            ChunkCountOffset = chunkCountOffset,
            ChunkCount = (int)chunkCount,
            SnapshotOffset = snapshotOffset,
            InlineOffset = record.Length - (int)inline,
            InlineLength = (int)inline,
        };
        return true;
    }
}

/// <summary>The parsed head of a message as read back from the log.</summary>
internal sealed class MessageHead
{
    public required ulong Id { get; init; }
    public required Envelope Envelope { get; init; }
    public required long TotalLength { get; init; }
    public required long[] ChunkAddresses { get; init; }
    public required int InlineOffset { get; init; }   // offset of the inline bytes within the record
    public required int InlineLength { get; init; }

    public static MessageHead? TryParse(ReadOnlySpan<byte> record)
    {
        if (!HeadLayout.TryRead(record, out var layout))
            return null;
        var envelope = TryParseEnvelope(record, layout);
        if (envelope is null)
            return null;
        var chunks = new long[layout.ChunkCount];
        for (int i = 0; i < chunks.Length; i++)
            chunks[i] = layout.ChunkAddress(record, i);
        return new MessageHead
        {
            Id = layout.Id,
            Envelope = envelope,
            TotalLength = layout.TotalLength,
            ChunkAddresses = chunks,
            InlineOffset = layout.InlineOffset,
            InlineLength = layout.InlineLength,
        };
    }

    /// <summary>Builds the envelope of a head whose layout was already checked.</summary>
    public static Envelope? TryParseEnvelope(ReadOnlySpan<byte> record, in HeadLayout layout)
    {
        var r = new SpanReader(record[RecordFormat.CommonHeaderSize..layout.ChunkCountOffset]);
        if (!r.I64(out long arrival) || !r.U32(out uint flags) || !r.I64(out _)
            || !r.Utf8(out string client) || !r.Utf8(out string helo) || !r.Bytes16(out byte[] sender)
            || !r.U32(out uint rcptCount))
            return null;
        var recipients = new byte[rcptCount][];
        for (int i = 0; i < recipients.Length; i++)
            if (!r.Bytes16(out recipients[i]))
                return null;
        if (!DsnExtension.TryRead(ref r, recipients.Length, out var envId, out var user, out var notify, out var orcpt,
                out long notBefore, out var metadata, out var pool))
            return null;
        return new Envelope
        {
            Sender = sender, Recipients = recipients, ClientAddress = client, HeloName = helo,
            ArrivalUnixMs = arrival, Flags = (EnvelopeFlags)flags,
            EnvelopeId = envId, AuthenticatedUser = user, Notify = notify, OriginalRecipients = orcpt,
            NotBeforeUnixMs = notBefore, Metadata = metadata, Pool = pool,
        };
    }
}

/// <summary>
/// A head copied forward by compaction: the old head's envelope bytes verbatim, the addresses of
/// the copied chunks, the state snapshot, and the old inline bytes.
/// </summary>
internal sealed class CopiedHeadEntry : ILogEnqueueEntry
{
    public ReadOnlyMemory<byte> Old;
    public HeadLayout Layout;
    public long[] ChunkAddresses = [];
    public int Attempts;
    public StatusFlags Flags;          // Held, DelayWarned
    public RecipientState[]? States;   // null: all pending

    private ReadOnlySpan<byte> OldRecord => Old.Span;

    public int SerializedLength =>
        Layout.ChunkCountOffset + 4 + 8 * ChunkAddresses.Length + 4 + 1 + 2 + Layout.RecipientCount + 4 + Layout.InlineLength;

    public void SerializeTo(Span<byte> dest)
    {
        var old = OldRecord;
        old[..Layout.ChunkCountOffset].CopyTo(dest);
        dest[2] = (byte)(RecordFormat.Flags(old) | RecordFlags.Copy);
        var w = new SpanWriter(dest[Layout.ChunkCountOffset..]);
        w.U32((uint)ChunkAddresses.Length);
        foreach (long a in ChunkAddresses)
            w.I64(a);
        w.U32((uint)Attempts);
        w.U8((byte)Flags);
        w.U16((ushort)Layout.RecipientCount);
        var states = w.Take(Layout.RecipientCount);
        if (States is null)
            states.Clear();
        else
            for (int i = 0; i < states.Length; i++)
                states[i] = (byte)States[i];
        w.U32((uint)Layout.InlineLength);
        old.Slice(Layout.InlineOffset, Layout.InlineLength).CopyTo(w.Take(Layout.InlineLength));
    }
}

/// <summary>A record that only takes up room (see <see cref="RecordKind.Padding"/>).</summary>
internal sealed class PaddingEntry(int length) : ILogEnqueueEntry
{
    public int SerializedLength => Math.Max(length, RecordFormat.CommonHeaderSize);

    public void SerializeTo(Span<byte> dest)
    {
        dest.Clear();
        RecordFormat.WriteCommonHeader(dest, RecordKind.Padding, 0);
    }
}
