using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;
using NativeRelay.Interop;

namespace NativeRelay.Spool;

/// <summary>
/// One log segment file of <see cref="LogFileDevice"/>. Writes go through a descriptor opened
/// <c>O_DIRECT | O_DSYNC</c>: the bytes go from FasterLog's page straight to the disk, and the
/// write returns once they are durable, with no page-cache copy and no writeback to wait for.
/// <para>
/// What a synchronous write costs depends on what else it changes. Into blocks that already hold
/// written bytes it is one data write and one cache flush. Growing the file, or filling a hole,
/// adds a synchronous inode or extent write, a third device round trip and a third wake-up of the
/// committing thread. So the file is prepared ahead of the log's tail: a window past the highest
/// byte written is filled with zeros (<see cref="PrepareStep"/>), and a group commit, which
/// rewrites the tail's last sectors, lands in blocks that are already there. Zeros past the tail
/// are what FasterLog and <see cref="SpoolRawReader"/> read as "the rest of the page is empty",
/// the same as the end of a file.
/// </para>
/// <para>
/// Safety of the zero fill rests on one rule, kept under <c>_gate</c>: a fill only starts at or
/// past the end of every data write issued so far, and a data write that overlaps a fill in
/// flight waits for it. So zeros never land on a record.
/// </para>
/// </summary>
internal sealed unsafe class LogSegmentFile : IDisposable
{
    /// <summary>O_DIRECT's alignment for buffer, offset and length (the disk's logical block; FasterLog's sector).</summary>
    internal const int DirectAlignment = 512;
    /// <summary>The file system's block: a data write allocates whole blocks, so a fill starts on one.</summary>
    private const int BlockSize = 4096;
    internal const int MinFillBytes = 64 * 1024;
    internal const int MaxFillBytes = 1024 * 1024;
    /// <summary>Writes up to this size go O_DIRECT (see <see cref="GoesDirect"/>).</summary>
    internal const int DirectWriteLimit = 64 * 1024;

    private readonly object _gate = new();
    private readonly string _path;
    private readonly long _length;
    private readonly SafeFileHandle _writer;   // O_DIRECT | O_DSYNC, or O_DSYNC where the file system refuses O_DIRECT
    private readonly SafeFileHandle _reader;   // buffered: reads are rare (recovery, a message read back) and like the page cache
    private SafeFileHandle? _bufferedWriter;    // O_DSYNC through the page cache: big writes, and any O_DIRECT cannot take
    private long _writtenEnd;    // end of the highest data write issued
    private long _preparedEnd;   // [0, _preparedEnd) is allocated and written (zeros or data)
    private long _fillStart = -1;
    private long _fillEnd;
    private bool _fillFailed;    // a fill failed (a full disk): stop filling this file, writes go on growing it
    private bool _disposed;

    public LogSegmentFile(string path, long length)
    {
        _path = path;
        _length = length;
        _writer = Open(path, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_DSYNC | Libc.O_DIRECT, out bool isDirect);
        IsDirect = isDirect;
        try
        {
            _reader = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            // What is already in the file (a segment reopened after a restart) is allocated; preparation goes on past it.
            _writtenEnd = _preparedEnd = RandomAccess.GetLength(_reader) / BlockSize * BlockSize;
        }
        catch
        {
            _writer.Dispose();
            throw;
        }
    }

    /// <summary>Whether writes bypass the page cache (false where the file system refuses O_DIRECT, e.g. an old tmpfs).</summary>
    public bool IsDirect { get; }

    /// <summary>Bytes from the start known to be written (zeros or data): writes below it change no metadata.</summary>
    public long PreparedEnd
    {
        get { lock (_gate) return _preparedEnd; }
    }

    /// <summary>Writes <paramref name="length"/> bytes at <paramref name="offset"/>, durably, before returning.</summary>
    public void Write(nint source, long offset, int length)
    {
        lock (_gate)
        {
            while (_fillStart >= 0 && offset < _fillEnd && offset + length > _fillStart)
                Monitor.Wait(_gate);
            if (offset + length > _writtenEnd)
                _writtenEnd = offset + length;
        }
        RandomAccess.Write(GoesDirect(source, offset, length) ? _writer : BufferedWriter(), new ReadOnlySpan<byte>((void*)source, length), offset);
    }

    /// <summary>
    /// Small aligned writes (a group commit's tail) go O_DIRECT. Big ones (whole pages of big
    /// messages) go through the page cache: ext4 serialises O_DIRECT writes that allocate, and
    /// 100 KiB mail relayed at half the rate that way, while the page cache takes FasterLog's
    /// concurrent page flushes as they come and writes them back together.
    /// </summary>
    private bool GoesDirect(nint source, long offset, int length) =>
        IsDirect && IsSmall(length) && ((source | (nint)offset | length) & (DirectAlignment - 1)) == 0;

