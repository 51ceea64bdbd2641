using System.Buffers.Binary;
using System.Runtime.InteropServices;
using FASTER.core;
using NativeRelay.Telemetry;

namespace NativeRelay.Spool;

/// <summary>
/// FasterLog's commit metadata (where the log begins, how far it is committed), kept so that a
/// failed write can never cost the log. FASTER's own manager writes the new file in place and
/// ignores write errors, then deletes the older ones: on a full disk that leaves an empty newest
/// file and nothing older, and recovery starts from nothing. Here each write goes to a temporary
/// file that is fsynced and renamed over (then the directory fsynced), the previous good file is
/// kept, a file whose checksum does not match is skipped at recovery, and a failed write is logged
/// and leaves <see cref="DurableBegin"/> where it was, so <see cref="SpoolDevice"/> keeps every
/// log segment the metadata on disk may still point into.
///
/// File layout (little-endian): "NRCM", version 1 (4), begin address (8), until address (8),
/// metadata length (4), FASTER's metadata, FNV-1a 64 of everything before it (8).
/// </summary>
internal sealed partial class SpoolCommitFile : ILogCommitManager
{
    private const uint Magic = 0x4D43524E; // "NRCM"
    private const int HeaderSize = 4 + 4 + 8 + 8 + 4;

    private readonly string _directory;
    private readonly int _throttle;
    private readonly Log _log;
    private long _count;
    private long _failures;

    /// <param name="throttle">Write only every Nth commit unless FASTER forces it (FastCommitMode recovers the rest from commit records in the log).</param>
    public SpoolCommitFile(string directory, int throttle, Log log)
    {
        _directory = directory;
        _throttle = throttle;
        _log = log;
        Directory.CreateDirectory(directory);
        foreach (long n in ListCommits())
        {
            if (TryRead(n, out long begin, out _, out _))
            {
                DurableBegin = begin;
                break;
            }
        }
    }

    /// <summary>The begin address recorded in the newest metadata file on disk: no log segment at or after it may be deleted.</summary>
    public long DurableBegin { get; private set; }

    private string PathOf(long commitNum) => Path.Combine(_directory, $"commit.{commitNum}");

    // FASTER's own manager kept its files here (spools written before this class existed).
    private string LegacyDirectory => Path.Combine(_directory, "log-commits");

