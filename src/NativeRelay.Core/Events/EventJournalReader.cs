using Microsoft.Win32.SafeHandles;

namespace NativeRelay.Events;

/// <summary>
/// Reads the journal forward from a sequence number, up to what is durable, segment after
/// segment (a sink's view of it). Not thread-safe: one reader per sink.
/// </summary>
public sealed class EventJournalReader : IDisposable
{
    private readonly EventJournal _journal;
    private readonly byte[] _header = new byte[JournalFormat.HeaderSize];
    private SafeFileHandle? _file;
    private long _segmentFirst = -1;
    private long _offset;

    public EventJournalReader(EventJournal journal, long seq)
    {
        _journal = journal;
        Seek(seq);
    }

    /// <summary>The sequence number of the next event <see cref="TryRead"/> returns.</summary>
    public long NextSeq { get; private set; }

    /// <summary>Positions the reader at <paramref name="seq"/> (at the oldest event on disk when that one is gone).</summary>
    public void Seek(long seq)
    {
        long first = _journal.SegmentFor(seq);
        Open(first);
        if (seq < first)
            seq = first;
        while (NextSeq < seq && NextSeq < _journal.DurableEnd && Skip())
        {
        }
    }

    private void Open(long first)
    {
        _file?.Dispose();
        _file = File.OpenHandle(EventJournal.SegmentPath(_journal.Directory, first), FileMode.Open, FileAccess.Read,
            FileShare.ReadWrite | FileShare.Delete);
        _segmentFirst = first;
        _offset = 0;
        NextSeq = first;
    }

    // Steps over one record by its header (seeking forward without reading bodies).
    private bool Skip()
    {
        if (!ReadHeader(out int bodyLength, out _, out _))
            return false;
        _offset += JournalFormat.HeaderSize + bodyLength;
        NextSeq++;
        return true;
    }

    private bool ReadHeader(out int bodyLength, out uint crc, out long seq)
    {
        bodyLength = 0;
        crc = 0;
        seq = 0;
        while (true)
        {
            int n = RandomAccess.Read(_file!, _header, _offset);
            if (n == JournalFormat.HeaderSize && JournalFormat.TryReadHeader(_header, out bodyLength, out crc, out seq) && seq == NextSeq)
                return true;
            // The end of this segment (the file's end, or zeros prepared ahead of a tail that moved
            // on): the next segment starts at NextSeq, as segments rotate between records.
            long next = _journal.SegmentFor(NextSeq);
            if (next != _segmentFirst && next == NextSeq)
            {
                long keep = NextSeq;
                Open(next);
                NextSeq = keep;
                continue;
            }
            if (n < JournalFormat.HeaderSize || _header.AsSpan().IndexOfAnyExcept((byte)0) < 0)
                return false;
            throw new InvalidDataException($"event journal {EventJournal.SegmentPath(_journal.Directory, _segmentFirst)}: damaged record at offset {_offset} (expected event {NextSeq})");
        }
    }

    /// <summary>The next durable event, or false when the reader has caught up with the journal.</summary>
    public bool TryRead(out JournalRecord record)
    {
        record = default;
        if (NextSeq >= _journal.DurableEnd)
            return false;
        if (!ReadHeader(out int bodyLength, out uint crc, out long seq))
            return false;
        var body = new byte[bodyLength];
        int n = RandomAccess.Read(_file!, body, _offset + JournalFormat.HeaderSize);
        if (n != bodyLength || !JournalFormat.Verify(_header, body, crc))
            throw new InvalidDataException($"event journal {EventJournal.SegmentPath(_journal.Directory, _segmentFirst)}: damaged event {seq} at offset {_offset}");
        _offset += JournalFormat.HeaderSize + bodyLength;
        NextSeq = seq + 1;
        record = JournalFormat.Decode(seq, body);
        return true;
    }

    /// <summary>After damage: continues at the first event of the next segment (the damaged rest of this one is lost).</summary>
    public bool SkipToNextSegment()
    {
        long next = _journal.SegmentAfter(_segmentFirst);
        if (next < 0)
            return false;
        Open(next);
        return true;
    }

    public void Dispose() => _file?.Dispose();
}
