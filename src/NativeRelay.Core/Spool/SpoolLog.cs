using System.Buffers;
using System.Collections.Concurrent;
using FASTER.core;
using NativeRelay.Config;
using NativeRelay.Message;
using NativeRelay.Telemetry;

namespace NativeRelay.Spool;

/// <summary>
/// The durable queue: one FasterLog under the spool directory. Messages are appended as records
/// (chunks, then the head), delivery outcomes as small status records. A message is safe once the
/// commit covering its head completes; <see cref="WaitForCommitAsync"/> is how a session knows.
/// The log device opens its files with O_SYNC, so a completed commit is on stable storage.
///
/// The spool keeps its own index of live messages (<see cref="SpoolIndex"/>): truncation and
/// compaction work from it, and reads by message id follow a message that compaction moved.
///
/// A full disk: new messages are refused (<see cref="SpoolFullException"/>, 452 4.3.1) while
/// taking one would leave less than <c>spoolTuning.minFreeBytes</c> free, so status records of the
/// mail already queued still fit and delivery goes on. If a commit fails anyway (the disk filled
/// from outside, an I/O error), FasterLog stops for good; the spool then refuses new mail, and
/// <see cref="MaintainAsync"/> reopens the log from its last commit once there is space again.
/// </summary>
public sealed class SpoolLog : IAsyncDisposable
{
    // In FastCommitMode every commit is a record in the log itself, and recovery scans forward
    // from the last metadata file for them. So the metadata file need not be rewritten on every
    // commit (a second synchronous write on the commit path): once per 1000 commits, as
    // Garnet's AOF does, bounds the forward scan at recovery while halving the commit cost.
    private const int MetadataEveryCommits = 1000;

    /// <summary>One open FasterLog with its device, metadata and committer; replaced whole when the log is reopened.</summary>
    private sealed class Handle
    {
        public required FasterLog Log { get; init; }
        public required IDevice Device { get; init; }
        public required SpoolCommitFile Commits { get; init; }
        public required GroupCommitter Committer { get; init; }
        public int Users;
        public volatile bool Closing;
        public bool Closed;
    }

    private readonly string _directory;
    private readonly SpoolOptions _options;
    private readonly FileStream _lock;
    private readonly Log _logger;
    private readonly int _maxChunk;
    private readonly SpoolSpace _space;
    private readonly SpoolIndex _index = new();
    // Appends of one message's chunks and head need no global ordering, but the entry objects
    // are reused per appender; a small pool avoids allocating them per message.
    private readonly ConcurrentBag<MessageHeadEntry> _headEntries = new();
    private readonly ConcurrentBag<MessageChunkEntry> _chunkEntries = new();
    // Address ranges whose records were lost when the log was reopened after a failed commit.
    private readonly List<(long From, long Until)> _lost = new();
    private volatile bool _anyLost;
    private readonly SemaphoreSlim _maintenance = new(1, 1);
    private readonly SpoolRawReader _files;
    private readonly SpoolHoles _holes;
    private volatile Handle _handle;
    private volatile string? _failure;
    private long _commitsBefore, _waitersBefore;
    private long _nextCompaction;
    private long _reopenFrom;
    private bool _disposed;

    private SpoolLog(string directory, SpoolOptions options, FileStream lockFile, Log logger)
    {
        _directory = directory;
        _options = options;
        _lock = lockFile;
        _logger = logger;
        _space = new SpoolSpace(directory, options.MinFreeBytes);
        // A record must fit in one page with room to spare for FasterLog's header.
        _maxChunk = (1 << options.PageSizeBits) / 2;
        _handle = OpenHandle();
        _files = new SpoolRawReader(directory, options, _handle.Log.HeaderSize);
        _holes = new SpoolHoles(directory, options.SegmentSizeBits, logger);
    }

    public string Directory => _directory;

    public long BeginAddress => _handle.Log.BeginAddress;
    public long TailAddress => _handle.Log.TailAddress;
    public long CommittedUntilAddress => _handle.Log.CommittedUntilAddress;
    public long Commits => _commitsBefore + _handle.Committer.Commits;
    public long CommittedWaiters => _waitersBefore + _handle.Committer.CommittedWaiters;

    /// <summary>Messages the spool holds that are not finished (what the log must keep).</summary>
    public int LiveMessages => _index.Count;

