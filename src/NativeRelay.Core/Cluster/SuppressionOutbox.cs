using System.Buffers;
using System.Globalization;
using System.Text;
using Microsoft.Win32.SafeHandles;
using NativeRelay.Traffic.Suppression;

namespace NativeRelay.Cluster;

/// <summary>
/// This node's suppression changes not yet in Redis, kept durably, so a change made while Redis
/// is away (or just before a crash) reaches the fleet when it is back, after a restart too. The
/// file, <c>SPOOL/suppression/cluster-outbox</c>, has the journal's format
/// (<see cref="SuppressionJournal"/>); beside it <c>cluster-outbox.cursor</c> says up to which
/// byte the changes were sent (a crash between sending and moving the cursor sends a batch twice:
/// harmless, a change already in the hash changes nothing). Changes are buffered, and written and
/// fsynced with the list's commit (before the control socket answers). Once every change is
/// sent the file is emptied.
/// </summary>
internal sealed class SuppressionOutbox : IDisposable
{
    public const string FileName = "cluster-outbox";
    private const int WriteThreshold = 64 * 1024;

    private readonly string _path;
    private readonly string _cursorPath;
    private readonly object _gate = new();
    private readonly ArrayBufferWriter<byte> _buffer = new(16 * 1024);
    private readonly Queue<(SuppressionChange Change, long End)> _pending = new();
    private readonly Dictionary<string, int> _pendingKeys = new(StringComparer.Ordinal);
    private readonly byte[] _record = new byte[SuppressionJournal.MaxRecordLength];
    private readonly SafeFileHandle _handle;
    private long _written;
    private bool _dirty;
    private bool _disposed;

    private SuppressionOutbox(string path, SafeFileHandle handle)
    {
        _path = path;
        _cursorPath = path + ".cursor";
        _handle = handle;
    }

    /// <summary>Changes waiting to be sent.</summary>
    public int Count
    {
        get
        {
            lock (_gate)
                return _pending.Count;
        }
    }

    /// <summary>Opens the outbox of a suppression directory; the changes a previous run did not send are pending again.</summary>
    public static SuppressionOutbox Open(string directory)
    {
        string path = Path.Combine(directory, FileName);
        var handle = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
        if (!OperatingSystem.IsWindows())
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite); // addresses: personal data
        var outbox = new SuppressionOutbox(path, handle);
        try
        {
            outbox.Load();
        }
        catch
        {
            handle.Dispose();
            throw;
        }
        return outbox;
    }

    private void Load()
    {
        long length = RandomAccess.GetLength(_handle);
        Span<byte> header = stackalloc byte[SuppressionJournal.HeaderLength];
        bool valid = length >= header.Length && RandomAccess.Read(_handle, header, 0) == header.Length && header.SequenceEqual(SuppressionJournal.Header);
        long cursor = SuppressionJournal.HeaderLength;
        if (valid && File.Exists(_cursorPath)
            && long.TryParse(File.ReadAllText(_cursorPath).Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out long saved))
            cursor = Math.Max(cursor, saved);
        if (valid && cursor < length)
        {
            using var stream = new FileStream(_path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16) { Position = cursor };
            var reader = new SuppressionJournalReader(stream, cursor, length);
            foreach (var (record, offset) in reader.Records())
            {
                if (!SuppressionScope.TryParse(record.Scope, out var scope, out _))
                    continue;
                var change = new SuppressionChange(record.Added, record.TimeUnixMs, scope, record.Address, record.Reason);
                _pending.Enqueue((change, reader.End));
                AddKey(change.Key);
            }
            _written = reader.End; // a torn tail (a change never committed) is written over
        }
        if (_pending.Count == 0)
            Reset();
    }

    /// <summary>Queues a change (buffered; durable after <see cref="Commit"/>).</summary>
    public void Append(in SuppressionChange change)
    {
        lock (_gate)
        {
            if (_disposed)
                return;
            int n = SuppressionJournal.Write(_record, change.Added, change.TimeUnixMs, Encoding.UTF8.GetBytes(change.Scope.ToString()), change.Address, change.Reason);
            _buffer.Write(_record.AsSpan(0, n));
            _pending.Enqueue((change, _written + _buffer.WrittenCount));
            AddKey(change.Key);
            _dirty = true;
            if (_buffer.WrittenCount >= WriteThreshold)
                WriteBuffer();
        }
    }

    /// <summary>Writes out and fsyncs the queued changes.</summary>
    public void Commit()
    {
        lock (_gate)
        {
            if (_disposed || !_dirty)
                return;
            WriteBuffer();
            RandomAccess.FlushToDisk(_handle);
            _dirty = false;
        }
    }

    /// <summary>The oldest pending changes, at most <paramref name="max"/>.</summary>
    public List<SuppressionChange> Peek(int max)
    {
        lock (_gate)
            return _pending.Take(max).Select(p => p.Change).ToList();
    }

    /// <summary>Whether a change of this entry is waiting to be sent (a newer one than anything the fleet says of it).</summary>
    public bool IsPending(string key)
    {
        lock (_gate)
            return _pendingKeys.ContainsKey(key);
    }

    /// <summary>The keys of the entries with pending changes.</summary>
    public HashSet<string> PendingKeys()
    {
        lock (_gate)
            return _pendingKeys.Keys.ToHashSet(StringComparer.Ordinal);
    }

    /// <summary>The oldest <paramref name="count"/> changes are in Redis: the cursor moves past them; an outbox with nothing left is emptied.</summary>
    public void Sent(int count)
    {
        lock (_gate)
        {
            long end = 0;
            for (int i = 0; i < count && _pending.Count > 0; i++)
            {
                var (change, at) = _pending.Dequeue();
                end = at;
                string key = change.Key;
                if (_pendingKeys.TryGetValue(key, out int n) && n > 1)
                    _pendingKeys[key] = n - 1;
                else
                    _pendingKeys.Remove(key);
            }
            if (_disposed)
                return;
            if (_pending.Count == 0)
                Reset();
            else if (end > 0)
                File.WriteAllText(_cursorPath, end.ToString(CultureInfo.InvariantCulture));
        }
    }

    // Under _gate (or at open): nothing pending, so the file starts again after its header. The
    // cursor is moved back first: a crash in between sends sent changes again, never skips new ones.
    private void Reset()
    {
        _buffer.Clear();
        File.WriteAllText(_cursorPath, SuppressionJournal.HeaderLength.ToString(CultureInfo.InvariantCulture));
        RandomAccess.SetLength(_handle, 0);
        RandomAccess.Write(_handle, SuppressionJournal.Header, 0);
        _written = SuppressionJournal.HeaderLength;
        _dirty = false;
    }

    private void WriteBuffer()
    {
        if (_buffer.WrittenCount == 0)
            return;
        RandomAccess.Write(_handle, _buffer.WrittenSpan, _written);
        _written += _buffer.WrittenCount;
        _buffer.Clear();
    }

    private void AddKey(string key) => _pendingKeys[key] = _pendingKeys.GetValueOrDefault(key) + 1;

    public void Dispose()
    {
        lock (_gate)
        {
            if (_disposed)
                return;
            WriteBuffer();
            RandomAccess.FlushToDisk(_handle);
            _disposed = true;
            _handle.Dispose();
        }
    }
}
