using System.Threading.Channels;
using NativeRelay.Routing;
using NativeRelay.Smtp;
using NativeRelay.Spool;

namespace NativeRelay.Delivery;

/// <summary>
/// One delivery loop: a thread of its own running a <see cref="LoopSynchronizationContext"/>.
/// It owns the destinations hashed to it, their queues and connections, and the retry heap of
/// the messages deferred from them. Other threads reach it only through its bounded inbox.
/// </summary>
internal sealed class DeliveryLoop
{
    private const int InboxCapacity = 16 * 1024;

    private readonly int _index;
    private readonly DeliveryContext _context;
    private readonly LoopSynchronizationContext _sync = new();
    private readonly Channel<DeliveryJob> _inbox = Channel.CreateBounded<DeliveryJob>(
        new BoundedChannelOptions(InboxCapacity) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
    private readonly Dictionary<string, Destination> _destinations = new();
    private readonly PriorityQueue<QueuedMessage, long> _retries = new();
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private Thread? _thread;

    public DeliveryLoop(int index, DeliveryContext context)
    {
        _index = index;
        _context = context;
    }

    internal DeliveryContext Context => _context;

    public void Start()
    {
        _thread = new Thread(() =>
        {
            _sync.Post(static s => ((DeliveryLoop)s!).RunAsync(), this);
            _sync.Run();
        })
        {
            IsBackground = true,
            Name = $"delivery-{_index}",
        };
        _thread.Start();
    }

    public ValueTask EnqueueAsync(DeliveryJob job) =>
        _inbox.Writer.TryWrite(job) ? ValueTask.CompletedTask : _inbox.Writer.WriteAsync(job);

    private async void RunAsync()
    {
        try
        {
            var retryTicker = RetryTickerAsync();
            var reader = _inbox.Reader;
            while (await reader.WaitToReadAsync())
            {
                while (reader.TryRead(out var job))
                    Accept(job);
            }
            await retryTicker;
        }
        catch (Exception e)
        {
            _context.Log.Error($"delivery loop {_index} failed: {e}");
        }
        finally
        {
            _stopped.TrySetResult();
        }
    }

    private void Accept(DeliveryJob job)
    {
        var message = job.Message;
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        if (message.NextAttemptUnixMs > now)
        {
            _retries.Enqueue(message, message.NextAttemptUnixMs);
            return;
        }
        if (job.Route.IsNone)
        {
            _ = DeferAsync(message, job.Route.NoRouteReason ?? "no route");
            return;
        }
        if (!_destinations.TryGetValue(job.Route.Key, out var destination))
        {
            destination = new Destination(job.Route, this);
            _destinations.Add(job.Route.Key, destination);
        }
        destination.Enqueue(message);
    }

    private async Task RetryTickerAsync()
    {
        var stopping = _context.Stopping;
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(250, stopping);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
            while (_retries.TryPeek(out var message, out long due) && due <= now)
            {
                _retries.Dequeue();
                message.NextAttemptUnixMs = 0;
                // Back through the scheduler: the route may have changed, and with it the owning loop.
                await _context.Scheduler.DispatchAsync(message);
            }
        }
        _inbox.Writer.TryComplete();
    }

    /// <summary>A message could not be attempted at all (no route, destination unreachable).</summary>
    internal async Task DeferAsync(QueuedMessage message, string reason)
    {
        var results = new SmtpReply[message.Recipients.Length];
        for (int i = 0; i < results.Length; i++)
            results[i] = SmtpReply.Local(451, reason);
        await RecordOutcomeAsync(message, results, remote: null);
    }

    /// <summary>
    /// Applies the replies of one attempt (indexed like the envelope's recipients; only pending
    /// recipients are looked at), logs them, writes the status record, and then finishes the
    /// message or schedules its retry.
    /// </summary>
    internal async Task RecordOutcomeAsync(QueuedMessage message, SmtpReply[] results, string? remote)
    {
        var log = _context.Log;
        var changes = new List<(ushort, RecipientState)>();
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        string? lastError = null;
        for (int i = 0; i < message.Recipients.Length; i++)
        {
            if (message.Recipients[i] != RecipientState.Pending)
                continue;
            var reply = results[i];
            string status;
            if (reply.IsPositive)
            {
                message.Recipients[i] = RecipientState.Delivered;
                changes.Add(((ushort)i, RecipientState.Delivered));
                status = "sent";
            }
            else if (reply.IsPermanent)
            {
                message.Recipients[i] = RecipientState.Failed;
                changes.Add(((ushort)i, RecipientState.Failed));
                status = "bounced";
                lastError = reply.ToString();
            }
            else
            {
                status = "deferred";
                lastError = reply.ToString();
            }
            if (log.IsEnabled(Telemetry.LogLevel.Info))
                log.Info($"{message.IdText}: to=<{message.Envelope.RecipientText(i)}> relay={remote ?? "none"} attempt={message.Attempts + 1} status={status} ({reply})");
        }

        message.Attempts++;
        message.LastError = lastError;
        int pending = message.PendingRecipients;
        if (pending > 0 && _context.Retry.IsExpired(message.Envelope.ArrivalUnixMs, now))
        {
            for (int i = 0; i < message.Recipients.Length; i++)
            {
                if (message.Recipients[i] != RecipientState.Pending)
                    continue;
                message.Recipients[i] = RecipientState.Failed;
                changes.Add(((ushort)i, RecipientState.Failed));
                log.Info($"{message.IdText}: to=<{message.Envelope.RecipientText(i)}> status=expired (gave up after {message.Attempts} attempts: {lastError})");
            }
            pending = 0;
        }

        bool done = pending == 0;
        long next = done ? 0 : _context.Retry.NextAttemptUnixMs(message.Attempts, now);
        try
        {
            await _context.Spool.AppendStatusAsync(new StatusRecord
            {
                Id = message.Id,
                TimeUnixMs = now,
                Flags = done ? StatusFlags.Done : StatusFlags.None,
                Attempts = message.Attempts,
                NextAttemptUnixMs = next,
                Changes = changes.ToArray(),
            });
        }
        catch (Exception e)
        {
            // The outcome is not recorded, so after a restart the message is tried again: at
            // least once, never lost.
            log.Error($"{message.IdText}: could not record delivery status: {e.Message}");
        }

        message.ReleaseBody();
        if (done)
        {
            _context.Scheduler.Completed(message);
            log.Info($"{message.IdText}: removed");
            return;
        }
        message.NextAttemptUnixMs = next;
        _retries.Enqueue(message, next);
    }

    public async Task StopAsync(TimeSpan deadline)
    {
        _inbox.Writer.TryComplete();
        await Task.WhenAny(_stopped.Task, Task.Delay(deadline));
        var drained = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _sync.Post(_ => WaitForConnectionsAsync(drained, deadline), null);
        await Task.WhenAny(drained.Task, Task.Delay(deadline));
        _sync.Stop();
    }

    private async void WaitForConnectionsAsync(TaskCompletionSource drained, TimeSpan deadline)
    {
        var until = DateTime.UtcNow + deadline;
        while (DateTime.UtcNow < until)
        {
            bool busy = false;
            foreach (var d in _destinations.Values)
                busy |= d.ActiveConnections > 0;
            if (!busy)
                break;
            await Task.Delay(20);
        }
        drained.TrySetResult();
    }
}
