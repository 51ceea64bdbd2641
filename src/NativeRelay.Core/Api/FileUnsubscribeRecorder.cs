using System.Text;

namespace NativeRelay.Api;

/// <summary>
/// The stand-in suppression list: one line per unsubscribe (<c>UNIXSECONDS RECIPIENT SENDERDOMAIN LISTID</c>)
/// appended to a file in the spool directory and fsynced before the POST is answered, read back
/// at start. Recipients and domains are kept in lower case.
/// </summary>
public sealed class FileUnsubscribeRecorder : IUnsubscribeRecorder
{
    private readonly string _path;
    private readonly object _gate = new();
    private HashSet<string> _pairs = new(StringComparer.Ordinal);

    private FileUnsubscribeRecorder(string path) => _path = path;

    public static FileUnsubscribeRecorder Open(string spoolDirectory)
    {
        var recorder = new FileUnsubscribeRecorder(Path.Combine(spoolDirectory, "unsubscribes"));
        if (File.Exists(recorder._path))
        {
            foreach (var line in File.ReadLines(recorder._path))
            {
                var f = line.Split(' ');
                if (f.Length >= 3)
                    recorder._pairs.Add(Key(f[1], f[2]));
            }
        }
        return recorder;
    }

    public int Count
    {
        get
        {
            lock (_gate)
                return _pairs.Count;
        }
    }

    public ValueTask RecordAsync(string recipient, string senderDomain, string listId)
    {
        var line = Encoding.UTF8.GetBytes($"{DateTimeOffset.UtcNow.ToUnixTimeSeconds()} {recipient.ToLowerInvariant()} {senderDomain.ToLowerInvariant()} {listId}\n");
        lock (_gate)
        {
            // Small and rare: written and flushed under the lock, on the request's thread-pool thread.
            using (var file = new FileStream(_path, PrivateFile.Write(FileMode.Append)))
            {
                file.Write(line);
                file.Flush(flushToDisk: true);
            }
            var next = new HashSet<string>(_pairs, StringComparer.Ordinal) { Key(recipient, senderDomain) };
            Volatile.Write(ref _pairs, next);
        }
        return ValueTask.CompletedTask;
    }

    /// <summary>Only unsubscribes are kept here (the suppression list is off), and they are per sender domain, whatever the pool.</summary>
    public bool IsSuppressed(string recipient, string? pool, string senderDomain) => Volatile.Read(ref _pairs).Contains(Key(recipient, senderDomain));

    private static string Key(string recipient, string domain) => recipient.ToLowerInvariant() + " " + domain.ToLowerInvariant();
}
