using System.Buffers;
using System.Collections.Concurrent;
using System.Text;
using Microsoft.Win32.SafeHandles;
using NativeRelay.Telemetry;

namespace NativeRelay.Traffic.Suppression;

/// <summary>One entry as a listing shows it.</summary>
public sealed record SuppressionEntry(string Address, string Scope, long AddedUnixMs, string Reason);

/// <summary>
/// The durable suppression list: the keys in memory (<see cref="SuppressionTable"/>, 16 bytes a
/// slot, lookups without locks or allocation), the entries themselves only on disk, in an
/// append-only journal in the spool directory (<see cref="SuppressionJournal"/>). Changes are
/// appended to a buffer and written out when it fills or on <see cref="Commit"/>, which also
/// fsyncs; the control socket commits before it answers, the delivery side's automatic additions
/// are committed by the housekeeping each second (a crash may forget the last second of them: the
/// next hard bounce adds them again). At start the journal is replayed into the table; a torn tail
/// is cut off. When dead records outnumber the live ones the journal is rewritten with the live
/// ones only (to a new file, fsynced, renamed over the old one).
/// <para>
/// Listing reads the journal from the start and shows an add record when the table still points
/// at it (the slot keeps the offset of the record that added the entry), so a listing costs
/// no memory per entry, and an entry removed and added again is shown once.
/// </para>
/// </summary>
public sealed class SuppressionList : ISuppressionList, IDisposable
{
    public const string DirectoryName = "suppression";
    public const string FileName = "journal";
    private const int WriteThreshold = 256 * 1024;
    private const int CompactMinRecords = 4096;

    private readonly string _directory;
    private readonly string _path;
    private readonly Log _log;
    private readonly SuppressionKeys _keys;
    private readonly SuppressionTable _table = new();
    private readonly ConcurrentDictionary<string, ulong> _poolHashes = new(StringComparer.Ordinal);
    private readonly object _gate = new();     // changes: table, buffer, file end
    private readonly object _syncGate = new(); // fsync and the file itself (compaction swaps it)
    private readonly ArrayBufferWriter<byte> _pending = new(64 * 1024);
    private SafeFileHandle _handle;
    private long _written;      // bytes in the file
    private long _changes;      // changes made
    private long _synced;       // changes known durable
    private int _records;       // records in the journal, live and dead
    private int _poolEntries;
    private int _domainEntries;
    private int _listers;
    private bool _disposed;

    private SuppressionList(string directory, Log log, SuppressionKeys keys, SafeFileHandle handle)
    {
        _directory = directory;
        _path = Path.Combine(directory, FileName);
        _log = log;
        _keys = keys;
        _handle = handle;
    }

    public int Count => _table.Count;

    /// <summary>The fleet, when this relay is a node of one: every change made here is told to it (null: none).</summary>
    public ISuppressionSync? Sync { get; set; }

    /// <summary>Memory held by the keys (the table's slots).</summary>
    public long TableBytes => _table.Bytes;
    /// <summary>The journal's size on disk, and what is still buffered.</summary>
    public long JournalBytes => Volatile.Read(ref _written) + _pending.WrittenCount;
    public string JournalPath => _path;

    /// <summary>Opens (or creates) the list of a spool directory and replays its journal.</summary>
    /// <exception cref="IOException">The journal cannot be read or is not a suppression journal.</exception>
    public static SuppressionList Open(string spoolDirectory, Log log) =>
        Open(spoolDirectory, log, SuppressionKeys.Random());

    internal static SuppressionList Open(string spoolDirectory, Log log, SuppressionKeys keys)
    {
        string directory = Path.Combine(spoolDirectory, DirectoryName);
        Directory.CreateDirectory(directory);
        string path = Path.Combine(directory, FileName);
        bool fresh = !File.Exists(path) || new FileInfo(path).Length == 0;
        var handle = File.OpenHandle(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.Read);
        // Addresses are personal data: the relay's user alone reads them (set at every start, like the spool's files).
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        var list = new SuppressionList(directory, log, keys, handle);
        try
        {
            if (fresh)
            {
                RandomAccess.SetLength(handle, 0);
                RandomAccess.Write(handle, SuppressionJournal.Header, 0);
                list._written = SuppressionJournal.HeaderLength;
                Fsync(handle, path);
                NativeRelay.Local.MaildirWriter.TryFsyncDirectory(directory, out _);
                NativeRelay.Local.MaildirWriter.TryFsyncDirectory(spoolDirectory, out _);
            }
            else
            {
                list.Replay();
            }
        }
        catch
        {
            handle.Dispose();
            throw;
        }
        list.CompactIfWorthIt();
        // Replaying a big journal decodes every record into short-lived objects and doubles the
        // table a few times; one compacting collection at start gives that memory back, so the
        // relay's footprint is the table's (perf/RESULTS.md, "Suppression list").
        if (list._records >= BigList)
            CollectOnce();
        return list;
    }

