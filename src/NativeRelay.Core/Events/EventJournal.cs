using System.Buffers;
using System.Globalization;
using NativeRelay.Telemetry;

namespace NativeRelay.Events;

/// <summary>
/// The append-only journal of events, in <c>SPOOL/events/</c>: segment files named by the
/// sequence number of their first record (<c>0000000000000000.events</c>), records as
/// <see cref="JournalFormat"/> lays them out. Events are made durable before any sink sees them.
/// <para>
/// Group commit: <see cref="Append"/> copies the record into a memory buffer under a short lock
/// and wakes the committer thread, which writes everything appended since its last write and
/// fsyncs once; appends that arrive during the fsync go into the next one. So an fsync serves
/// every event that came in while the previous one ran, and nobody appending waits for the disk.
/// Who needs an event durable (a 250 reply, a status record) awaits <see cref="WaitDurableAsync"/>.
/// The committer is a thread of its own because fsync blocks; it never runs relay code.
/// </para>
/// <para>
/// After a crash the last segment may end in a torn record (a write cut short, or pages written
/// out of order before the fsync that never came): <see cref="Open"/> checks every record of the
/// last segment (length, CRC, sequence number) and cuts the file at the first one that fails.
/// Nothing acknowledged by the journal is ever behind a torn record: the durable prefix is exactly
/// what an fsync covered. Segments wholly below every sink's cursor are deleted
/// (<see cref="ReleaseBefore"/>).
/// </para>
/// </summary>
public sealed class EventJournal : IDisposable
{
    public const string DirectoryName = "events";
    private const string SegmentSuffix = ".events";
    private const string IdFile = "journal.id";

    private readonly string _directory;
    private readonly long _segmentBytes;
    private readonly Log _log;
    private readonly object _gate = new();
    private readonly List<long> _segments = new(); // first seq of each segment, oldest first (under _gate)
    private ArrayBufferWriter<byte> _pending = new(64 * 1024);
    private ArrayBufferWriter<byte> _writing = new(64 * 1024);
    private long _pendingFirstSeq;
    private long _nextSeq;
    private long _durableEnd;
    private TaskCompletionSource _committed = NewSignal();
    private readonly SemaphoreSlim _work = new(0, int.MaxValue);
    private int _signaled;
    private FileStream _active;
    private long _activeFirstSeq;
    // Where the next batch goes in the active segment, and how far the file is already written
    // with zeros: commits inside prepared space change no file size, so fdatasync writes only data.
    private long _dataEnd;
    private long _preparedEnd;
    private readonly Thread _committer;
    private volatile bool _stopping;
    private volatile bool _disposed;

    /// <summary>Zeros written ahead of the tail at a time (one fsync with the new size per this many bytes of events).</summary>
    private const int PrepareBytes = 4 * 1024 * 1024;

    private EventJournal(string directory, long segmentBytes, Log log, string id, List<long> segments, FileStream active, long nextSeq, long dataEnd)
    {
        _directory = directory;
        _segmentBytes = segmentBytes;
        _log = log;
        Id = id;
        _segments = segments;
        _active = active;
        _activeFirstSeq = segments[^1];
        _dataEnd = dataEnd;
        _preparedEnd = active.Length;
        _nextSeq = _pendingFirstSeq = _durableEnd = nextSeq;
        _committer = new Thread(CommitLoop) { IsBackground = true, Name = "event journal" };
        _committer.Start();
    }

    /// <summary>8 hex digits, random, made with the journal: the first half of every event id, so ids of a new journal never repeat an old one's.</summary>
    public string Id { get; }

    public string Directory => _directory;

    /// <summary>Every event with a sequence number below this is durable (and may be sent).</summary>
    public long DurableEnd => Volatile.Read(ref _durableEnd);

    /// <summary>The sequence number the next event will get.</summary>
    public long AppendedEnd => Volatile.Read(ref _nextSeq); // a thread always sees its own appends

    /// <summary>The oldest sequence number still on disk.</summary>
    public long OldestSeq
    {
        get
        {
            lock (_gate)
                return _segments[0];
        }
    }

    /// <summary>Segment files on disk (for tests and the log).</summary>
    public int SegmentCount
    {
        get
        {
            lock (_gate)
                return _segments.Count;
        }
    }