    public void Commit(long beginAddress, long untilAddress, byte[] commitMetadata, long commitNum, bool forceWriteMetadata)
    {
        if (!forceWriteMetadata && _throttle > 0 && _count++ % _throttle != 0)
            return;
        string temp = Path.Combine(_directory, "commit.tmp");
        try
        {
            var bytes = new byte[HeaderSize + commitMetadata.Length + 8];
            BinaryPrimitives.WriteUInt32LittleEndian(bytes, Magic);
            BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(4), 1);
            BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(8), beginAddress);
            BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(16), untilAddress);
            BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(24), commitMetadata.Length);
            commitMetadata.CopyTo(bytes.AsSpan(HeaderSize));
            BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(bytes.Length - 8), Fnv1a(bytes.AsSpan(0, bytes.Length - 8)));
            using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None, 1))
            {
                file.Write(bytes);
                file.Flush(flushToDisk: true);
            }
            File.Move(temp, PathOf(commitNum), overwrite: true);
            SyncDirectory(_directory);
            DurableBegin = beginAddress;
            if (Interlocked.Exchange(ref _failures, 0) > 0)
                _log.Info("spool: commit metadata is being written again");
            RemoveOlderThanPrevious(commitNum);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Not thrown: FASTER calls this from its commit worker, where an exception would stall
            // every later commit. The previous file stays valid; log segments stay on disk.
            if (Interlocked.Increment(ref _failures) == 1)
                _log.Error($"spool: cannot write commit metadata ({ExceptionText.Of(e)}); log files are kept until it can");
            try
            {
                File.Delete(temp);
            }
            catch (IOException)
            {
                // best effort: the next write replaces it
            }
        }
    }

    private void RemoveOlderThanPrevious(long newest)
    {
        long previous = -1;
        foreach (long n in ListCommits())
        {
            if (n >= newest)
                continue;
            if (previous < 0)
            {
                previous = n; // keep one older file in case the newest is ever unreadable
                continue;
            }
            RemoveCommit(n);
        }
        if (Directory.Exists(LegacyDirectory))
        {
            try
            {
                Directory.Delete(LegacyDirectory, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    public IEnumerable<long> ListCommits()
    {
        var numbers = new List<long>();
        Collect(_directory, "commit.", "", numbers);
        Collect(LegacyDirectory, "commit.", ".0", numbers);
        numbers.Sort();
        numbers.Reverse();
        return numbers;
    }

    private static void Collect(string directory, string prefix, string suffix, List<long> into)
    {
        if (!Directory.Exists(directory))
            return;
        foreach (var path in Directory.EnumerateFiles(directory, prefix + "*"))
        {
            var name = Path.GetFileName(path.AsSpan());
            if (!name.EndsWith(suffix))
                continue;
            var number = name[prefix.Length..(name.Length - suffix.Length)];
            if (long.TryParse(number, out long n) && !into.Contains(n))
                into.Add(n);
        }
    }

    public byte[] GetCommitMetadata(long commitNum)
    {
        if (TryRead(commitNum, out _, out _, out var metadata))
            return metadata;
        string legacy = Path.Combine(LegacyDirectory, $"commit.{commitNum}.0");
        if (File.Exists(legacy))
        {
            // FASTER's format: length (4) and the metadata, padded to a sector.
            var bytes = File.ReadAllBytes(legacy);
            int length = bytes.Length >= 4 ? BinaryPrimitives.ReadInt32LittleEndian(bytes) : 0;
            if (length > 0 && length <= bytes.Length - 4)
                return bytes.AsSpan(4, length).ToArray();
        }
        // FASTER catches this and tries the next older commit.
        throw new InvalidDataException($"spool commit metadata {commitNum} is missing or damaged");
    }

    private bool TryRead(long commitNum, out long begin, out long until, out byte[] metadata)
    {
        begin = until = 0;
        metadata = [];
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(PathOf(commitNum));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return false;
        }
        if (bytes.Length < HeaderSize + 8 || BinaryPrimitives.ReadUInt32LittleEndian(bytes) != Magic)
            return false;
        int length = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(24));
        if (length < 0 || HeaderSize + length + 8 != bytes.Length)
            return false;
        if (BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(bytes.Length - 8)) != Fnv1a(bytes.AsSpan(0, bytes.Length - 8)))
            return false;
        begin = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(8));
        until = BinaryPrimitives.ReadInt64LittleEndian(bytes.AsSpan(16));
        metadata = bytes.AsSpan(HeaderSize, length).ToArray();
        return true;
    }

    public void RemoveCommit(long commitNum)
    {
        try
        {
            File.Delete(PathOf(commitNum));
        }
        catch (IOException)
        {
        }
    }

    public void RemoveAllCommits()
    {
        foreach (long n in ListCommits())
            RemoveCommit(n);
    }

    public void OnRecovery(long commitNum)
    {
        // Files newer than the one recovery used could not be read: drop them so they never shadow a good one.
        foreach (long n in ListCommits())
            if (n > commitNum)
                RemoveCommit(n);
    }

    public void Dispose()
    {
    }

    private static ulong Fnv1a(ReadOnlySpan<byte> data)
    {
        ulong hash = 14695981039346656037UL;
        foreach (byte b in data)
        {
            hash ^= b;
            hash *= 1099511628211UL;
        }
        return hash;
    }

    /// <summary>fsync of the directory, so the rename itself is durable.</summary>
    private static void SyncDirectory(string directory)
    {
        const int O_RDONLY = 0, O_DIRECTORY = 0x10000;
        int fd = Open(directory, O_RDONLY | O_DIRECTORY);
        if (fd < 0)
            return; // not Linux-like: the rename is as durable as the platform makes it
        try
        {
            if (Fsync(fd) != 0)
                throw new IOException($"fsync of {directory} failed: errno {Marshal.GetLastPInvokeError()}");
        }
        finally
        {
            Close(fd);
        }
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close")]
    private static partial int Close(int fd);
}