    /// <summary>
    /// True while new mail must be refused: a commit failed and the log waits to be reopened, or
    /// the disk has less than the reserve (plus room for a small message, <see cref="MailHeadroom"/>)
    /// free. Cheap (the free space is read at most every 100 ms): a session asks at every MAIL; the
    /// message's real size is checked again when it is appended.
    /// </summary>
    public bool IsFull => _failure is not null || !SpaceAllows(MailHeadroom);

    private const long MailHeadroom = 1L << 20;

    /// <summary>Why the spool refuses mail, for logs; null when it does not.</summary>
    public string? Problem => _failure ?? (IsFull ? $"less than {_space.ReserveBytes} bytes free on the spool's disk" : null);

    private bool SpaceAllows(long bytes)
    {
        var log = _handle.Log;
        return _space.Allows(bytes, log.TailAddress, log.FlushedUntilAddress);
    }

    internal SpoolIndex Index => _index;
    internal SpoolOptions Options => _options;
    internal Log Logger => _logger;

    /// <summary>How many pages the current log's head lags its tail by (<see cref="PageTurnHeadroom"/>; for tests).</summary>
    internal long HeadLagPages => PageTurnHeadroom.HeadLagPages(_handle.Log);

    /// <summary>
    /// Opens (or creates) the spool. Takes an exclusive lock on the directory so two relays can
    /// never write one log. FasterLog recovers to its last commit while opening.
    /// </summary>
    public static SpoolLog Open(string directory, SpoolOptions options, Log logger)
    {
        System.IO.Directory.CreateDirectory(directory);
        FileStream lockFile;
        try
        {
            lockFile = new FileStream(Path.Combine(directory, "relay.lock"), FileMode.OpenOrCreate,
                FileAccess.ReadWrite, FileShare.None);
        }
        catch (IOException e)
        {
            throw new ConfigException($"spool {directory} is in use by another relay ({e.Message})");
        }
        try
        {
            // Under the lock: the layout file is read (or written, for a new spool) by one relay.
            options = SpoolFormat.Reconcile(directory, options, logger);
            return new SpoolLog(directory, options, lockFile, logger);
        }
        catch
        {
            lockFile.Dispose();
            throw;
        }
    }

    private Handle OpenHandle()
    {
        var commits = new SpoolCommitFile(Path.Combine(_directory, "commits"), MetadataEveryCommits, _logger);
        string segments = Path.Combine(_directory, "queue.log");
        var device = new SpoolDevice(
            _options.DirectWrites
                ? new LogFileDevice(segments)
                : Devices.CreateLogDevice(segments, preallocateFile: false, deleteOnClose: false, recoverDevice: true),
            commits);
        var settings = new FasterLogSettings
        {
            LogCommitManager = commits,
            LogDevice = device,
            PageSizeBits = _options.PageSizeBits,
            MemorySizeBits = _options.MemorySizeBits,
            SegmentSizeBits = _options.SegmentSizeBits,
            // Per-entry checksums catch a torn or corrupted tail; they also allow FastCommitMode,
            // which puts commit metadata in the log itself: one O_SYNC write per group commit
            // instead of a log write plus a new commit file.
            LogChecksum = LogChecksumType.PerEntry,
            FastCommitMode = true,
            RemoveOutdatedCommits = false, // SpoolCommitFile keeps its own two
            TryRecoverLatest = true,
            // Off: it only feeds iterators that read uncommitted records, and this spool reads
            // committed ones only. On, every append allocated a closure and bumped FASTER's epoch.
            AutoRefreshSafeTailAddress = false,
        };
        FasterLog log;
        try
        {
            log = new FasterLog(settings);
            PageTurnHeadroom.Apply(log, 1L << (_options.MemorySizeBits - _options.PageSizeBits), _logger);
        }
        catch
        {
            device.Dispose();
            throw;
        }
        return new Handle
        {
            Log = log,
            Device = device,
            Commits = commits,
            Committer = new GroupCommitter(log, Classify, OnCommitFailed),
        };
    }

    /// <summary>Enters an operation on the current log; the log is not closed (reopened) until every one has left.</summary>
    private Handle Enter()
    {
        var handle = _handle;
        Interlocked.Increment(ref handle.Users);
        if (handle.Closing || _disposed)
        {
            Interlocked.Decrement(ref handle.Users);
            throw new SpoolUnavailableException(_disposed ? "the spool is closed" : "the spool log is being reopened");
        }
        return handle;
    }

