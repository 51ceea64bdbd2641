using System.Runtime.InteropServices;
using NativeRelay.Telemetry;

namespace NativeRelay.Spool;

/// <summary>
/// Gives the disk back the truncated front of the segment the log begins in. TruncateUntil
/// deletes whole segment files only, so with 256 MiB segments a drained backlog would keep up to
/// a segment of dead records on disk; punching a hole (fallocate PUNCH_HOLE, file size kept) below
/// the begin address frees those blocks at once. Only below the begin address recorded in the
/// commit metadata on disk (<see cref="SpoolCommitFile.DurableBegin"/>): a recovery never starts
/// before it, so it never reads a hole. In steps of at least 1 MiB; where the filesystem cannot
/// punch holes, it stops trying.
/// </summary>
internal sealed partial class SpoolHoles(string directory, int segmentBits, Log log)
{
    private const int FallocKeepSize = 1, FallocPunchHole = 2;
    private const long Step = 1L << 20;

    private long _punchedUntil;
    private bool _unsupported;

    public void PunchUntil(long durableBegin)
    {
        if (_unsupported || OperatingSystem.IsWindows())
            return;
        long segmentStart = durableBegin >> segmentBits << segmentBits;
        long from = Math.Max(_punchedUntil, segmentStart);
        long until = durableBegin & ~4095L;
        if (until - from < Step)
            return;
        string path = Path.Combine(directory, $"queue.log.{durableBegin >> segmentBits}");
        try
        {
            using var file = File.OpenHandle(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete);
            bool added = false;
            file.DangerousAddRef(ref added);
            try
            {
                if (Fallocate((int)file.DangerousGetHandle(), FallocPunchHole | FallocKeepSize, from - segmentStart, until - from) != 0)
                {
                    int errno = Marshal.GetLastPInvokeError();
                    if (errno is 95 or 38) // EOPNOTSUPP, ENOSYS
                    {
                        _unsupported = true;
                        log.Info("spool: this filesystem cannot punch holes; truncated space comes back a segment file at a time");
                    }
                    return;
                }
            }
            finally
            {
                if (added)
                    file.DangerousRelease();
            }
            _punchedUntil = until;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The segment is gone (deleted meanwhile) or not writable: nothing to give back here.
        }
    }

    [LibraryImport("libc", EntryPoint = "fallocate", SetLastError = true)]
    private static partial int Fallocate(int fd, int mode, long offset, long length);
}
