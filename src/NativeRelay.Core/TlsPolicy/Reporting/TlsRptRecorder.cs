using System.Globalization;

namespace NativeRelay.TlsPolicies.Reporting;

/// <summary>
/// Counts each delivery connection's TLS outcome per policy domain and UTC day (RFC 8460 4),
/// for the domains whose route carries a policy domain (they publish "_smtp._tls" or MTA-STS):
/// every other connection never reaches it. Counts are kept in memory and written, when changed,
/// every few seconds and at stop, to SPOOL/tls-rpt/DATE/DOMAIN.json (atomically: temporary file,
/// fsync, rename), so a restart loses at most the last few seconds and a report survives it.
/// Thread-safe: the delivery loops record from their own threads.
/// </summary>
public sealed class TlsRptRecorder : IDisposable
{
    private readonly string _directory;
    private readonly Func<DateTimeOffset> _now;
    private readonly Action<string>? _log;
    private readonly Dictionary<(string Date, string Domain), TlsRptDay> _days = new();
    private readonly HashSet<(string, string)> _dirty = new();
    private readonly Timer? _timer;
    private readonly object _writeLock = new();

    public TlsRptRecorder(string directory, Func<DateTimeOffset>? now = null, Action<string>? log = null, TimeSpan? flushEvery = null)
    {
        _directory = directory;
        _now = now ?? (() => DateTimeOffset.UtcNow);
        _log = log;
        var every = flushEvery ?? TimeSpan.FromSeconds(5);
        if (every > TimeSpan.Zero)
            _timer = new Timer(_ => Flush(), null, every, every);
    }

    public string Directory => _directory;

    public static string DayName(DateTimeOffset time) => time.UtcDateTime.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);

    /// <summary>Records one session (a connection, or a refused attempt at one): success when <paramref name="resultType"/> is null.</summary>
    public void Record(string domain, string? record, string policyType, string[] policyString, string[] mxHost,
        string? resultType, string? receivingMx, string? receivingIp)
    {
        string date = DayName(_now());
        lock (_days)
        {
            var day = DayLocked(date, domain);
            if (record is not null)
                day.Record = record;
            if (!day.Policies.TryGetValue(policyType, out var counts))
                day.Policies[policyType] = counts = new TlsRptPolicyCounts { PolicyType = policyType };
            if (policyString.Length > 0)
                counts.PolicyString = policyString;
            if (mxHost.Length > 0)
                counts.MxHost = mxHost;
            if (resultType is null)
                counts.Successes++;
            else
            {
                var key = new TlsRptFailureKey(resultType, receivingMx, receivingIp);
                counts.Failures[key] = counts.Failures.GetValueOrDefault(key) + 1;
            }
            _dirty.Add((date, domain));
        }
    }

    private TlsRptDay DayLocked(string date, string domain)
    {
        if (_days.TryGetValue((date, domain), out var day))
            return day;
        // Counts of the day written before a restart continue.
        day = Load(PathOf(date, domain)) ?? new TlsRptDay { Date = date, Domain = domain };
        _days[(date, domain)] = day;
        // Days past are written out and forgotten: memory holds about one day of domains.
        foreach (var old in _days.Keys.Where(k => string.CompareOrdinal(k.Date, date) < 0 && !_dirty.Contains(k)).ToList())
            _days.Remove(old);
        return day;
    }

    public string PathOf(string date, string domain) => Path.Combine(_directory, date, domain + ".json");

    public static TlsRptDay? Load(string path)
    {
        try
        {
            return File.Exists(path) ? TlsRptDay.FromJson(File.ReadAllBytes(path)) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }

    /// <summary>Writes every changed day (the timer calls it; so does <see cref="Dispose"/>).</summary>
    public void Flush()
    {
        lock (_writeLock)
        {
            List<(string Date, string Domain, byte[] Json)> pending;
            lock (_days)
            {
                pending = new(_dirty.Count);
                foreach (var key in _dirty)
                    pending.Add((key.Item1, key.Item2, _days[key].ToJson()));
                _dirty.Clear();
            }
            foreach (var (date, domain, json) in pending)
            {
                try
                {
                    WriteAtomically(PathOf(date, domain), json);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException)
                {
                    _log?.Invoke($"TLS-RPT: cannot write the counts of {domain} for {date}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
                    lock (_days)
                        _dirty.Add((date, domain));
                }
            }
        }
    }

    internal static void WriteAtomically(string path, byte[] bytes)
    {
        string directory = Path.GetDirectoryName(path)!;
        System.IO.Directory.CreateDirectory(directory);
        string temporary = path + ".tmp";
        using (var file = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            file.Write(bytes);
            file.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
        NativeRelay.Local.MaildirWriter.TryFsyncDirectory(directory, out _);
    }

    public void Dispose()
    {
        _timer?.Dispose();
        Flush();
    }
}