    private static void Leave(Handle handle) => Interlocked.Decrement(ref handle.Users);

    private Exception Classify(Exception e)
    {
        if (e is SpoolFullException or SpoolUnavailableException)
            return e;
        if (_space.Refresh() < Math.Max(_space.ReserveBytes, 1L << 20))
            return new SpoolFullException($"insufficient storage on the spool's disk ({e.Message})");
        return new SpoolUnavailableException($"spool write failed: {e.Message}", e);
    }

    private void OnCommitFailed(Exception e)
    {
        if (_disposed)
            return;
        var classified = Classify(e);
        if (Interlocked.CompareExchange(ref _failure, classified.Message, null) is null)
            _logger.Error($"spool: commit failed, refusing new mail until the log is reopened: {classified.Message}");
    }

    /// <summary>Refuses a new message when the spool is failed or taking it would eat into the reserve.</summary>
    private void Admit(long size)
    {
        if (_failure is { } failure)
            throw _space.Refresh() < _space.ReserveBytes
                ? new SpoolFullException($"insufficient storage on the spool's disk ({failure})")
                : new SpoolUnavailableException($"the spool log failed and is not reopened yet ({failure})");
        if (!SpaceAllows(size))
            throw new SpoolFullException($"insufficient storage on the spool's disk: {size} bytes would eat into the reserve of {_space.ReserveBytes}");
    }

    /// <summary>
    /// Appends a message (chunk records for all but its last part, then the head). Returns the
    /// head's address and the first record's address. Not durable until <see cref="WaitForCommitAsync"/>.
    /// Throws <see cref="SpoolFullException"/> when the disk cannot take it.
    /// </summary>
    public async ValueTask<(long Head, long First)> AppendMessageAsync(ulong id, Envelope envelope, MessageBuffer body)
    {
        long length = body.ContentLength;
        Admit(length);
        var handle = Enter();
        var head = _headEntries.TryTake(out var h) ? h : new MessageHeadEntry();
        head.ChunkAddresses.Clear();
        bool added = false;
        try
        {
            // Before the first record: truncation must not pass the tail as it is now.
            _index.Reserve(id, handle.Log.TailAddress);
            long first = -1;
            long offset = 0;
            // Leave room in the head's page for the envelope (recipients can be many).
            int inlineBudget = _maxChunk / 2;
            if (length > inlineBudget)
            {
                var chunk = _chunkEntries.TryTake(out var c) ? c : new MessageChunkEntry();
                try
                {
                    while (length - offset > inlineBudget)
                    {
                        chunk.Id = id;
                        chunk.Body = body;
                        chunk.Offset = offset;
                        chunk.Length = (int)Math.Min(_maxChunk - 64, length - offset - inlineBudget / 2);
                        long address = await EnqueueAsync(handle.Log, chunk);
                        if (first < 0)
                            first = address;
                        head.ChunkAddresses.Add(address);
                        offset += chunk.Length;
                    }
                }
                finally
                {
                    chunk.Body = null!;
                    _chunkEntries.Add(chunk);
                }
            }
            head.Prepare(id, envelope, body, offset);
            long headAddress = await EnqueueAsync(handle.Log, head);
            if (first < 0)
                first = headAddress;
            _index.Add(id, first, headAddress, length, envelope.Recipients.Length);
            added = true;
            return (headAddress, first);
        }
        catch (FasterException e)
        {
            // FasterLog refuses appends once a commit failed (its log is then unusable).
            OnCommitFailed(e);
            throw Classify(e);
        }
        finally
        {
            if (!added)
                _index.Remove(id);
            head.Body = null!;
            head.Envelope = null!;
            _headEntries.Add(head);
            Leave(handle);
        }
    }

    private static ValueTask<long> EnqueueAsync<T>(FasterLog log, T entry) where T : ILogEnqueueEntry
    {
        // The fast path appends into the in-memory page; when the log's memory is full (the disk
        // is behind), wait for space rather than spin.
        if (log.TryEnqueue(entry, out long address))
            return ValueTask.FromResult(address);
        return log.EnqueueAsync(entry);
    }

