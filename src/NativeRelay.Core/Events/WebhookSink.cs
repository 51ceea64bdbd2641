using System.Net.Http.Headers;
using NativeRelay.Telemetry;

namespace NativeRelay.Events;

/// <summary>
/// One webhook: reads the journal from its cursor, sends batches (a JSON array of at most
/// <c>batchSize</c> events, or fewer once the first has waited <c>batchMilliseconds</c>) as signed
/// POSTs, and moves its cursor only after a 2xx. A failure is retried with the same events after
/// a wait that doubles from one second up to <c>maxRetrySeconds</c>. Everything runs on its own
/// task and reads only the journal's files: a slow or dead receiver never touches the message path.
/// When more than <c>maxBacklog</c> events wait for it, the oldest are skipped (counted in
/// <c>nativerelay_webhook_events_dropped_total</c> and logged), so a receiver gone for days costs
/// bounded disk.
/// </summary>
internal sealed class WebhookSink : IAsyncDisposable
{
    private static readonly TimeSpan FirstRetry = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan DropWarningInterval = TimeSpan.FromSeconds(10);
    // The cursor file is replaced at most this often while batches flow (each write is two fsyncs);
    // a crash repeats at most this much, with the same ids. It is written at once when the webhook
    // catches up, and at the stop.
    private static readonly TimeSpan CursorWriteInterval = TimeSpan.FromMilliseconds(250);
    private static readonly string UserAgent = "NativeRelay/" + (typeof(WebhookSink).Assembly.GetName().Version?.ToString(3) ?? "0");

    private readonly WebhookSettings _settings;
    private readonly EventJournal _journal;
    private readonly byte[] _secret;
    private readonly Log _log;
    private readonly SinkCursor _cursor;
    private readonly HttpClient _http;
    private readonly Action _acknowledged;
    private readonly CancellationTokenSource _stop = new();
    private long _acked;
    private long _stored;
    private DateTime _lastCursorWrite = DateTime.MinValue;
    private long _droppedSinceWarning;
    private DateTime _lastDropWarning = DateTime.MinValue;
    private Task? _loop;

    public WebhookSink(WebhookSettings settings, EventJournal journal, Log log, Action acknowledged)
    {
        _settings = settings;
        _journal = journal;
        _log = log;
        _acknowledged = acknowledged;
        _secret = settings.ReadSecret();
        _cursor = SinkCursor.For(journal.Directory, settings.Name);
        long? stored = _cursor.Read();
        // A new webhook starts at the newest event; its cursor is written at once, so a crash
        // before its first POST does not move its start past events that came in meanwhile.
        long start = stored ?? journal.DurableEnd;
        if (start > journal.DurableEnd)
        {
            log.Warn($"webhook {settings.Name}: its cursor ({start}) is past the journal's end ({journal.DurableEnd}); the journal was replaced, starting at its end");
            start = journal.DurableEnd;
        }
        if (start < journal.OldestSeq)
            start = journal.OldestSeq;
        _acked = _stored = start;
        if (stored != start)
            _cursor.Write(start);
        _http = new HttpClient(new SocketsHttpHandler
        {
            PooledConnectionLifetime = TimeSpan.FromMinutes(5),
            ConnectTimeout = settings.Timeout,
            AllowAutoRedirect = false, // a redirect would carry the events somewhere nobody configured
        })
        {
            Timeout = Timeout.InfiniteTimeSpan, // per POST below, with the stop token
        };
        EventMetrics.Backlog.Set(settings.Name, () => Backlog);
    }

    public string Name => _settings.Name;

    /// <summary>The first event this webhook has not acknowledged (nor had dropped).</summary>
    public long Acknowledged => Volatile.Read(ref _acked);

    public long Backlog => Math.Max(0, _journal.DurableEnd - Acknowledged);

    public void Start() => _loop = Task.Run(RunAsync);

