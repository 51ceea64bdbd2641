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
/// </summary>
public sealed class SpoolLog : IAsyncDisposable
{
    private readonly FasterLog _log;
    private readonly IDevice _device;
    private readonly GroupCommitter _committer;
    private readonly FileStream _lock;
    private readonly Log _logger;
    private readonly int _maxChunk;
    // Appends of one message's chunks and head need no global ordering, but the entry objects
    // are reused per appender; a small pool avoids allocating them per message.
    private readonly ConcurrentBag<MessageHeadEntry> _headEntries = new();
    private readonly ConcurrentBag<MessageChunkEntry> _chunkEntries = new();

    private readonly ILogCommitManager _commitManager;

    private SpoolLog(FasterLog log, IDevice device, ILogCommitManager commitManager, FileStream lockFile, Log logger, int pageSizeBits)
    {
        _commitManager = commitManager;
        _log = log;
        _device = device;
        _lock = lockFile;
        _logger = logger;
        _committer = new GroupCommitter(log);
        // A record must fit in one page with room to spare for FasterLog's header.
        _maxChunk = (1 << pageSizeBits) / 2;
    }

    public string Directory { get; private init; } = "";

    public long BeginAddress => _log.BeginAddress;
    public long TailAddress => _log.TailAddress;
    public long CommittedUntilAddress => _log.CommittedUntilAddress;
    public long Commits => _committer.Commits;
    public long CommittedWaiters => _committer.CommittedWaiters;

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