    /// <summary>
    /// Completes when the record at the address is durable (shared with other appenders). Fails
    /// (never completes as committed) when the record was lost because the log was reopened.
    /// </summary>
    public Task WaitForCommitAsync(long address)
    {
        var handle = _handle;
        if (_anyLost && IsLost(address))
            return Task.FromException(new SpoolUnavailableException("the record was lost when the spool log was reopened after a failed commit"));
        return handle.Committer.WaitForCommitAsync(address);
    }

    private bool IsLost(long address)
    {
        lock (_lost)
        {
            foreach (var (from, until) in _lost)
                if (address >= from && address < until)
                    return true;
        }
        return false;
    }

    /// <summary>
    /// Appends a status record; it becomes durable with the next group commit. The spool's index
    /// takes the outcome first (a <see cref="StatusFlags.Done"/> message leaves it), in the same
    /// order as the log, so a compaction copy never carries an older state than a status before it.
    /// </summary>
    public async ValueTask AppendStatusAsync(StatusRecord record)
    {
        var handle = Enter();
        try
        {
            var entry = new StatusEntry { Record = record };
            while (true)
            {
                lock (_index.Gate)
                {
                    _index.Apply(record);
                    if (_failure is not null)
                        throw new SpoolUnavailableException($"the spool is not writable ({_failure}); the outcome is kept in memory only");
                    if (handle.Log.TryEnqueue(entry, out _))
                        break;
                }
                // The log's memory is full until the disk catches up; applying again is harmless.
                await Task.Delay(1);
            }
            handle.Committer.RequestCommit();
        }
        catch (FasterException e)
        {
            OnCommitFailed(e);
            throw Classify(e);
        }
        finally
        {
            Leave(handle);
        }
    }

    /// <summary>Reads a message back from the log: its envelope and its bytes in a new buffer.</summary>
    public ValueTask<(Envelope Envelope, MessageBuffer Body)> ReadMessageAsync(long headAddress) => ReadMessageAsync(0, headAddress);

    /// <summary>
    /// Reads a message back by id: where compaction moved it, else at <paramref name="headAddress"/>
    /// (the address it was appended at).
    /// </summary>
    public async ValueTask<(Envelope Envelope, MessageBuffer Body)> ReadMessageAsync(ulong id, long headAddress)
    {
        var handle = Enter();
        var body = MessageBuffer.Rent();
        try
        {
            var (owner, length) = await ReadRecordAsync(handle, CurrentHead(id, headAddress));
            Envelope envelope;
            long total;
            using (owner)
            {
                var record = owner.Memory.Span[..length];
                if (!HeadLayout.TryRead(record, out var layout) || (id != 0 && layout.Id != id))
                    throw new InvalidDataException($"no message head at spool address {headAddress}");
                envelope = MessageHead.TryParseEnvelope(record, layout)
                           ?? throw new InvalidDataException($"damaged message head at spool address {headAddress}");
                total = layout.TotalLength;
                for (int i = 0; i < layout.ChunkCount; i++)
                {
                    long chunkAddress = layout.ChunkAddress(owner.Memory.Span, i);
                    var (chunkOwner, chunkLength) = await ReadRecordAsync(handle, chunkAddress);
                    using (chunkOwner)
                    {
                        var chunk = chunkOwner.Memory.Span[..chunkLength];
                        if (!RecordFormat.TryReadCommonHeader(chunk, out var kind, out ulong chunkId)
                            || kind != RecordKind.MessageChunk || chunkId != layout.Id)
                            throw new InvalidDataException($"bad chunk record at spool address {chunkAddress}");
                        body.Write(chunk[(RecordFormat.CommonHeaderSize + 8)..]);
                    }
                }
                body.Write(owner.Memory.Span.Slice(layout.InlineOffset, layout.InlineLength));
            }
            if (body.ContentLength != total)
                throw new InvalidDataException($"message {QueueIdGenerator.ToString(id)} has {body.ContentLength} bytes in the spool, expected {total}");
            return (envelope, body);
        }
        catch
        {
            body.Release();
            throw;
        }
        finally
        {
            Leave(handle);
        }
    }