    /// <summary>Completes at the next commit (sinks wait on it for new events).</summary>
    public Task NextCommit => Volatile.Read(ref _committed).Task;

    /// <summary>Opens (or creates) the journal in <paramref name="directory"/>, cutting a torn tail.</summary>
    public static EventJournal Open(string directory, long segmentBytes, Log log)
    {
        System.IO.Directory.CreateDirectory(directory);
        string id = ReadOrCreateId(directory);
        var segments = new List<long>();
        foreach (var path in System.IO.Directory.EnumerateFiles(directory, "*" + SegmentSuffix))
        {
            var name = Path.GetFileNameWithoutExtension(path);
            if (name.Length == 16 && long.TryParse(name, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out long first))
                segments.Add(first);
        }
        segments.Sort();
        bool created = segments.Count == 0;
        if (created)
            segments.Add(0);
        var active = OpenSegment(directory, segments[^1]);
        if (created)
            NativeRelay.Local.MaildirWriter.TryFsyncDirectory(directory, out _);
        var (next, dataEnd) = RecoverTail(active, segments[^1], log, SegmentPath(directory, segments[^1]));
        return new EventJournal(directory, segmentBytes, log, id, segments, active, next, dataEnd);
    }

    private static string ReadOrCreateId(string directory)
    {
        string path = Path.Combine(directory, IdFile);
        if (File.Exists(path))
        {
            var text = File.ReadAllText(path).Trim();
            if (text.Length == 8 && uint.TryParse(text, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out _))
                return text;
            throw new NativeRelay.Config.ConfigException($"{path}: not an event journal id (8 hex digits); the file is damaged");
        }
        string id = System.Security.Cryptography.RandomNumberGenerator.GetHexString(8, lowercase: true);
        DurableFile.Write(path, id + "\n");
        return id;
    }

    internal static string SegmentPath(string directory, long firstSeq) =>
        Path.Combine(directory, firstSeq.ToString("x16", CultureInfo.InvariantCulture) + SegmentSuffix);

    private static FileStream OpenSegment(string directory, long firstSeq) =>
        new(SegmentPath(directory, firstSeq), FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.None);

    /// <summary>
    /// Checks every record of the last segment and cuts the file at the first that fails, unless
    /// all that follows is zeros (space prepared ahead of the tail, kept). Returns the next
    /// sequence number and where the records end.
    /// </summary>
    private static (long Next, long DataEnd) RecoverTail(FileStream file, long firstSeq, Log log, string path)
    {
        long expected = firstSeq;
        long offset = 0;
        long length = file.Length;
        var header = new byte[JournalFormat.HeaderSize];
        byte[] body = [];
        while (offset + JournalFormat.HeaderSize <= length)
        {
            file.Position = offset;
            file.ReadExactly(header);
            if (!JournalFormat.TryReadHeader(header, out int bodyLength, out uint crc, out long seq) || seq != expected
                || offset + JournalFormat.HeaderSize + bodyLength > length)
                break;
            if (body.Length < bodyLength)
                body = new byte[Math.Max(bodyLength, body.Length * 2)];
            file.ReadExactly(body.AsSpan(0, bodyLength));
            if (!JournalFormat.Verify(header, body.AsSpan(0, bodyLength), crc))
                break;
            offset += JournalFormat.HeaderSize + bodyLength;
            expected++;
        }
        if (offset < length && !AllZero(file, offset, length))
        {
            log.Warn($"event journal {path}: cut a torn tail of {length - offset} bytes after event {expected - 1} (written, never made durable)");
            file.SetLength(offset);
            file.Flush(flushToDisk: true);
        }
        return (expected, offset);
    }

    private static bool AllZero(FileStream file, long from, long to)
    {
        var buffer = new byte[64 * 1024];
        file.Position = from;
        while (from < to)
        {
            int n = file.Read(buffer, 0, (int)Math.Min(buffer.Length, to - from));
            if (n <= 0)
                return true;
            if (buffer.AsSpan(0, n).ContainsAnyExcept((byte)0))
                return false;
            from += n;
        }
        return true;
    }

