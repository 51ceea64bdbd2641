using System.Buffers;
using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;
using NativeRelay.Config;

namespace NativeRelay.Spool;

/// <summary>
/// Reads FasterLog's segment files directly, for what FasterLog's own reads cannot do: step over
/// a damaged record to the next one that verifies, say what lies after the committed tail, and
/// read one record that is on disk with a plain pread (a few microseconds when the page cache has
/// it, where FasterLog's ReadAsync goes through its device queue: recovery reads a million heads
/// this way). Safe to share between threads. A record on disk is a 12-byte header (checksum 8: XOR of the 8-byte words of
/// length and payload; length 4, negative for FasterLog's own commit records), the payload, and
/// padding to 4 bytes; no record crosses a page, and a zero length means the rest of the page is
/// empty.
/// </summary>
internal sealed class SpoolRawReader : IDisposable
{
    private enum Kind { Empty, Valid, Damaged }

    private readonly string _directory;
    private readonly int _pageBits;
    private readonly int _segmentBits;
    private readonly int _headerSize;
    private readonly Dictionary<long, SafeFileHandle?> _files = new();
    private readonly object _gate = new();

    public SpoolRawReader(string directory, SpoolOptions options, int headerSize)
    {
        _directory = directory;
        _pageBits = options.PageSizeBits;
        _segmentBits = options.SegmentSizeBits;
        _headerSize = headerSize;
    }

    private long PageSize => 1L << _pageBits;
    private long NextPage(long address) => ((address >> _pageBits) + 1) << _pageBits;