    /// <summary>Reads only a message's envelope (a delivery that dropped it while the message waited, an admin command).</summary>
    public async ValueTask<Envelope> ReadEnvelopeAsync(ulong id, long headAddress)
    {
        var handle = Enter();
        try
        {
            var (owner, length) = await ReadRecordAsync(handle, CurrentHead(id, headAddress));
            using (owner)
            {
                var record = owner.Memory.Span[..length];
                if (!HeadLayout.TryRead(record, out var layout) || (id != 0 && layout.Id != id))
                    throw new InvalidDataException($"no message head at spool address {headAddress}");
                return MessageHead.TryParseEnvelope(record, layout)
                       ?? throw new InvalidDataException($"damaged message head at spool address {headAddress}");
            }
        }
        finally
        {
            Leave(handle);
        }
    }

    private long CurrentHead(ulong id, long headAddress) =>
        id != 0 && _index.TryGet(id, out var entry) && entry.Appended ? entry.Head : headAddress;

    private ValueTask<(IMemoryOwner<byte> Owner, int Length)> ReadRecordAsync(Handle handle, long address)
    {
        // A record that is on disk: one pread from its segment file (checksum verified), no queueing.
        var log = handle.Log;
        if (address >= log.BeginAddress && address < log.FlushedUntilAddress
            && _files.TryReadRecord(address, out var owner, out int length))
        {
            if (address + log.HeaderSize + length <= log.FlushedUntilAddress)
                return ValueTask.FromResult((owner, length));
            owner.Dispose();
        }
        return ReadThroughLogAsync(handle, address);
    }

    private static async ValueTask<(IMemoryOwner<byte> Owner, int Length)> ReadThroughLogAsync(Handle handle, long address)
    {
        var (owner, length) = await handle.Log.ReadAsync(address, MemoryPool<byte>.Shared);
        if (owner is null)
            throw new InvalidDataException($"nothing readable at spool address {address} (the log spans {handle.Log.BeginAddress} to {handle.Log.CommittedUntilAddress})");
        return (owner, length);
    }

    internal delegate void RecordVisitor(long address, ReadOnlySpan<byte> record);

    /// <summary>
    /// Walks every committed record from the log's begin address (recovery). Every record's
    /// checksum is verified here (FasterLog's iterator skips the check for records it serves from
    /// memory, which after a restart is the whole last page). An unreadable record (checksum
    /// mismatch, impossible length) is skipped: the walk resumes at the next record that verifies,
    /// on the same page when the damaged one's length can be trusted, else at the next page, and
    /// the report says what it stepped over.
    /// </summary>
    internal unsafe SpoolScanReport Scan(RecordVisitor visit)
    {
        var handle = Enter();
        try
        {
            var log = handle.Log;
            int headerSize = log.HeaderSize;
            var report = new SpoolScanReport();
            using var raw = new SpoolRawReader(_directory, _options, headerSize);
            long end = log.CommittedUntilAddress;
            long address = log.BeginAddress;
            while (address < end)
            {
                using var iterator = log.Scan(address, end);
                long next = address;
                try
                {
                    while (iterator.UnsafeGetNext(out byte* entry, out int length, out long current, out next))
                    {
                        try
                        {
                            ulong stored = *(ulong*)(entry - headerSize);
                            if (stored != Utility.XorBytes(entry - 4, length + 4))
                            {
                                report.Damaged.Add((current, next, "checksum mismatch"));
                                continue;
                            }
                            report.Records++;
                            visit(current, new ReadOnlySpan<byte>(entry, length));
                        }
                        finally
                        {
                            iterator.UnsafeRelease();
                        }
                    }
                    break;
                }
                catch (FasterException e)
                {
                    long resume = raw.NextGoodRecord(next, end);
                    report.Damaged.Add((next, resume, e.Message));
                    address = resume;
                }
            }
            report.Tail = raw.DescribeTail(end);
            return report;
        }
        finally
        {
            Leave(handle);
        }
    }

    /// <summary>Releases the log before <paramref name="address"/> (the oldest record still needed).</summary>
    public void TruncateUntil(long address)
    {
        var handle = Enter();
        try
        {
            if (address > handle.Log.BeginAddress)
            {
                handle.Log.TruncateUntil(address);
                handle.Committer.RequestCommit(evenIfNothingNew: true);
            }
        }
        finally
        {
            Leave(handle);
        }
    }

    /// <summary>Bytes the log's segment files take on disk (what <c>du</c> of the spool shows, metadata aside).</summary>
    public long SizeOnDisk()
    {
        long total = 0;
        foreach (var file in new DirectoryInfo(_directory).EnumerateFiles("queue.log.*"))
        {
            try
            {
                total += file.Length;
            }
            catch (IOException)
            {
            }
        }
        return total;
    }

