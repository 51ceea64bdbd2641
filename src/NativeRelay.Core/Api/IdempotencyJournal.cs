using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;

namespace NativeRelay.Api;

/// <summary>
/// Idempotency keys: the first answer to a (token, key) pair is kept for a day, so a retried
/// request creates nothing new and gets that answer again. Answers are JSON lines in
/// <c>idempotency.journal</c> in the spool directory, appended and fsynced after the spool commit
/// and before the 202 is sent; at start the file is read back and rewritten without the expired
/// lines. Two requests with the same key at once: the second waits for the first's answer.
/// Not covered: a crash between the spool commit and the journal write (the client saw no answer,
/// retries, and the messages are queued twice: at least once, like SMTP).
/// </summary>
public sealed class IdempotencyJournal
{
    public static readonly TimeSpan Lifetime = TimeSpan.FromDays(1);

    private readonly string _path;
    private readonly object _fileGate = new();
    private readonly ConcurrentDictionary<string, IdempotencyRecord> _done = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, TaskCompletionSource<IdempotencyRecord?>> _inFlight = new(StringComparer.Ordinal);

    private IdempotencyJournal(string path) => _path = path;

    public int Count => _done.Count;

    /// <summary>The fleet's keys, when this relay is a node of one (null: this journal alone).</summary>
    public IIdempotencyStore? Shared { get; set; }

    public static IdempotencyJournal Open(string spoolDirectory, DateTimeOffset now)
    {
        var journal = new IdempotencyJournal(Path.Combine(spoolDirectory, "idempotency.journal"));
        long oldest = (now - Lifetime).ToUnixTimeMilliseconds();
        if (File.Exists(journal._path))
        {
            foreach (var line in File.ReadLines(journal._path))
            {
                IdempotencyRecord? record;
                try
                {
                    record = JsonSerializer.Deserialize(line, ApiJsonContext.Default.IdempotencyRecord);
                }
                catch (JsonException)
                {
                    continue; // a torn last line after a crash: its request was never answered
                }
                if (record is not null && record.AtUnixMs >= oldest)
                    journal._done[Key(record.Token, record.Key)] = record;
            }
        }
        journal.Rewrite();
        return journal;
    }

    /// <summary>
    /// The kept answer for this key, or null when the caller is the first: it must then call
    /// <see cref="Complete"/> (with its answer, or null if it failed and kept nothing).
    /// </summary>
    public async Task<IdempotencyRecord?> BeginAsync(string token, string key, DateTimeOffset now)
    {
        var k = Key(token, key);
        while (true)
        {
            if (_done.TryGetValue(k, out var done) && done.AtUnixMs >= (now - Lifetime).ToUnixTimeMilliseconds())
                return done;
            var mine = new TaskCompletionSource<IdempotencyRecord?>(TaskCreationOptions.RunContinuationsAsynchronously);
            var current = _inFlight.GetOrAdd(k, mine);
            if (ReferenceEquals(current, mine))
            {
                // First here; the fleet may have the key from another node (kept in memory, not in the journal: the fleet keeps it).
                if (Shared is { } shared && await shared.ClaimAsync(token, key, now).ConfigureAwait(false) is { } elsewhere)
                {
                    _done[k] = elsewhere;
                    if (_inFlight.TryRemove(k, out var waiting))
                        waiting.TrySetResult(elsewhere);
                    return elsewhere;
                }
                return null;
            }
            var answer = await current.Task.ConfigureAwait(false);
            if (answer is not null)
                return answer;
            // The first one failed: try again (this caller may become the first).
        }
    }

    /// <summary>
    /// <see cref="Complete"/>, then keeps the answer for the fleet too (when there is one), before
    /// the client gets it: a retry sent to another node gets the same answer.
    /// </summary>
    public async Task CompleteAsync(string token, string key, IdempotencyRecord? answer)
    {
        Complete(token, key, answer);
        if (Shared is { } shared)
            await shared.CompleteAsync(token, key, answer).ConfigureAwait(false);
    }

    /// <summary>Keeps the answer durably (null: the request kept nothing) and releases any waiting duplicate.</summary>
    public void Complete(string token, string key, IdempotencyRecord? answer)
    {
        var k = Key(token, key);
        try
        {
            if (answer is not null)
            {
                var line = JsonSerializer.SerializeToUtf8Bytes(answer, ApiJsonContext.Default.IdempotencyRecord);
                lock (_fileGate)
                {
                    using var file = OpenFile(FileMode.Append);
                    file.Write(line);
                    file.WriteByte((byte)'\n');
                    file.Flush(flushToDisk: true);
                }
                _done[k] = answer;
            }
        }
        finally
        {
            if (_inFlight.TryRemove(k, out var waiting))
                waiting.TrySetResult(answer);
        }
    }

    private void Rewrite()
    {
        var temp = _path + ".tmp";
        using (var file = new FileStream(temp, PrivateFile.Write(FileMode.Create)))
        {
            foreach (var record in _done.Values)
            {
                file.Write(JsonSerializer.SerializeToUtf8Bytes(record, ApiJsonContext.Default.IdempotencyRecord));
                file.WriteByte((byte)'\n');
            }
            file.Flush(flushToDisk: true);
        }
        File.Move(temp, _path, overwrite: true);
    }

    private FileStream OpenFile(FileMode mode) => new(_path, PrivateFile.Write(mode));

    // Token names cannot hold a newline, so the pair is unambiguous.
    private static string Key(string token, string key) => token + "\n" + key;
}