    /// <summary>
    /// Appends an event; returns its sequence number. Never waits for the disk: the committer
    /// writes it with whatever else came in (<see cref="WaitDurableAsync"/> to know when).
    /// </summary>
    public long Append(RelayEventType type, string? pool, ReadOnlySpan<byte> json)
    {
        if (json.Length > JournalFormat.MaxBodySize)
            throw new ArgumentException($"an event of {json.Length} bytes is over the journal's limit of {JournalFormat.MaxBodySize}");
        Span<byte> poolBytes = stackalloc byte[255];
        int poolLength = 0;
        if (pool is not null && !System.Text.Encoding.UTF8.TryGetBytes(pool, poolBytes, out poolLength))
            poolLength = 0; // a pool name over 255 bytes is not a pool this relay made; filter it as "default"
        int bodyLength = JournalFormat.BodySize(poolLength, json.Length);
        long seq;
        lock (_gate)
        {
            if (_disposed)
            {
                // Only a straggler after the relay stopped (delivery gave up waiting for it) gets
                // here; it must not fail the stop. Its outcome is recorded nowhere durable either,
                // since the spool closed first, so the attempt and its event come again.
                _log.Warn($"event journal closed: a {RelayEventTypes.Name(type)} event after the stop was not kept");
                return -1;
            }
            seq = _nextSeq++;
            var record = _pending.GetSpan(JournalFormat.HeaderSize + bodyLength)[..(JournalFormat.HeaderSize + bodyLength)];
            var body = record[JournalFormat.HeaderSize..];
            body[0] = (byte)type;
            body[1] = (byte)poolLength;
            poolBytes[..poolLength].CopyTo(body[2..]);
            json.CopyTo(body[(2 + poolLength)..]);
            JournalFormat.WriteHeader(record, seq, body);
            _pending.Advance(record.Length);
        }
        if (Interlocked.Exchange(ref _signaled, 1) == 0)
            _work.Release();
        return seq;
    }

    /// <summary>Completes when every event with a sequence number below <paramref name="end"/> is durable.</summary>
    public async Task WaitDurableAsync(long end)
    {
        // No lock: the committer publishes the new end before it swaps the signal, so reading the
        // signal first and the end second never misses the commit that covers us.
        while (true)
        {
            var next = Volatile.Read(ref _committed).Task;
            if (Volatile.Read(ref _durableEnd) >= end || _disposed)
                return;
            await next.ConfigureAwait(false);
        }
    }

    /// <summary>Completes when everything appended so far is durable.</summary>
    public Task WaitDurableAsync() => WaitDurableAsync(AppendedEnd);

    private void CommitLoop()
    {
        bool warned = false;
        while (true)
        {
            if (!_stopping)
                _work.Wait();
            Volatile.Write(ref _signaled, 0);
            long first, end;
            lock (_gate)
            {
                if (_pending.WrittenCount == 0)
                {
                    if (_stopping)
                        return;
                    continue;
                }
                (_pending, _writing) = (_writing, _pending);
                first = _pendingFirstSeq;
                end = _pendingFirstSeq = _nextSeq;
            }
            while (true)
            {
                try
                {
                    Write(first, _writing.WrittenSpan);
                    if (warned)
                        _log.Info("event journal: writing again");
                    warned = false;
                    break;
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    // A full or failing disk: the events wait in memory (and whoever awaits them
                    // waits too, as the spool would) until a write succeeds.
                    if (_stopping)
                    {
                        // Stopping with a disk that refuses: the spool is closed already, so what
                        // these events describe is not recorded either and will happen again.
                        _log.Error($"event journal: cannot write {_directory} at the stop: {NativeRelay.Telemetry.ExceptionText.Reason(e)}; {end - first} event(s) not kept");
                        break;
                    }
                    if (!warned)
                        _log.Error($"event journal: cannot write {_directory}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}; retrying every second");
                    warned = true;
                    Thread.Sleep(1000);
                }
            }
            _writing.ResetWrittenCount();
            Volatile.Write(ref _durableEnd, end);
            var done = Interlocked.Exchange(ref _committed, NewSignal());
            done.TrySetResult();
            EventMetrics.JournalCommits.Increment();
        }
    }