    /// <summary>
    /// Housekeeping, called every second by the host: reopens the log after a failed commit once
    /// there is space; otherwise truncates the log to the oldest record a live message needs and,
    /// when most of the log is history, copies the live messages of its oldest segment forward
    /// (compaction) so the next truncation can drop that segment.
    /// </summary>
    public Task MaintainAsync() => MaintainAsync(compactNow: false);

    /// <param name="compactNow">Compact now, without waiting for <see cref="CompactionInterval"/> (tests).</param>
    internal async Task MaintainAsync(bool compactNow)
    {
        if (!await _maintenance.WaitAsync(0))
            return;
        try
        {
            if (_failure is not null)
            {
                await TryReopenAsync();
                return;
            }
            // Truncate before compacting: a message moved now is truncated away at the next call,
            // by when any delivery that read its old address has long finished reading.
            TruncateToOldestNeeded();
            long now = Environment.TickCount64;
            if (compactNow || now >= _nextCompaction)
            {
                _nextCompaction = now + (long)CompactionInterval.TotalMilliseconds;
                // A run that moved something may have left more of the log's head to move: the
                // next run comes at the next housekeeping tick, not after the interval. Under a
                // steady load with deferrals (a soak at 5,700 msg/s, 5 % of recipients deferred)
                // one segment per interval fell behind the writes and the log grew by ~90 MB a
                // minute over its live bytes; the interval is only the pause while nothing moves.
                if (await new SpoolCompactor(this).RunAsync() > 0)
                    _nextCompaction = now;
            }
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _logger.Warn($"spool housekeeping: {ExceptionText.Of(e)}");
        }
        finally
        {
            _maintenance.Release();
        }
    }

    /// <summary>How often compaction looks for work while it finds none (truncation runs on every <see cref="MaintainAsync"/>; after a run that moved messages the next comes at once).</summary>
    internal static readonly TimeSpan CompactionInterval = TimeSpan.FromSeconds(5);

    private void TruncateToOldestNeeded()
    {
        long committed = CommittedUntilAddress;
        long oldest = _index.OldestAddress(committed);
        if (oldest > BeginAddress)
            TruncateUntil(Math.Min(oldest, committed));
        _files.ForgetBefore(BeginAddress);
        _holes.PunchUntil(Math.Min(BeginAddress, _handle.Commits.DurableBegin));
    }

    /// <summary>Free space on the spool's disk now (compaction checks it before copying).</summary>
    internal long FreeBytes => _space.Refresh();

    internal long SegmentSize => 1L << _options.SegmentSizeBits;

    /// <summary>Compaction: appends a copy of a chunk record as it is.</summary>
    internal async ValueTask<long> AppendRawAsync(ReadOnlyMemory<byte> record)
    {
        var handle = Enter();
        try
        {
            var entry = new RawEntry(record);
            return await EnqueueAsync(handle.Log, entry);
        }
        finally
        {
            Leave(handle);
        }
    }

    /// <summary>
    /// Compaction: appends the copied head of a live message with a snapshot of its state taken
    /// under the index gate, so no status record of the message lies between the snapshot and the
    /// copy. Returns -1 when the message finished or moved meanwhile (no copy appended).
    /// </summary>
    internal async ValueTask<long> AppendCopiedHeadAsync(ulong id, long expectedFirst, CopiedHeadEntry copy)
    {
        var handle = Enter();
        try
        {
            while (true)
            {
                lock (_index.Gate)
                {
                    if (!_index.TryGet(id, out var entry) || entry.First != expectedFirst)
                        return -1;
                    (copy.Attempts, copy.Flags, copy.States) = _index.Snapshot(id);
                    if (handle.Log.TryEnqueue(copy, out long address))
                        return address;
                }
                await Task.Delay(1);
            }
        }
        finally
        {
            Leave(handle);
        }
    }

    /// <summary>Compaction: reads one record.</summary>
    internal async ValueTask<(IMemoryOwner<byte> Owner, int Length)> ReadRecordAsync(long address)
    {
        var handle = Enter();
        try
        {
            return await ReadRecordAsync(handle, address);
        }
        finally
        {
            Leave(handle);
        }
    }

