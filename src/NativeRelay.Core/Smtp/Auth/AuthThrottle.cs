using System.Collections.Concurrent;
using System.Net;

namespace NativeRelay.Smtp.Auth;

/// <summary>
/// Remembers failed AUTH attempts per client address for a while, so that the delay before a
/// 535 grows with the failures of every session from that address, not only the current one:
/// reconnecting (or opening many connections at once) does not buy a brute-force attack fresh,
/// fast attempts. Only delays are added; nobody is locked out, so users behind a shared address
/// are slowed, never refused.
/// </summary>
public sealed class AuthThrottle
{
    public static readonly TimeSpan Window = TimeSpan.FromMinutes(15);
    private const int MaxTrackedAddresses = 100_000;

    private readonly ConcurrentDictionary<IPAddress, Entry> _failures = new();
    private readonly Func<long> _clock;

    public AuthThrottle(Func<long>? clockMilliseconds = null)
    {
        _clock = clockMilliseconds ?? (static () => Environment.TickCount64);
    }

    private sealed class Entry
    {
        public int Count;
        public long Since;
    }

    /// <summary>Failures from this address within the window, before this one.</summary>
    public int RecentFailures(IPAddress address)
    {
        if (!_failures.TryGetValue(address, out var entry))
            return 0;
        lock (entry)
            return _clock() - entry.Since > Window.TotalMilliseconds ? 0 : entry.Count;
    }

    /// <summary>Counts a failure; returns the failures from this address within the window, this one included.</summary>
    public int RecordFailure(IPAddress address)
    {
        if (_failures.Count >= MaxTrackedAddresses)
            Prune();
        var entry = _failures.GetOrAdd(address, static _ => new Entry());
        long now = _clock();
        lock (entry)
        {
            if (entry.Count == 0 || now - entry.Since > Window.TotalMilliseconds)
            {
                entry.Count = 0;
                entry.Since = now;
            }
            return ++entry.Count;
        }
    }

    /// <summary>
    /// The delay before answering a failed AUTH: the n-th failure (counted in this session or,
    /// if more, from the same address within the window) waits n steps, at most <paramref name="max"/>.
    /// </summary>
    public static TimeSpan Delay(int sessionFailures, int addressFailures, double stepSeconds, TimeSpan max)
    {
        double seconds = Math.Max(sessionFailures, addressFailures) * stepSeconds;
        return seconds >= max.TotalSeconds ? max : TimeSpan.FromSeconds(Math.Max(0, seconds));
    }

    private void Prune()
    {
        long now = _clock();
        foreach (var (address, entry) in _failures)
        {
            bool old;
            lock (entry)
                old = now - entry.Since > Window.TotalMilliseconds;
            if (old)
                _failures.TryRemove(address, out _);
        }
        if (_failures.Count >= MaxTrackedAddresses)
            _failures.Clear(); // a flood of distinct addresses: forget rather than grow
    }
}
