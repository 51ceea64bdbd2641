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
    // Reads go through a 64 KiB window of the file: one pread serves a few hundred events. Bytes
    // past the durable end may still be zeros in the window when the writer has since filled them,
    // so a header or body that does not check out is read again from the file before it counts.
    private readonly byte[] _window = new byte[64 * 1024];
    private long _windowStart = -1;
    private int _windowLength;
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
        _windowStart = -1;
        NextSeq = first;
    }

    private int ReadAt(long offset, Span<byte> destination, bool fresh)
    {
        if (!fresh && _windowStart >= 0 && offset >= _windowStart && offset + destination.Length <= _windowStart + _windowLength)
        {
            _window.AsSpan((int)(offset - _windowStart), destination.Length).CopyTo(destination);
            return destination.Length;
        }
        if (destination.Length > _window.Length)
            return RandomAccess.Read(_file!, destination, offset);
        _windowLength = RandomAccess.Read(_file!, _window, offset);
        _windowStart = offset;
        int n = Math.Min(_windowLength, destination.Length);
        _window.AsSpan(0, n).CopyTo(destination);
        return n;
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
            int n = ReadAt(_offset, _header, fresh: false);
            if (n == JournalFormat.HeaderSize && JournalFormat.TryReadHeader(_header, out bodyLength, out crc, out seq) && seq == NextSeq)
                return true;
            n = ReadAt(_offset, _header, fresh: true);
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
        int n = ReadAt(_offset + JournalFormat.HeaderSize, body, fresh: false);
        if (n != bodyLength || !JournalFormat.Verify(_header, body, crc))
            n = ReadAt(_offset + JournalFormat.HeaderSize, body, fresh: true);
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