    /// <summary>
    /// After a failed commit: waits for every operation on the failed log to leave, closes it,
    /// and opens the files again (FasterLog recovers to its last good commit). Records appended
    /// after that commit were never acknowledged; their addresses are remembered as lost and
    /// stepped over with padding, so no later record can be mistaken for one of them.
    /// </summary>
    private async Task TryReopenAsync()
    {
        if (_space.Refresh() < _space.ReserveBytes)
            return; // still full: wait for space
        var old = _handle;
        if (!old.Closed)
        {
            old.Closing = true;
            var deadline = Environment.TickCount64 + 10_000;
            while (Volatile.Read(ref old.Users) > 0)
            {
                if (Environment.TickCount64 > deadline)
                {
                    old.Closing = false;
                    _logger.Warn("spool: cannot reopen the log yet, operations on it are still running");
                    return;
                }
                await Task.Delay(10);
            }
            _reopenFrom = old.Log.TailAddress;
            await CloseHandleAsync(old);
        }
        long oldTail = _reopenFrom;
        Handle fresh;
        try
        {
            fresh = OpenHandle();
        }
        catch (Exception e)
        {
            _logger.Error($"spool: reopening the log failed: {ExceptionText.Of(e)}");
            return; // _handle stays closed: every operation fails until the next attempt
        }
        long recovered = fresh.Log.CommittedUntilAddress;
        if (oldTail > recovered)
        {
            lock (_lost)
                _lost.Add((recovered, oldTail));
            _anyLost = true;
            while (fresh.Log.TailAddress < oldTail)
            {
                var padding = new PaddingEntry((int)Math.Min(_maxChunk, Math.Max(oldTail - fresh.Log.TailAddress - fresh.Log.HeaderSize, RecordFormat.CommonHeaderSize)));
                if (!fresh.Log.TryEnqueue(padding, out _))
                    await fresh.Log.EnqueueAsync(padding);
            }
        }
        int dropped = _index.RemoveFrom(recovered);
        _handle = fresh;
        try
        {
            await fresh.Log.CommitAsync();
        }
        catch (Exception e)
        {
            OnCommitFailed(e);
            return;
        }
        _failure = null;
        _logger.Info($"spool: log reopened at address {recovered}; accepting mail again"
                     + (dropped > 0 ? $" ({dropped} message(s) that were never acknowledged are gone)" : ""));
    }

    private async Task CloseHandleAsync(Handle handle)
    {
        handle.Closed = true;
        _commitsBefore += handle.Committer.Commits;
        _waitersBefore += handle.Committer.CommittedWaiters;
        await handle.Committer.DisposeAsync();
        try
        {
            handle.Log.Dispose();
        }
        catch (Exception e)
        {
            _logger.Warn($"spool: closing the log: {ExceptionText.Of(e)}");
        }
        handle.Device.Dispose();
        handle.Commits.Dispose();
    }

    public async ValueTask DisposeAsync()
    {
        if (_disposed)
            return;
        var handle = _handle;
        if (handle.Closed)
        {
            _disposed = true;
            _files.Dispose();
            _lock.Dispose();
            return;
        }
        handle.Closing = true;
        var deadline = Environment.TickCount64 + 10_000;
        while (Volatile.Read(ref handle.Users) > 0 && Environment.TickCount64 < deadline)
            await Task.Delay(10);
        await handle.Committer.DisposeAsync();
        if (_failure is null)
        {
            try
            {
                await handle.Log.CommitAsync();
            }
            catch (Exception e)
            {
                _logger.Error($"final spool commit failed: {ExceptionText.Of(e)}");
            }
        }
        _disposed = true;
        await CloseHandleAsync(handle);
        _files.Dispose();
        _lock.Dispose();
    }
}

/// <summary>What a recovery scan found besides the records themselves.</summary>
internal sealed class SpoolScanReport
{
    public long Records;
    /// <summary>Damaged stretches inside the committed log: where, where the walk resumed, why.</summary>
    public List<(long From, long Resume, string Reason)> Damaged = new();
    /// <summary>What lies in the files after the committed tail (never acknowledged, or torn), or null.</summary>
    public string? Tail;
}

/// <summary>A record copied as it is (compaction copies chunks unchanged).</summary>
internal sealed class RawEntry(ReadOnlyMemory<byte> record) : ILogEnqueueEntry
{
    public int SerializedLength => record.Length;
    public void SerializeTo(Span<byte> dest) => record.Span.CopyTo(dest);
}