    /// <summary>Above this many records, start-up, a big import and a big listing end with <see cref="CollectOnce"/>.</summary>
    public const int BigList = 100_000;

    /// <summary>One blocking, compacting, decommitting collection: for the admin and start-up paths, never the message path.</summary>
    public static void CollectOnce() =>
        GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);


    private void Replay()
    {
        long length = RandomAccess.GetLength(_handle);
        Span<byte> header = stackalloc byte[SuppressionJournal.HeaderLength];
        if (length < header.Length || RandomAccess.Read(_handle, header, 0) != header.Length || !header.SequenceEqual(SuppressionJournal.Header))
            throw new IOException($"{_path} is not a suppression journal (its header is wrong); move it away to start an empty list");
        var scopes = new Dictionary<string, (SuppressionScopeKind, ulong)>(StringComparer.Ordinal);
        using var stream = new FileStream(_path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16) { Position = header.Length };
        var reader = new SuppressionJournalReader(stream, header.Length, length);
        foreach (var (record, offset) in reader.Records())
        {
            _records++;
            if (!scopes.TryGetValue(record.Scope, out var scope))
            {
                if (!SuppressionScope.TryParse(record.Scope, out var parsed, out _))
                    continue;
                scopes[record.Scope] = scope = (parsed.Kind, _keys.ScopeHash(parsed));
            }
            ulong key = _keys.Key(record.Address, scope.Item2);
            if (record.Added)
            {
                if (_table.TryAdd(key, offset))
                    CountScope(scope.Item1, +1);
                else
                    _table.SetOffset(key, offset);
            }
            else if (_table.Remove(key) >= 0)
            {
                CountScope(scope.Item1, -1);
            }
        }
        _written = reader.End;
        if (reader.End < length)
        {
            _log.Warn($"suppression list {_path}: {length - reader.End} byte(s) at its end are cut short or damaged (a change that was never acknowledged); removed");
            RandomAccess.SetLength(_handle, reader.End);
            Fsync(_handle, _path);
        }
    }

    // ---- The hot path --------------------------------------------------------------------------

    public bool IsSuppressed(ReadOnlySpan<byte> recipient, string? pool, ReadOnlySpan<byte> senderDomain)
    {
        if (_table.Count == 0 || recipient.IsEmpty)
            return false;
        ulong address = _keys.AddressHash(recipient);
        if (_table.Contains(SuppressionKeys.Key(address, 0)))
            return true;
        if (pool is not null && Volatile.Read(ref _poolEntries) > 0
            && _table.Contains(SuppressionKeys.Key(address, PoolHash(pool))))
            return true;
        if (!senderDomain.IsEmpty && Volatile.Read(ref _domainEntries) > 0
            && _table.Contains(SuppressionKeys.Key(address, _keys.ScopeHash("domain:"u8, senderDomain))))
            return true;
        return false;
    }

    private ulong PoolHash(string pool) =>
        _poolHashes.TryGetValue(pool, out ulong h) ? h
            : _poolHashes.GetOrAdd(pool, static (p, keys) => keys.ScopeHash(SuppressionScope.Pool(p)), _keys);

    // ---- Changes -------------------------------------------------------------------------------

    /// <summary>Whether <paramref name="address"/> can be an entry: 1 to 1024 bytes, no spaces or control characters.</summary>
    public static bool IsValidAddress(ReadOnlySpan<byte> address)
    {
        if (address.IsEmpty || address.Length > SuppressionJournal.MaxAddressLength)
            return false;
        foreach (byte b in address)
            if (b <= (byte)' ' || b == 0x7F)
                return false;
        return true;
    }

    /// <exception cref="ArgumentException">The address is not valid (<see cref="IsValidAddress"/>).</exception>
    public void Add(ReadOnlySpan<byte> recipient, SuppressionScope scope, string reason) => TryAdd(recipient, scope, reason, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());

    /// <summary>Adds an entry; false when it was there already.</summary>
    public bool TryAdd(ReadOnlySpan<byte> recipient, SuppressionScope scope, string reason, long timeUnixMs) =>
        TryAdd(recipient, scope, reason, timeUnixMs, Sync);

    public bool Remove(ReadOnlySpan<byte> recipient, SuppressionScope scope) =>
        Remove(recipient, scope, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), Sync);

    /// <summary>
    /// A change another node of the fleet made (<see cref="ISuppressionSync"/>): made here like
    /// one of this node's, durably after <see cref="Commit"/>, but not told back to the fleet.
    /// True when it changed the list. An address the list cannot hold is ignored (false).
    /// </summary>
    public bool ApplyFromFleet(in SuppressionChange change)
    {
        if (!IsValidAddress(change.Address))
            return false;
        return change.Added
            ? TryAdd(change.Address, change.Scope, change.Reason, change.TimeUnixMs, sync: null)
            : Remove(change.Address, change.Scope, change.TimeUnixMs, sync: null);
    }

    private bool TryAdd(ReadOnlySpan<byte> recipient, SuppressionScope scope, string reason, long timeUnixMs, ISuppressionSync? sync)
    {
        if (!IsValidAddress(recipient))
            throw new ArgumentException($"'{Encoding.UTF8.GetString(recipient)}' is not an address");
        ulong key = _keys.Key(recipient, ScopeHash(scope));
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_table.Contains(key))
                return false;
            long offset = Append(true, timeUnixMs, scope, recipient, reason);
            _table.TryAdd(key, offset);
            CountScope(scope.Kind, +1);
            sync?.Changed(new SuppressionChange(true, timeUnixMs, scope, SuppressionSyncKeys.Lowercased(recipient), reason));
            return true;
        }
    }

    private bool Remove(ReadOnlySpan<byte> recipient, SuppressionScope scope, long timeUnixMs, ISuppressionSync? sync)
    {
        if (!IsValidAddress(recipient))
            return false;
        ulong key = _keys.Key(recipient, ScopeHash(scope));
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (!_table.Contains(key))
                return false;
            Append(false, timeUnixMs, scope, recipient, "");
            _table.Remove(key);
            CountScope(scope.Kind, -1);
            sync?.Changed(new SuppressionChange(false, timeUnixMs, scope, SuppressionSyncKeys.Lowercased(recipient), ""));
            return true;
        }
    }

    private ulong ScopeHash(SuppressionScope scope) =>
        scope.Kind == SuppressionScopeKind.Pool ? PoolHash(scope.Name!) : _keys.ScopeHash(scope);

    private void CountScope(SuppressionScopeKind kind, int delta)
    {
        if (kind == SuppressionScopeKind.Pool)
            Interlocked.Add(ref _poolEntries, delta);
        else if (kind == SuppressionScopeKind.Domain)
            Interlocked.Add(ref _domainEntries, delta);
    }

    // Under _gate: the record goes into the buffer; its offset is where it will land in the file.
    private long Append(bool added, long timeUnixMs, SuppressionScope scope, ReadOnlySpan<byte> address, string reason)
    {
        long offset = _written + _pending.WrittenCount;
        var span = _pending.GetSpan(SuppressionJournal.MaxRecordLength);
        int n = SuppressionJournal.Write(span, added, timeUnixMs, Encoding.UTF8.GetBytes(scope.ToString()), address, reason);
        _pending.Advance(n);
        _records++;
        _changes++;
        if (_pending.WrittenCount >= WriteThreshold)
            WritePending();
        return offset;
    }

    // Under _gate: the buffer into the file (not yet durable).
    private void WritePending()
    {
        if (_pending.WrittenCount == 0)
            return;
        RandomAccess.Write(_handle, _pending.WrittenSpan, _written);
        Volatile.Write(ref _written, _written + _pending.WrittenCount);
        _pending.Clear();
    }

    /// <summary>Writes out and fsyncs every change made so far. Adds and removes go on meanwhile: they only wait for the buffer to be written, never for the disk.</summary>
    public void Commit()
    {
        Sync?.Commit(); // the changes still to be sent to the fleet: durable before the answer too
        long target;
        lock (_gate)
        {
            if (_disposed)
                return;
            if (_changes == Volatile.Read(ref _synced))
                return;
            WritePending();
            target = _changes;
        }
        lock (_syncGate)
        {
            if (Volatile.Read(ref _synced) >= target)
                return;
            Fsync(_handle, _path);
            Volatile.Write(ref _synced, target);
        }
    }

    private static void Fsync(SafeFileHandle handle, string path)
    {
        if (OperatingSystem.IsWindows())
        {
            RandomAccess.FlushToDisk(handle);
            return;
        }
        bool added = false;
        handle.DangerousAddRef(ref added);
        try
        {
            if (NativeRelay.Interop.Libc.Fsync((int)handle.DangerousGetHandle()) != 0)
                throw new IOException($"fsync of {path} failed (errno {System.Runtime.InteropServices.Marshal.GetLastPInvokeError()})");
        }
        finally
        {
            if (added)
                handle.DangerousRelease();
        }
    }

    // ---- Listing and compaction ------------------------------------------------------------------

    /// <summary>
    /// The entries, oldest first, read from the journal (committed first); only those of
    /// <paramref name="scope"/> when given. Compaction waits while a listing runs.
    /// </summary>
    public IEnumerable<SuppressionEntry> Entries(SuppressionScope? scope = null)
    {
        Interlocked.Increment(ref _listers);
        try
        {
            Commit();
            long end = Volatile.Read(ref _written);
            string? wanted = scope?.ToString();
            var hashes = new Dictionary<string, ulong>(StringComparer.Ordinal);
            using var stream = new FileStream(_path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1 << 16);
            stream.Position = SuppressionJournal.HeaderLength;
            var reader = new SuppressionJournalReader(stream, SuppressionJournal.HeaderLength, end);
            foreach (var (record, offset) in reader.Records())
            {
                if (!record.Added || (wanted is not null && record.Scope != wanted))
                    continue;
                if (!hashes.TryGetValue(record.Scope, out ulong h))
                {
                    if (!SuppressionScope.TryParse(record.Scope, out var parsed, out _))
                        continue;
                    hashes[record.Scope] = h = ScopeHash(parsed);
                }
                if (_table.TryGetOffset(_keys.Key(record.Address, h), out long at) && at == offset)
                    yield return new SuppressionEntry(Encoding.UTF8.GetString(record.Address), record.Scope, record.TimeUnixMs, record.Reason);
            }
        }
        finally
        {
            Interlocked.Decrement(ref _listers);
        }
    }

    /// <summary>Rewrites the journal with the live entries only, when dead records outnumber them (and there are a few thousand); true when it did.</summary>
    public bool CompactIfWorthIt()
    {
        lock (_syncGate)
        lock (_gate)
        {
            if (_disposed || Volatile.Read(ref _listers) > 0 || _records < CompactMinRecords || _records <= 2 * _table.Count)
                return false;
            WritePending();
            string next = _path + ".new";
            var moved = new List<(ulong Key, long Offset)>(_table.Count);
            var hashes = new Dictionary<string, ulong>(StringComparer.Ordinal);
            long length = SuppressionJournal.HeaderLength;
            var buffer = new byte[SuppressionJournal.MaxRecordLength];
            var create = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write, Share = FileShare.None, BufferSize = 1 << 16 };
            if (!OperatingSystem.IsWindows())
                create.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            using (var output = new FileStream(next, create))
            using (var input = new FileStream(_path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite, 1 << 16))
            {
                output.Write(SuppressionJournal.Header);
                input.Position = SuppressionJournal.HeaderLength;
                var reader = new SuppressionJournalReader(input, SuppressionJournal.HeaderLength, _written);
                foreach (var (record, offset) in reader.Records())
                {
                    if (!record.Added)
                        continue;
                    if (!hashes.TryGetValue(record.Scope, out ulong h))
                    {
                        if (!SuppressionScope.TryParse(record.Scope, out var parsed, out _))
                            continue;
                        hashes[record.Scope] = h = ScopeHash(parsed);
                    }
                    ulong key = _keys.Key(record.Address, h);
                    if (!_table.TryGetOffset(key, out long at) || at != offset)
                        continue;
                    int n = SuppressionJournal.Write(buffer, true, record.TimeUnixMs, Encoding.UTF8.GetBytes(record.Scope), record.Address, record.Reason);
                    output.Write(buffer, 0, n);
                    moved.Add((key, length));
                    length += n;
                }
                output.Flush(flushToDisk: true);
            }
            File.Move(next, _path, overwrite: true);
            NativeRelay.Local.MaildirWriter.TryFsyncDirectory(_directory, out _);
            var old = _handle;
            _handle = File.OpenHandle(_path, FileMode.Open, FileAccess.ReadWrite, FileShare.Read);
            old.Dispose();
            foreach (var (key, offset) in moved)
                _table.SetOffset(key, offset);
            int before = _records;
            _records = moved.Count;
            Volatile.Write(ref _written, length);
            _log.Info($"suppression list compacted: {before} journal records -> {moved.Count} ({length} bytes)");
            return true;
        }
    }

    public void Dispose()
    {
        Commit();
        lock (_syncGate)
        lock (_gate)
        {
            if (_disposed)
                return;
            _disposed = true;
            _handle.Dispose();
        }
    }
}