    private SafeFileHandle? File(long segment)
    {
        lock (_gate)
        {
            if (_files.TryGetValue(segment, out var file) && file is not null)
                return file;
            string path = Path.Combine(_directory, $"queue.log.{segment}");
            try
            {
                file = System.IO.File.Exists(path) ? System.IO.File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete) : null;
            }
            catch (IOException)
            {
                file = null;
            }
            if (file is not null)
                _files[segment] = file;
            return file;
        }
    }

    /// <summary>Closes the files of segments before <paramref name="address"/> (truncated: an open file would keep its blocks allocated).</summary>
    public void ForgetBefore(long address)
    {
        long segment = address >> _segmentBits;
        lock (_gate)
        {
            foreach (var key in _files.Keys.Where(k => k < segment).ToList())
            {
                _files[key]?.Dispose();
                _files.Remove(key);
            }
        }
    }

    /// <summary>
    /// Reads the record at <paramref name="address"/> from its segment file and verifies its
    /// checksum. The caller makes sure the record is on disk (before the flushed address) and not
    /// truncated; false sends it to FasterLog's own read.
    /// </summary>
    public unsafe bool TryReadRecord(long address, out IMemoryOwner<byte> owner, out int length)
    {
        owner = null!;
        length = 0;
        byte[] buffer = ArrayPool<byte>.Shared.Rent(4096);
        try
        {
            int got = Read(address, buffer.AsSpan(0, 4096));
            if (got < _headerSize)
                return false;
            int payload = BinaryPrimitives.ReadInt32LittleEndian(buffer.AsSpan(8));
            if (payload <= 0 || payload > PageSize)
                return false;
            int total = _headerSize + payload;
            if (total > buffer.Length)
            {
                var bigger = ArrayPool<byte>.Shared.Rent(total);
                buffer.AsSpan(0, got).CopyTo(bigger);
                ArrayPool<byte>.Shared.Return(buffer);
                buffer = bigger;
            }
            if (got < total && Read(address + got, buffer.AsSpan(got, total - got)) < total - got)
                return false;
            ulong actual;
            fixed (byte* p = buffer)
                actual = FASTER.core.Utility.XorBytes(p + 8, payload + 4);
            if (actual != BinaryPrimitives.ReadUInt64LittleEndian(buffer))
                return false;
            owner = MemoryPool<byte>.Shared.Rent(payload);
            buffer.AsSpan(_headerSize, payload).CopyTo(owner.Memory.Span);
            length = payload;
            return true;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private int Read(long address, Span<byte> into)
    {
        var file = File(address >> _segmentBits);
        if (file is null)
            return 0;
        long offset = address & ((1L << _segmentBits) - 1);
        int total = 0;
        while (total < into.Length)
        {
            int n = RandomAccess.Read(file, into[total..], offset + total);
            if (n <= 0)
                break;
            total += n;
        }
        return total;
    }

    /// <summary>What is at <paramref name="address"/>: nothing (rest of page empty), a record that verifies, or a damaged one (with its size when its length is usable).</summary>
    private unsafe Kind Examine(long address, out long size, out bool isCommit)
    {
        size = 0;
        isCommit = false;
        long inPage = address & (PageSize - 1);
        if (inPage + _headerSize > PageSize)
            return Kind.Empty;
        Span<byte> header = stackalloc byte[12];
        if (Read(address, header[.._headerSize]) < _headerSize)
            return Kind.Empty;
        int length = BinaryPrimitives.ReadInt32LittleEndian(header[8..]);
        if (length == 0)
            return Kind.Empty;
        isCommit = length < 0;
        long payload = Math.Abs((long)length);
        long recordSize = _headerSize + ((payload + 3) & ~3L);
        if (inPage + recordSize > PageSize)
            return Kind.Damaged;
        size = recordSize;
        var bytes = new byte[payload + 4];
        if (Read(address + 8, bytes) < bytes.Length)
            return Kind.Damaged;
        ulong expected = BinaryPrimitives.ReadUInt64LittleEndian(header);
        ulong actual;
        fixed (byte* p = bytes)
            actual = FASTER.core.Utility.XorBytes(p, bytes.Length);
        return actual == expected ? Kind.Valid : Kind.Damaged;
    }

    /// <summary>
    /// The first record after the damage at or after <paramref name="from"/> that verifies (where
    /// the walk can resume), or <paramref name="end"/>. After a damaged record the next candidate
    /// is where its length says the next record starts; if that does not verify either, the next
    /// page (every page starts with a record).
    /// </summary>
    public long NextGoodRecord(long from, long end)
    {
        long address = from;
        bool pastDamage = false;
        while (address < end)
        {
            switch (Examine(address, out long size, out _))
            {
                case Kind.Empty:
                    address = NextPage(address);
                    continue;
                case Kind.Valid when pastDamage:
                    return address;
                case Kind.Valid:
                    // The iterator failed here but the bytes on disk verify: resume after this
                    // record so the walk always moves on.
                    return address + size;
            }
            pastDamage = true;
            if (size > 0 && address + size < end && Examine(address + size, out _, out _) == Kind.Valid)
                return address + size;
            address = NextPage(address);
        }
        return end;
    }

    /// <summary>
    /// Describes what the segment files hold after the committed tail: records that were written
    /// but never covered by a commit (their sessions never got a 250), and where a torn or damaged
    /// record stopped the recovery. Null when there is nothing there.
    /// </summary>
    public string? DescribeTail(long tail)
    {
        long address = tail;
        long limit = tail + (64L << 20);
        int complete = 0, commits = 0, commitsAfterDamage = 0;
        long damagedAt = -1;
        bool pageStart = (address & (PageSize - 1)) == 0;
        while (address < limit)
        {
            var kind = Examine(address, out long size, out bool isCommit);
            if (kind == Kind.Empty)
            {
                if (pageStart)
                    break; // an empty page: the end of what was ever written
                address = NextPage(address);
                pageStart = true;
                continue;
            }
            pageStart = false;
            if (kind == Kind.Valid)
            {
                if (isCommit)
                {
                    commits++;
                    if (damagedAt >= 0)
                        commitsAfterDamage++;
                }
                else
                {
                    complete++;
                }
                address += size;
                if ((address & (PageSize - 1)) == 0)
                    pageStart = true;
                continue;
            }
            if (damagedAt < 0)
                damagedAt = address;
            long next = NextGoodRecord(address, limit);
            if (next >= limit)
                break;
            address = next;
            pageStart = (address & (PageSize - 1)) == 0;
        }
        if (complete == 0 && commits == 0 && damagedAt < 0)
            return null;
        string text = $"dropped what follows the last commit at address {tail}: {complete} complete record(s) that no commit covers (never acknowledged)";
        if (damagedAt >= 0)
            text += $", and a torn or damaged record at address {damagedAt}";
        if (commitsAfterDamage > 0)
            text += $"; {commitsAfterDamage} commit point(s) lie beyond the damage, so mail acknowledged after it is lost";
        return text;
    }

    public void Dispose()
    {
        lock (_gate)
        {
            foreach (var file in _files.Values)
                file?.Dispose();
            _files.Clear();
        }
    }
}