    private async Task RunAsync()
    {
        var stop = _stop.Token;
        var reader = new EventJournalReader(_journal, Acknowledged);
        var batch = new List<JournalRecord>(_settings.BatchSize);
        var lastSkipSave = DateTime.MinValue;
        int failures = 0;
        try
        {
            while (!stop.IsCancellationRequested)
            {
                if (DropOverBacklog())
                    reader.Seek(Acknowledged);
                batch.Clear();
                Fill(reader, batch);
                if (batch.Count == 0)
                {
                    // Only events this webhook filters out (or none): remember that they are done,
                    // at most once a second (each cursor write is an fsync).
                    if (reader.NextSeq > Acknowledged && DateTime.UtcNow - lastSkipSave >= TimeSpan.FromSeconds(1))
                    {
                        Acknowledge(reader.NextSeq);
                        lastSkipSave = DateTime.UtcNow;
                    }
                    StoreCursor(force: true); // caught up: the file says so
                    await WaitForEventsAsync(reader.NextSeq, TimeSpan.FromSeconds(1), stop);
                    continue;
                }
                if (batch.Count < _settings.BatchSize && _settings.BatchDelay > TimeSpan.Zero)
                {
                    var deadline = DateTime.UtcNow + _settings.BatchDelay;
                    while (batch.Count < _settings.BatchSize && !stop.IsCancellationRequested)
                    {
                        var left = deadline - DateTime.UtcNow;
                        if (left <= TimeSpan.Zero)
                            break;
                        await WaitForEventsAsync(reader.NextSeq, left, stop);
                        Fill(reader, batch);
                    }
                }
                long end = reader.NextSeq;
                var body = EventJson.WriteBatch(_journal.Id, batch);
                var wait = FirstRetry;
                bool sent = false, dropped = false;
                while (!stop.IsCancellationRequested)
                {
                    var error = await PostAsync(body, stop);
                    if (error is null)
                    {
                        sent = true;
                        break;
                    }
                    if (stop.IsCancellationRequested)
                        break;
                    EventMetrics.Failed.Increment(Name);
                    if (failures++ == 0)
                        _log.Warn($"webhook {Name}: POST of {batch.Count} event(s) failed: {error}; retrying with backoff (up to {_settings.MaxRetry.TotalSeconds:0} s apart)");
                    // Exponential backoff with jitter, so many relays do not come back in step.
                    var delay = wait * (0.75 + Random.Shared.NextDouble() * 0.5);
                    await Task.Delay(delay, stop).ConfigureAwait(false);
                    wait = TimeSpan.FromTicks(Math.Min(wait.Ticks * 2, _settings.MaxRetry.Ticks));
                    if (DropOverBacklog())
                    {
                        dropped = true; // some of this batch are gone: build the batch again
                        break;
                    }
                }
                if (dropped)
                {
                    reader.Seek(Acknowledged);
                    continue;
                }
                if (!sent)
                    break;
                if (failures > 0)
                    _log.Info($"webhook {Name}: delivering again after {failures} failed POST(s)");
                failures = 0;
                EventMetrics.Sent.Add(Name, batch.Count);
                Acknowledge(end);
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            _log.Error($"webhook {Name}: stopped: {ExceptionText.Of(e)}");
        }
        finally
        {
            reader.Dispose();
            try
            {
                StoreCursor(force: true);
            }
            catch (IOException e)
            {
                _log.Warn($"webhook {Name}: cannot write its cursor at the stop: {NativeRelay.Telemetry.ExceptionText.Reason(e)} (the last batches will be sent again)");
            }
        }
    }

    // Reads durable events into the batch, skipping those this webhook does not want.
    private void Fill(EventJournalReader reader, List<JournalRecord> batch)
    {
        while (batch.Count < _settings.BatchSize)
        {
            JournalRecord record;
            try
            {
                if (!reader.TryRead(out record))
                    return;
            }
            catch (InvalidDataException e)
            {
                // Damage inside durable data (a disk error): what is left of that segment is lost.
                _log.Error($"webhook {Name}: {e.Message}; skipping to the next segment");
                if (!reader.SkipToNextSegment())
                    throw;
                continue;
            }
            if (_settings.Accepts(record.Type, record.PoolForFilter))
                batch.Add(record);
        }
    }

    /// <summary>Waits for a commit that makes events past <paramref name="seen"/> durable (or the timeout).</summary>
    private async Task WaitForEventsAsync(long seen, TimeSpan timeout, CancellationToken stop)
    {
        var next = _journal.NextCommit; // first the signal, then the check: a commit in between is not missed
        if (_journal.DurableEnd > seen)
            return;
        await Task.WhenAny(next, Task.Delay(timeout, stop)).ConfigureAwait(false);
    }

    /// <summary>Over the bound: moves the cursor past the oldest events. True when it did.</summary>
    private bool DropOverBacklog()
    {
        long end = _journal.DurableEnd;
        long acked = Acknowledged;
        if (end - acked <= _settings.MaxBacklog)
            return false;
        long keepFrom = end - _settings.MaxBacklog;
        long dropped = keepFrom - acked;
        EventMetrics.Dropped.Add(Name, dropped);
        _droppedSinceWarning += dropped;
        Acknowledge(keepFrom);
        if (DateTime.UtcNow - _lastDropWarning >= DropWarningInterval)
        {
            _log.Warn($"webhook {Name}: backlog over maxBacklog {_settings.MaxBacklog}: dropped the oldest {_droppedSinceWarning} event(s)");
            _droppedSinceWarning = 0;
            _lastDropWarning = DateTime.UtcNow;
        }
        return true;
    }

    private void Acknowledge(long seq)
    {
        Volatile.Write(ref _acked, seq);
        StoreCursor(force: false);
        _acknowledged();
    }

    private void StoreCursor(bool force)
    {
        long acked = Acknowledged;
        if (acked == _stored || (!force && DateTime.UtcNow - _lastCursorWrite < CursorWriteInterval))
            return;
        _cursor.Write(acked);
        _stored = acked;
        _lastCursorWrite = DateTime.UtcNow;
    }

    /// <summary>One POST; null when the webhook answered 2xx, else what went wrong (the URL's secret parts are not in it).</summary>
    private async Task<string?> PostAsync(byte[] body, CancellationToken stop)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, _settings.Url);
        var content = new ByteArrayContent(body);
        content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        request.Content = content;
        request.Headers.TryAddWithoutValidation(WebhookSignature.HeaderName,
            WebhookSignature.Create(_secret, DateTimeOffset.UtcNow.ToUnixTimeSeconds(), body));
        request.Headers.TryAddWithoutValidation("User-Agent", UserAgent);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(stop);
        timeout.CancelAfter(_settings.Timeout);
        try
        {
            using var response = await _http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
            await DrainAsync(response, timeout.Token).ConfigureAwait(false);
            return response.IsSuccessStatusCode ? null : $"answered {(int)response.StatusCode} {response.ReasonPhrase}";
        }
        catch (OperationCanceledException) when (!stop.IsCancellationRequested)
        {
            return $"no answer within {_settings.Timeout.TotalSeconds:0} s";
        }
        catch (HttpRequestException e)
        {
            return e.Message;
        }
    }

    /// <summary>Reads (and drops) up to 64 KiB of the answer, so the connection can carry the next POST; a longer answer only costs its connection.</summary>
    private static async Task DrainAsync(HttpResponseMessage response, CancellationToken token)
    {
        var stream = await response.Content.ReadAsStreamAsync(token).ConfigureAwait(false);
        var buffer = new byte[4096];
        int total = 0, n;
        while (total < 64 * 1024 && (n = await stream.ReadAsync(buffer, token).ConfigureAwait(false)) > 0)
            total += n;
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        if (_loop is not null)
            await _loop.ConfigureAwait(false);
        EventMetrics.Backlog.Remove(Name);
        _http.Dispose();
        _stop.Dispose();
    }
}