        var device = Devices.CreateLogDevice(Path.Combine(directory, "queue.log"),
            preallocateFile: false, deleteOnClose: false, recoverDevice: true);
        // In FastCommitMode every commit is a record in the log itself, and recovery scans forward
        // from the last metadata file for them. So the metadata file need not be rewritten on every
        // commit (a second synchronous write on the commit path): once per 1000 commits, as
        // Garnet's AOF does, bounds the forward scan at recovery while halving the commit cost.
        const int MetadataEveryCommits = 1000;
        var commitManager = new DeviceLogCommitCheckpointManager(
            new LocalStorageNamedDeviceFactory(),
            new DefaultCheckpointNamingScheme(Path.Combine(directory, "commits")),
            removeOutdated: true,
            fastCommitThrottleFreq: MetadataEveryCommits);
        var settings = new FasterLogSettings
        {
            LogCommitManager = commitManager,
            LogDevice = device,
            PageSizeBits = options.PageSizeBits,
            MemorySizeBits = options.MemorySizeBits,
            SegmentSizeBits = options.SegmentSizeBits,
            // Per-entry checksums catch a torn or corrupted tail; they also allow FastCommitMode,
            // which puts commit metadata in the log itself: one O_SYNC write per group commit
            // instead of a log write plus a new commit file.
            LogChecksum = LogChecksumType.PerEntry,
            FastCommitMode = true,
            RemoveOutdatedCommits = true,
            TryRecoverLatest = true,
            AutoRefreshSafeTailAddress = true,
        };
        var log = new FasterLog(settings);
        return new SpoolLog(log, device, commitManager, lockFile, logger, options.PageSizeBits) { Directory = directory };
    }

    /// <summary>
    /// Appends a message (chunk records for all but its last part, then the head). Returns the
    /// head's address and the first record's address. Not durable until <see cref="WaitForCommitAsync"/>.
    /// </summary>
    public async ValueTask<(long Head, long First)> AppendMessageAsync(ulong id, Envelope envelope, MessageBuffer body)
    {
        var head = _headEntries.TryTake(out var h) ? h : new MessageHeadEntry();
        head.ChunkAddresses.Clear();
        long first = -1;
        long offset = 0;
        long length = body.ContentLength;
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
                    long address = await EnqueueAsync(chunk);
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
        try
        {
            long headAddress = await EnqueueAsync(head);
            return (headAddress, first < 0 ? headAddress : first);
        }
        finally
        {
            head.Body = null!;
            head.Envelope = null!;
            _headEntries.Add(head);
        }
    }

    private ValueTask<long> EnqueueAsync<T>(T entry) where T : ILogEnqueueEntry
    {
        // The fast path appends into the in-memory page; when the log's memory is full (the disk
        // is behind), wait for space rather than spin.
        if (_log.TryEnqueue(entry, out long address))
            return ValueTask.FromResult(address);
        return _log.EnqueueAsync(entry);
    }

    /// <summary>Completes when the record at the address is durable (shared with other appenders).</summary>
    public Task WaitForCommitAsync(long address) => _committer.WaitForCommitAsync(address);

    /// <summary>Appends a status record; it becomes durable with the next group commit.</summary>
    public async ValueTask AppendStatusAsync(StatusRecord record)
    {
        var entry = new StatusEntry { Record = record };
        if (!_log.TryEnqueue(entry, out _))
            await _log.EnqueueAsync(entry);
        _committer.RequestCommit();
    }

    /// <summary>Reads a message back from the log: its envelope and its bytes in a new buffer.</summary>
    public async ValueTask<(Envelope Envelope, MessageBuffer Body)> ReadMessageAsync(long headAddress)
    {
        var (owner, length) = await _log.ReadAsync(headAddress, MemoryPool<byte>.Shared);
        MessageHead head;
        var body = MessageBuffer.Rent();
        try
        {
            using (owner)
            {
                head = MessageHead.TryParse(owner.Memory.Span[..length])
                       ?? throw new InvalidDataException($"no message head at spool address {headAddress}");
                foreach (long chunkAddress in head.ChunkAddresses)
                {
                    var (chunkOwner, chunkLength) = await _log.ReadAsync(chunkAddress, MemoryPool<byte>.Shared);
                    using (chunkOwner)
                    {
                        var chunk = chunkOwner.Memory.Span[..chunkLength];
                        if (!RecordFormat.TryReadCommonHeader(chunk, out var kind, out ulong chunkId)
                            || kind != RecordKind.MessageChunk || chunkId != head.Id)
                            throw new InvalidDataException($"bad chunk record at spool address {chunkAddress}");
                        body.Write(chunk[(RecordFormat.CommonHeaderSize + 8)..]);
                    }
                }
                body.Write(owner.Memory.Span.Slice(head.InlineOffset, head.InlineLength));
            }
            if (body.ContentLength != head.TotalLength)
                throw new InvalidDataException($"message {QueueIdGenerator.ToString(head.Id)} has {body.ContentLength} bytes in the spool, expected {head.TotalLength}");
            return (head.Envelope, body);
        }
        catch
        {
            body.Release();
            throw;
        }
    }

    /// <summary>Walks every record from the log's begin address (recovery).</summary>
    public IEnumerable<(long Address, IMemoryOwner<byte> Record, int Length)> ScanAll()
    {
        using var iterator = _log.Scan(_log.BeginAddress, _log.TailAddress);
        while (true)
        {
            IMemoryOwner<byte> owner;
            int length;
            long address;
            try
            {
                if (!iterator.GetNext(MemoryPool<byte>.Shared, out owner, out length, out address))
                    yield break;
            }
            catch (Exception e) when (e is FasterException or InvalidDataException)
            {
                // A corrupt entry (checksum mismatch) ends what can be trusted of this log.
                _logger.Error($"spool scan stopped at a corrupt record: {e.Message}");
                yield break;
            }
            yield return (address, owner, length);
        }
    }

    /// <summary>Releases the log before <paramref name="address"/> (the oldest record still needed).</summary>
    public void TruncateUntil(long address)
    {
        if (address > _log.BeginAddress)
        {
            _log.TruncateUntil(address);
            _committer.RequestCommit();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _committer.DisposeAsync();
        try
        {
            await _log.CommitAsync();
        }
        catch (Exception e)
        {
            _logger.Error($"final spool commit failed: {e.Message}");
        }
        _log.Dispose();
        _commitManager.Dispose();
        _device.Dispose();
        _lock.Dispose();
    }
}