    /// <summary>Whether a write of this size is the small kind that preparation serves.</summary>
    public static bool IsSmall(long length) => length <= DirectWriteLimit;

    /// <summary>Reads up to <paramref name="length"/> bytes at <paramref name="offset"/>; fewer past the end of the file.</summary>
    public int Read(nint destination, long offset, int length)
    {
        var span = new Span<byte>((void*)destination, length);
        int total = 0;
        while (total < length)
        {
            int n = RandomAccess.Read(_reader, span[total..], offset + total);
            if (n == 0)
                break;
            total += n;
        }
        return total;
    }

    /// <summary>
    /// Whether the prepared blocks reach less than half <paramref name="window"/> past the highest
    /// data written, and there is something left to prepare: not when the file is prepared to its
    /// end (a segment smaller than the window) or filling has failed (a full disk).
    /// </summary>
    public bool NeedsPreparing(long window)
    {
        lock (_gate)
        {
            long start = NextFillStart();
            return !_disposed && !_fillFailed && start < _length && start - _writtenEnd < window / 2;
        }
    }

    // Under _gate: a fill goes on from the prepared end, or from the first whole block past the data.
    private long NextFillStart() => Math.Max(_preparedEnd, AlignUp(_writtenEnd, BlockSize));

    /// <summary>
    /// Fills the next piece of the window past the highest data written with zeros. The piece
    /// grows with the lead (64 KiB when the log's tail is right behind, up to 1 MiB), so a commit
    /// that catches up with a fill waits for a short write only. Returns false when the window is
    /// full, the file is prepared to its end, or a fill failed.
    /// </summary>
    public bool PrepareStep(long window, ReadOnlySpan<byte> zeros)
    {
        long start, end;
        lock (_gate)
        {
            if (_disposed || _fillFailed)
                return false;
            start = NextFillStart();
            long lead = start - _writtenEnd;
            if (lead >= window || start >= _length)
                return false;
            long piece = Math.Clamp(lead, MinFillBytes, Math.Min(MaxFillBytes, zeros.Length));
            end = Math.Min(start + piece / BlockSize * BlockSize, _length);
            _fillStart = start;
            _fillEnd = end;
        }
        bool done = false;
        try
        {
            RandomAccess.Write(BufferedWriter(), zeros[..(int)(end - start)], start);
            done = true;
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or UnauthorizedAccessException)
        {
            // Most likely a full disk: the log's own writes will say so. Zeros written in part are harmless.
        }
        finally
        {
            lock (_gate)
            {
                if (done)
                    _preparedEnd = end;
                else
                    _fillFailed = true;
                _fillStart = -1;
                Monitor.PulseAll(_gate);
            }
        }
        return done;
    }

    private static long AlignUp(long value, long alignment) => (value + alignment - 1) / alignment * alignment;

    private SafeFileHandle BufferedWriter()
    {
        lock (_gate)
        {
            // Not opened anew once closed: a late write would leak the descriptor (and write a deleted file).
            ObjectDisposedException.ThrowIf(_disposed, this);
            return _bufferedWriter ??= Open(_path, Libc.O_WRONLY | Libc.O_CREAT | Libc.O_DSYNC, out _);
        }
    }

    private static SafeFileHandle Open(string path, int flags, out bool direct)
    {
        direct = (flags & Libc.O_DIRECT) != 0;
        int fd = Libc.Open(path, flags | Libc.O_CLOEXEC, 0x180 /* 0600: mail, readable by the relay only (the spool is searchable by all, for the maildrop) */);
        if (fd < 0 && direct && Marshal.GetLastPInvokeError() == Libc.EINVAL)
        {
            // The file system does not do O_DIRECT (tmpfs before Linux 6.6, some network file systems).
            direct = false;
            fd = Libc.Open(path, (flags & ~Libc.O_DIRECT) | Libc.O_CLOEXEC, 0x180);
        }
        if (fd < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            throw new IOException($"cannot open log segment {path}: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
        }
        return new SafeFileHandle(fd, ownsHandle: true);
    }

    public void Dispose()
    {
        lock (_gate)
        {
            _disposed = true;
            // A fill in flight finishes (or fails) on its own; the handles' reference counts keep
            // the descriptors open until it has.
        }
        _writer.Dispose();
        _reader.Dispose();
        _bufferedWriter?.Dispose(); // no longer set once _disposed is, so safe to read outside the gate
    }
}