    // Runs on the committer thread only: the active segment is its own.
    private void Write(long firstSeq, ReadOnlySpan<byte> records)
    {
        if (_dataEnd >= _segmentBytes && firstSeq > _activeFirstSeq)
        {
            // Rotate between batches: a record never spans two files, and a segment's name is the
            // sequence number of its first record.
            var next = OpenSegment(_directory, firstSeq);
            next.SetLength(0);
            NativeRelay.Local.MaildirWriter.TryFsyncDirectory(_directory, out _);
            var old = _active;
            long oldEnd = _dataEnd;
            lock (_gate)
            {
                _segments.Add(firstSeq);
                _active = next;
                _activeFirstSeq = firstSeq;
            }
            _dataEnd = _preparedEnd = 0;
            // The finished segment gives back its unused prepared space.
            try { old.SetLength(oldEnd); } catch (IOException) { }
            old.Dispose();
        }
        long offset = _dataEnd;
        if (offset + records.Length > _preparedEnd)
            Prepare(offset + records.Length);
        try
        {
            RandomAccess.Write(_active.SafeFileHandle, records, offset);
            FlushData(_active);
        }
        catch
        {
            // Leave no half batch behind: zeros again where it went, and the retry writes it at the same place.
            try { RandomAccess.Write(_active.SafeFileHandle, new byte[records.Length], offset); } catch (IOException) { }
            throw;
        }
        _dataEnd = offset + records.Length;
    }

    // Zeros ahead of the tail, made durable with the file's new size (fsync), so the commits that
    // land in them need only fdatasync: the data, no inode. The same idea as the spool's prepared blocks.
    private void Prepare(long needed)
    {
        long end = Math.Max(needed, Math.Min(_preparedEnd + PrepareBytes, _segmentBytes));
        var zeros = new byte[Math.Min(end - _preparedEnd, PrepareBytes)];
        for (long at = _preparedEnd; at < end; at += zeros.Length)
            RandomAccess.Write(_active.SafeFileHandle, zeros.AsSpan(0, (int)Math.Min(zeros.Length, end - at)), at);
        _active.Flush(flushToDisk: true);
        _preparedEnd = end;
    }

    private static void FlushData(FileStream file)
    {
        bool added = false;
        var handle = file.SafeFileHandle;
        try
        {
            handle.DangerousAddRef(ref added);
            if (DataSync.Fdatasync((int)handle.DangerousGetHandle()) != 0)
                throw new IOException($"fdatasync: {System.Runtime.InteropServices.Marshal.GetLastPInvokeErrorMessage()}");
        }
        finally
        {
            if (added)
                handle.DangerousRelease();
        }
    }

    /// <summary>Deletes the segments whose every event is below <paramref name="seq"/> (what every sink has acknowledged or dropped). The active segment stays.</summary>
    public int ReleaseBefore(long seq)
    {
        var doomed = new List<long>();
        lock (_gate)
        {
            while (_segments.Count > 1 && _segments[1] <= seq)
            {
                doomed.Add(_segments[0]);
                _segments.RemoveAt(0);
            }
        }
        foreach (var first in doomed)
        {
            try
            {
                File.Delete(SegmentPath(_directory, first));
            }
            catch (IOException e)
            {
                _log.Warn($"event journal: cannot delete {SegmentPath(_directory, first)}: {e.Message}");
            }
        }
        return doomed.Count;
    }

    /// <summary>The segment holding <paramref name="seq"/> (the oldest one when it is older than the journal): its first sequence number.</summary>
    internal long SegmentFor(long seq)
    {
        lock (_gate)
        {
            for (int i = _segments.Count - 1; i > 0; i--)
                if (_segments[i] <= seq)
                    return _segments[i];
            return _segments[0];
        }
    }

    /// <summary>The first sequence number of the segment after the one starting at <paramref name="first"/>; -1 when it is the last.</summary>
    internal long SegmentAfter(long first)
    {
        lock (_gate)
        {
            foreach (var s in _segments)
                if (s > first)
                    return s;
            return -1;
        }
    }

    /// <summary>Writes what is pending, stops the committer and closes the active segment.</summary>
    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
                return;
            _disposed = true;
        }
        _stopping = true;
        _work.Release();
        _committer.Join();
        _active.Dispose();
        _committed.TrySetResult();
    }

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
