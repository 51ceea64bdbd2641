namespace NativeRelay.Spool;

/// <summary>
/// Free space on the spool's filesystem (statvfs through <see cref="DriveInfo"/>, which accepts
/// any path on Unix), read at most every 100 ms so the append path can ask on every message. In
/// between, what the log appended since the reading counts as used: the free space at the reading
/// covered the log up to the address flushed then, and everything after it still has to be written.
/// </summary>
internal sealed class SpoolSpace(string directory, long reserveBytes)
{
    private const long RefreshMilliseconds = 100;

    private readonly object _gate = new();
    private long _free = long.MaxValue;
    private long _flushedAtReading;
    private long _readAt;
    private bool _stale = true;

    /// <summary>New mail is refused when taking it would leave less than this free.</summary>
    public long ReserveBytes => reserveBytes;

    /// <summary>Bytes still free once the log up to <paramref name="tail"/> is on disk.</summary>
    public long Available(long tail, long flushed)
    {
        long now = Environment.TickCount64;
        lock (_gate)
        {
            if (_stale || now - _readAt >= RefreshMilliseconds)
            {
                _free = Read();
                _flushedAtReading = flushed;
                _readAt = now;
                _stale = false;
            }
            return _free == long.MaxValue ? long.MaxValue : _free - Math.Max(0, tail - _flushedAtReading);
        }
    }

    /// <summary>Whether <paramref name="bytes"/> more leave the reserve intact.</summary>
    public bool Allows(long bytes, long tail, long flushed) => Available(tail, flushed) - bytes >= reserveBytes;

    /// <summary>Free bytes now (a fresh reading).</summary>
    public long Refresh()
    {
        long free = Read();
        lock (_gate)
            _stale = true; // the next Available() reads again, with the addresses it is given
        return free;
    }

    private long Read()
    {
        try
        {
            return new DriveInfo(directory).AvailableFreeSpace;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException)
        {
            return long.MaxValue; // cannot tell: do not refuse mail because of the probe itself
        }
    }
}
