using System.Collections.Concurrent;
using NativeRelay.Config;
using NativeRelay.Message;
using NativeRelay.Routing;
using NativeRelay.Smtp;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

using NativeRelay.Traffic.Bounces;

namespace NativeRelay.Delivery;

/// <summary>
/// The front of the delivery side. It keeps the index of every live message and runs each
/// attempt at a message as a round: route every pending recipient (cached DNS answers on the
/// spot, lookups asynchronously), split the recipients into one job per destination, hand each
/// job to the one loop that owns its destination (hash of the destination key), and, when the
/// last job reports, settle the round once: one status record, at most one DSN (failures,
/// expiry, delay warning, relayed notices together), and the next retry time. Deferred messages
/// wait in one retry heap and come back through here, so a changed route lands on the right loop.
/// <para>
/// As Postfix's queue manager, only a bounded active set is hot: a message has an object
/// (<see cref="QueuedMessage"/>: envelope, recipients' states, round) only while it is being
/// attempted (or an admin command works on it). Between attempts it is cold: its spool index slot
/// (head, size, attempts, flags, due time, ids of its last error and destination) plus a 16-byte
/// entry in the retry heap. The ticker warms due messages up within <c>delivery.activeLimit</c>;
/// an attempt that ends deferred cools the message down again. Hot/cold transitions happen under
/// the spool index's gate, so a message has at most one object at a time.
/// </para>
/// </summary>
public sealed partial class DeliveryScheduler : IQueueIntake, IAsyncDisposable
{
    /// <summary>Messages waiting for a DNS answer at once, before new mail waits (backpressure).</summary>
    private const int MaxPendingResolutions = 4096;
    private static readonly TimeSpan TickInterval = TimeSpan.FromMilliseconds(250);
    private const long QuietTrimAfterMs = 5_000;
    private static readonly int[] FirstRecipient = [0];

    // Replaced together by Reconfigure (SIGHUP); each is immutable, read once per use.
    private RelaySettings _settings;
    private readonly byte[] _hostnameBytes;
    private RoutingSettings _routing;
    private IRouter _router;
    private readonly Log _log;
    private readonly DeliveryLog _deliveryLog;
    private readonly DeliveryLoop[] _loops;
    // The hot set: messages being attempted (or worked on by an admin command). Changed only under _index.Gate.
    private readonly ConcurrentDictionary<ulong, QueuedMessage> _hot = new();
    private readonly SpoolIndex _index;
    // New mail parked because the active set was full (or over its share of it, see EnqueueAsync): ids, oldest first.
    private readonly ConcurrentQueue<ulong> _incoming = new();
    private readonly SemaphoreSlim _wakeup = new(0, 1);
    private int _activeLimit; // replaced by a reload (Reconfigure); read without a lock: a stale value for one decision is harmless
    private int _freshHot;
    private readonly InFlowGate _inFlow;
    // _hot's size, kept by hand (ConcurrentDictionary.Count takes every lock of the dictionary).
    private int _hotCount;
    private int _activePeak;
    // Attempts that ended (cooled down or completed): the ticker's sign that delivery went quiet.
    private long _activity;
    // When to give the recovery's scaffolding back (Unix ms; 0: nothing to do), see EnqueueRecoveredAsync.
    private long _trimAfterRecoveryAt;
    // The ticker stopped with due retries left for lack of room in the active set.
    private volatile bool _backlogWaiting;
    // Messages being appended right now, with a floor below which their records cannot be.
    private readonly ConcurrentDictionary<ulong, long> _reservations = new();
    private readonly SpoolLog _spool;
    private readonly CancellationTokenSource _stopping = new();
    private readonly DeferredQueue _deferred = new();
    private RetryPolicy _retry;
    private Bouncer _bouncer;
    private readonly DeliveryContext _context;
    private readonly QueueIdGenerator _ids;
    private readonly NativeRelay.Traffic.TrafficController _traffic;
    private readonly SemaphoreSlim _resolving = new(MaxPendingResolutions, MaxPendingResolutions);
    private Task? _ticker;

    public DeliveryScheduler(RelaySettings settings, SpoolLog spool, IRouter router, Log log, QueueIdGenerator ids,
        DeliveryLog? deliveryLog = null)
    {
        _settings = settings;
        _hostnameBytes = System.Text.Encoding.UTF8.GetBytes(settings.Hostname);
        _routing = settings.Routing;
        _router = router;
        _log = log;
        _spool = spool;
        _index = spool.Index;
        _activeLimit = Math.Max(1, settings.Delivery.ActiveLimit);
        _inFlow = new InFlowGate(() => Volatile.Read(ref _freshHot), settings.Delivery.InFlowBacklog, settings.Delivery.InFlowDelaySeconds);
        _deliveryLog = deliveryLog ?? DeliveryLog.Null;
        _retry = new RetryPolicy(settings.Delivery);
        _ids = ids;
        _bouncer = new Bouncer(settings, spool, ids, this, log);
        _traffic = new NativeRelay.Traffic.TrafficController(settings.Traffic, settings.Routing.RemotePort, log);
        var context = _context = new DeliveryContext
        {
            Settings = settings,
            Routing = settings.Routing,
            TlsPolicies = TlsPolicyResolverFor(settings.Routing, router, log),
            TlsReports = settings.Routing.TlsRpt && settings.Routing.TlsRptDirectory is { } reports
                ? new NativeRelay.TlsPolicies.Reporting.TlsRptRecorder(reports, log: line => log.Warn(line))
                : null,
            Spool = spool,
            Log = log,
            DeliveryLog = _deliveryLog,
            Retry = _retry,
            Scheduler = this,
            Traffic = _traffic,
            Stopping = _stopping.Token,
        };
        int count = settings.Delivery.Loops > 0 ? settings.Delivery.Loops : Environment.ProcessorCount;
        _loops = new DeliveryLoop[count];
        for (int i = 0; i < count; i++)
            _loops[i] = new DeliveryLoop(i, context);
    }

    private static readonly RouteResult LocalRoute = RouteResult.To(Route.Local);

    /// <summary>
    /// The local delivery agent (Maildir, LMTP): recipients of the domains it calls local, and of
    /// static routes marked local, go to it instead of SMTP. Null: such recipients are deferred.
    /// </summary>
    public NativeRelay.Local.ILocalDeliveryAgent? LocalAgent { get; set; }

    /// <summary>The suppression list: hard bounces of some classes are added to it, and queued mail to its addresses fails (suppression.*); null: none kept.</summary>
    public NativeRelay.Traffic.Suppression.ISuppressionList? Suppression { get; set; }

    /// <summary>What a suppressed recipient of queued mail gets instead of a route: a failure, reported to the sender.</summary>
    private static readonly RouteResult SuppressedRoute = RouteResult.Fail(550, NativeRelay.Traffic.Suppression.SuppressionReplies.QueuedText);

    public int LoopCount => _loops.Length;

    /// <summary>Traffic control: egress sources and pools, sites, shaping, automation (status and resume for the control socket).</summary>
    public NativeRelay.Traffic.TrafficController Traffic => _traffic;

    /// <summary>Messages queued and not yet final (hot or cold).</summary>
    public int LiveCount => _index.Count;

    /// <summary>Messages being attempted now (the hot set, bounded by <c>delivery.activeLimit</c> plus new mail in flight).</summary>
    public int ActiveCount => Volatile.Read(ref _hotCount);

    /// <summary>The most messages hot at once since the start (for tests and figures).</summary>
    internal int ActivePeak => Volatile.Read(ref _activePeak);

    /// <summary>Connections to next hops parked idle, waiting for a job (approximate; for tests).</summary>
    internal int ParkedConnections
    {
        get
        {
            int parked = 0;
            foreach (var loop in _loops)
                parked += loop.ParkedConnections;
            return parked;
        }
    }

    /// <summary>Entries in the retry heap (some may be stale).</summary>
    internal int RetryHeapCount => _deferred.Count;

    public void Start()
    {
        foreach (var loop in _loops)
            loop.Start();
        _ticker = Task.Run(RetryTickerAsync);
    }

    public void ReserveSpool(ulong id)
    {
        // Reserve first (blocking all truncation), then lower the guard to the tail: whatever the
        // session appends after this lands at or beyond that tail.
        _reservations[id] = long.MinValue;
        _reservations[id] = _spool.TailAddress;
    }

    public void CancelReservation(ulong id) => _reservations.TryRemove(id, out _);

    /// <summary>
    /// New mail from a session or the bouncer. It goes straight into the active set while there
    /// is room; when the set is full, or new mail already has its half of it while due retries
    /// wait (see <see cref="PumpAsync"/>), it is parked cold and the ticker takes it in turn.
    /// Never waits for room: a session must not stall on a recovered backlog, and the bouncer runs
    /// inside a round (waiting there for a slot could wait on itself).
    /// </summary>
    public ValueTask EnqueueAsync(QueuedMessage message)
    {
        if (message.Size == 0 && message.Body is { } body)
            message.Size = body.ContentLength;
        _reservations.TryRemove(message.Id, out _);
        bool hot;
        lock (_index.Gate)
        {
            if (!_index.TakeIntake(message.Id))
            {
                // Not in the spool's index (its records were lost when the log was reopened):
                // nothing to read back later, so attempt it while it is in memory.
                hot = true;
            }
            else
            {
                // A message spooled held (a DMARC quarantine) waits cold for queue release.
                hot = !message.Held && Volatile.Read(ref _hotCount) < _activeLimit && _incoming.IsEmpty
                      && (Volatile.Read(ref _freshHot) < _activeLimit / 2 + 1 || !_backlogWaiting);
                if (!hot)
                    _index.Cool(message.Id, 0, null, null);
            }
            if (hot)
            {
                if (_hot.TryAdd(message.Id, message))
                {
                    message.Fresh = true;
                    Interlocked.Increment(ref _freshHot);
                    Interlocked.Increment(ref _hotCount);
                    NotePeak();
                }
            }
        }
        if (hot)
            return DispatchAsync(message);
        message.ReleaseBody();
        message.DropEnvelope();
        _incoming.Enqueue(message.Id);
        Wake();
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Puts recovered messages back in the queue, cold: held ones stay held, the others are due
    /// now (a restart is a good moment to try again) and the ticker starts them within the
    /// active limit, oldest first. The spool's index already has them (<see cref="SpoolRecovery"/>).
    /// </summary>
    public Task EnqueueRecoveredAsync(IEnumerable<RecoveredMessage> recovered)
    {
        uint now = NowSeconds();
        foreach (var r in recovered)
        {
            if (r.Held)
                continue;
            if (_index.Cool(r.Id, now, null, null))
                _deferred.Schedule(r.Id, now);
        }
        // The replay's tables (a few hundred bytes per recovered message) are garbage once the
        // caller lets go of the list: collect them soon rather than whenever delivery goes quiet.
        Volatile.Write(ref _trimAfterRecoveryAt, NowMs() + 2_000);
        Wake();
        return Task.CompletedTask;
    }

    // ---- Hot and cold ---------------------------------------------------------------------

    /// <summary>
    /// The object of a queued message: for an admin command (<paramref name="attempt"/> false)
    /// the hot one if it has one, else one made from its index slot (cold: no envelope yet); for
    /// an attempt, only if it is cold, not held and its slot still has the due time
    /// <paramref name="due"/> (a retry heap entry, or 0 for parked new mail). Null: gone, stale,
    /// or hot already.
    /// </summary>
    private QueuedMessage? Warm(ulong id, uint due, bool fresh, bool attempt) => Warm(id, due, fresh, attempt, out _);

    private QueuedMessage? Warm(ulong id, uint due, bool fresh, bool attempt, out bool created)
    {
        created = false;
        lock (_index.Gate)
        {
            if (_hot.TryGetValue(id, out var hot))
                return attempt ? null : hot;
            if (!_index.TryWarm(id, attempt, due, out var cold, out var states))
                return null;
            var message = FromCold(id, cold, states, attempt ? due : cold.Due, fresh);
            if (fresh)
                Interlocked.Increment(ref _freshHot);
            _hot[id] = message;
            Interlocked.Increment(ref _hotCount);
            NotePeak();
            created = true;
            return message;
        }
    }

    /// <summary>The object of a message made from its index slot (<paramref name="due"/> in seconds, 0: none).</summary>
    private static QueuedMessage FromCold(ulong id, in SpoolIndex.Cold cold, RecipientState[]? states, uint due, bool fresh = false) => new()
    {
        Id = id,
        HeadAddress = cold.Head,
        FirstAddress = cold.First,
        Recipients = states ?? new RecipientState[cold.Recipients],
        Attempts = cold.Attempts,
        Size = cold.Size,
        Held = cold.Held,
        DelayWarned = cold.DelayWarned,
        NextAttemptUnixMs = due * 1000L,
        LastError = cold.LastError,
        LastDestination = cold.LastDestination,
        Fresh = fresh,
    };

    /// <summary>Takes the message out of the hot set if this object is the one registered (caller holds the index's gate).</summary>
    private void Unregister(QueuedMessage message)
    {
        if (_hot.TryGetValue(message.Id, out var hot) && ReferenceEquals(hot, message))
        {
            _hot.TryRemove(message.Id, out _);
            Interlocked.Decrement(ref _hotCount);
            if (message.Fresh)
            {
                Interlocked.Decrement(ref _freshHot);
                _inFlow.BacklogShrank();
            }
        }
    }

    /// <inheritdoc />
    public ValueTask WaitForInFlowRoomAsync() => _inFlow.WaitForRoomAsync();

    /// <summary>
    /// Back to cold: the object goes, the index slot keeps the next attempt time and the last
    /// error, and (unless held) the retry heap gets an entry. <paramref name="nextUnixMs"/> 0: no
    /// next attempt (held).
    /// </summary>
    private void Cool(QueuedMessage message, long nextUnixMs)
    {
        bool scheduled;
        uint due = nextUnixMs <= 0 ? 0 : (uint)Math.Clamp((nextUnixMs + 999) / 1000, 1, uint.MaxValue);
        lock (_index.Gate)
        {
            Unregister(message);
            bool held = message.Held;
            bool known = _index.Cool(message.Id, held ? 0 : due, message.LastError, message.LastDestination);
            if (!known && !message.Finalized)
                _log.Error($"{message.IdText}: not in the spool's index any more (its records were lost); it leaves the queue");
            scheduled = known && !held && due != 0;
        }
        message.ReleaseBody();
        message.DropEnvelope();
        if (scheduled)
            _deferred.Schedule(message.Id, due);
        Interlocked.Increment(ref _activity);
        WakeForFreedSlot();
    }

    // Under the index's gate (every change to the hot set is).
    private void NotePeak()
    {
        if (Volatile.Read(ref _hotCount) > _activePeak)
            Volatile.Write(ref _activePeak, Volatile.Read(ref _hotCount));
    }

    /// <summary>
    /// A message left the active set. That only matters to the ticker if something waits for the
    /// slot (parked new mail, or due retries it found no room for); otherwise waking it would cost
    /// a thread-pool wake-up per relayed message for nothing. A retry that becomes due meanwhile
    /// is found on the next tick.
    /// </summary>
    private void WakeForFreedSlot()
    {
        if (!_incoming.IsEmpty || _backlogWaiting)
            Wake();
    }

    /// <summary>Lets the ticker run now (work came in, or a slot came free for waiting work), without waiting for its next tick.</summary>
    private void Wake()
    {
        if (_wakeup.CurrentCount == 0)
        {
            try
            {
                _wakeup.Release();
            }
            catch (SemaphoreFullException)
            {
            }
        }
    }

    private static uint NowSeconds() => (uint)(NowMs() / 1000);

    // ---- Routing a round ------------------------------------------------------------------

    /// <summary>Starts a round for a live message (first time, every retry, flush, release).</summary>
    internal ValueTask DispatchAsync(QueuedMessage message)
    {
        DeliveryRound round;
        lock (message)
        {
            if (message.Round is not null || message.IsStopped)
                return ValueTask.CompletedTask;
            round = new DeliveryRound(message.Recipients.Length) { Outstanding = 1, StartedUnixMs = NowMs() };
            message.Round = round;
        }
        if (!message.HasEnvelope)
            return LoadEnvelopeThenRouteAsync(message, round);
        return RouteRound(message, round);
    }

    /// <summary>A recovered or retried message: its envelope is read back from the spool first.</summary>
    private async ValueTask LoadEnvelopeThenRouteAsync(QueuedMessage message, DeliveryRound round)
    {
        try
        {
            message.Envelope = await _spool.ReadEnvelopeAsync(message.Id, message.HeadAddress);
        }
        catch (Exception e)
        {
            // Keep it queued (it may be a passing I/O error) and try again in a minute.
            _log.Error($"{message.IdText}: cannot read its envelope from the spool ({ExceptionText.Of(e)}); trying again in a minute");
            lock (message)
                message.Round = null;
            Cool(message, NowMs() + 60_000);
            return;
        }
        await RouteRound(message, round);
    }

    private ValueTask RouteRound(QueuedMessage message, DeliveryRound round)
    {
        // Scheduled sending (the HTTP API's deliver_after): not before its time, whether it is
        // new, recovered after a restart or released; the retry heap brings it back then.
        if (message.Envelope.NotBeforeUnixMs > NowMs())
        {
            lock (message)
                message.Round = null;
            Cool(message, message.Envelope.NotBeforeUnixMs);
            return ValueTask.CompletedTask;
        }
        // Fast path: every pending recipient's domain has a fresh answer (the steady state of a
        // bulk sender): route on the spot, no allocation beyond the job.
        var addresses = message.Envelope.Recipients;
        RouteResult? only = null;
        RouteResult?[]? each = null;
        for (int i = 0; i < addresses.Length; i++)
        {
            if (message.Recipients[i] != RecipientState.Pending)
                continue;
            if (IsSuppressedNow(message, i))
            {
                Collect(ref only, ref each, message, i, SuppressedRoute);
                continue;
            }
            var domain = RoutingDomain(addresses[i]);
            if (IsLocal(domain))
                Collect(ref only, ref each, message, i, LocalRoute);
            else if (_router.TryResolveCached(domain, out var result))
                Collect(ref only, ref each, message, i, result);
            else
                return WaitForRoutesAsync(message, round);
        }
        return SubmitAsync(message, round, only, each);
    }

    private void Collect(ref RouteResult? only, ref RouteResult?[]? each, QueuedMessage message, int i, RouteResult result)
    {
        if (each is null)
        {
            if (only is null || ReferenceEquals(only, result) || (only.Route is not null && result.Route is not null && SameJob(only.Route, result.Route)))
            {
                only ??= result;
                return;
            }
            each = new RouteResult?[message.Recipients.Length];
            for (int j = 0; j < i; j++)
                if (message.Recipients[j] == RecipientState.Pending)
                    each[j] = only;
        }
        each[i] = result;
    }

    private bool IsLocal(ReadOnlySpan<byte> domain) => LocalAgent is { } agent && agent.IsLocal(domain);

    /// <summary>A queued recipient put on the suppression list since its message arrived (or accepted while refuseAtRcpt is off): it fails instead of being sent (suppression.bounceQueued).</summary>
    private bool IsSuppressedNow(QueuedMessage message, int i)
    {
        if (Suppression is not { } list || !Volatile.Read(ref _settings).Suppression.BounceQueued)
            return false;
        var envelope = message.Envelope;
        if (!list.IsSuppressed(envelope.Recipients[i], envelope.Pool, DomainOf(envelope.Sender)))
            return false;
        Telemetry.RelayMetrics.RecipientsSuppressed.Increment();
        return true;
    }

    /// <summary>A hard bounce of a class in suppression.autoAdd puts its recipient on the list (committed by the host's housekeeping within a second).</summary>
    private void AutoSuppress(QueuedMessage message, int i, BounceClass cls, SmtpReply reply)
    {
        var settings = Volatile.Read(ref _settings).Suppression;
        if (Suppression is not { } list || !settings.AddsAutomatically(cls))
            return;
        var address = message.Envelope.Recipients[i];
        var scope = settings.AutoAddScopeFor(message.Envelope.Pool);
        if (list.IsSuppressed(address, message.Envelope.Pool, default))
            return;
        try
        {
            list.Add(address, scope, $"{cls.Name()}: {reply}");
        }
        catch (ArgumentException)
        {
            return; // an address the list cannot hold (spaces in a quoted local part)
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException)
        {
            // The journal could not be written (a full disk): delivery goes on; the next hard bounce tries again.
            _log.Warn($"{message.IdText}: <{message.Envelope.RecipientText(i)}> not added to the suppression list: {e.Message}");
            return;
        }
        Telemetry.RelayMetrics.SuppressionAutoAdded.Increment();
        if (_events.IsEnabled)
            NativeRelay.Events.MessageEvents.PublishSuppression(_events, address,
                scope.Kind == NativeRelay.Traffic.Suppression.SuppressionScopeKind.Domain ? scope.Name : null, null, $"auto: {cls.Name()}",
                scope.Kind == NativeRelay.Traffic.Suppression.SuppressionScopeKind.Pool ? scope.Name : null);
        _log.Info($"{message.IdText}: <{message.Envelope.RecipientText(i)}> added to the suppression list ({scope}, {cls.Name()})");
    }

    /// <summary>
    /// The domain a recipient is routed by: the part after the '@', or for an address without
    /// one ("postmaster", RFC 5321 4.5.1) this relay's own name, as Postfix qualifies it with
    /// myorigin (the address itself is sent on unchanged).
    /// </summary>
    private ReadOnlySpan<byte> RoutingDomain(byte[] address)
    {
        var domain = DomainOf(address);
        return domain.IsEmpty ? _hostnameBytes : domain;
    }

    private async ValueTask WaitForRoutesAsync(QueuedMessage message, DeliveryRound round)
    {
        // Bounded: when DNS is slow and many messages wait for it, new mail waits here too.
        await _resolving.WaitAsync();
        _ = ResolveThenSubmitAsync(message, round);
    }

    private async Task ResolveThenSubmitAsync(QueuedMessage message, DeliveryRound round)
    {
        RouteResult? only = null;
        RouteResult?[]? each = null;
        try
        {
            var addresses = message.Envelope.Recipients;
            var lookups = new ValueTask<RouteResult>[addresses.Length];
            for (int i = 0; i < addresses.Length; i++)
            {
                if (message.Recipients[i] != RecipientState.Pending)
                    continue;
                lookups[i] = IsSuppressedNow(message, i) ? ValueTask.FromResult(SuppressedRoute)
                    : IsLocal(RoutingDomain(addresses[i])) ? ValueTask.FromResult(LocalRoute)
                    : _router.ResolveAsync(RoutingDomain(addresses[i]));
            }
            for (int i = 0; i < addresses.Length; i++)
                if (message.Recipients[i] == RecipientState.Pending)
                    Collect(ref only, ref each, message, i, await lookups[i]);
        }
        catch (Exception e)
        {
            _log.Error($"{message.IdText}: routing failed: {e}");
            only = RouteResult.Fail(451, $"4.4.3 routing failed: {e.Message}");
            each = null;
        }
        finally
        {
            _resolving.Release();
        }
        try
        {
            await SubmitAsync(message, round, only, each);
        }
        catch (Exception e)
        {
            _log.Error($"{message.IdText}: dispatch failed: {e}");
        }
    }

    /// <summary>
    /// A message with "TLS-Required: No" (and no REQUIRETLS) goes to a destination of its own that
    /// ignores the TLS policies (RFC 8689 5); every other message takes the route as it is.
    /// </summary>
    private static Route ForMessage(QueuedMessage message, Route route) =>
        (message.Envelope.Flags & Spool.EnvelopeFlags.TlsOptional) != 0 && route.Kind == RouteKind.Smtp ? route.WithTlsOptional() : route;

    /// <summary>
    /// Splits the pending recipients into jobs by destination and hands them to their loops;
    /// recipients whose domain cannot be routed get their (DNS) failure as this round's reply.
    /// </summary>
    private async ValueTask SubmitAsync(QueuedMessage message, DeliveryRound round, RouteResult? only, RouteResult?[]? each)
    {
        var jobs = new List<DeliveryJob>(1);
        int count = message.Recipients.Length;
        if (each is null && only is not null)
        {
            if (only.Route is { } route)
            {
                int[] indexes = count == 1 ? FirstRecipient : PendingIndexes(message);
                jobs.Add(new DeliveryJob(message, ForMessage(message, route), indexes));
            }
            else
            {
                for (int i = 0; i < count; i++)
                    if (message.Recipients[i] == RecipientState.Pending)
                        Unroutable(message, round, i, only.Failure);
            }
        }
        else if (each is not null)
        {
            for (int i = 0; i < count; i++)
            {
                var result = each[i];
                if (result is null)
                    continue;
                if (result.Route is null)
                {
                    Unroutable(message, round, i, result.Failure);
                    continue;
                }
                int g = 0;
                while (g < jobs.Count && !SameJob(jobs[g].Route, ForMessage(message, result.Route)))
                    g++;
                if (g == jobs.Count)
                    jobs.Add(new DeliveryJob(message, ForMessage(message, result.Route), CountInto(each, result.Route)));
            }
        }

        lock (message)
            round.Outstanding += jobs.Count;
        if (jobs.Count > 0)
            message.LastDestination = jobs[0].Route.Key;
        foreach (var job in jobs)
        {
            if (job.Route.Kind == RouteKind.Local)
                _ = DeliverLocallyAsync(job);
            else
            {
                // Traffic control: a source of the message's pool (by weight) and the route's site;
                // the path's hash picks the loop that owns its queues and limits.
                var path = _traffic.Assign(job.Route, message.Envelope.Pool);
                await _loops[path.Hash % (uint)_loops.Length].EnqueueAsync(job with { Path = path });
            }
        }
        bool last;
        lock (message)
            last = --round.Outstanding == 0;
        if (last)
            await FinishRoundAsync(message);
    }

    private static int[] PendingIndexes(QueuedMessage message)
    {
        int n = message.PendingRecipients;
        var indexes = new int[n];
        int k = 0;
        for (int i = 0; i < message.Recipients.Length && k < n; i++)
            if (message.Recipients[i] == RecipientState.Pending)
                indexes[k++] = i;
        return indexes;
    }

    private int[] CountInto(RouteResult?[] each, Route first)
    {
        int n = 0;
        foreach (var r in each)
            if (r?.Route is { } route && SameJob(route, first))
                n++;
        var indexes = new int[n];
        int k = 0;
        for (int i = 0; i < each.Length; i++)
            if (each[i]?.Route is { } route && SameJob(route, first))
                indexes[k++] = i;
        return indexes;
    }

    /// <summary>
    /// Recipients of two routes go in one job: the same next hops (key), and the same site (a
    /// domain a shaping rule names is a site of its own, though its next hops are another's).
    /// </summary>
    private bool SameJob(Route a, Route b) =>
        ReferenceEquals(a, b) || (a.Key == b.Key && (a.Kind == RouteKind.Local || _traffic.SameSite(a, b)));

    /// <summary>
    /// A job its path cannot take now (suspended, or no session could be had from its source): to
    /// another source of its pool that it has not left from in this round and whose path to the
    /// site takes mail (the weights hold among the others), else it ends with <paramref name="reply"/>
    /// (deferred).
    /// </summary>
    internal async Task MoveOrDeferAsync(DeliveryJob job, SmtpReply reply, AttemptInfo info, bool countDeferred = true)
    {
        if (job.Path is { } from && job.Message.TryGetEnvelope(out var envelope))
        {
            ulong tried = job.Tried | NativeRelay.Traffic.TrafficController.Bit(from.Source);
            if (_traffic.MoveFrom(from, job.Route, envelope.Pool, tried) is { } path)
            {
                Telemetry.RelayMetrics.TrafficJobs.Add(Telemetry.RelayMetrics.JobsMoved, 1);
                if (_log.IsEnabled(Telemetry.LogLevel.Debug))
                    _log.Debug($"{job.Message.IdText}: moved from source {from.Source.Name} to {path.Source.Name} for site {path.Site.Name} ({reply})");
                await _loops[path.Hash % (uint)_loops.Length].EnqueueAsync(job with { Path = path, Tried = tried });
                return;
            }
        }
        if (countDeferred)
            Telemetry.RelayMetrics.TrafficJobs.Add(Telemetry.RelayMetrics.JobsDeferred, 1);
        var results = new SmtpReply[job.Recipients.Length];
        Array.Fill(results, reply);
        await CompleteJobAsync(job, results, info);
    }

    private void Unroutable(QueuedMessage message, DeliveryRound round, int i, SmtpReply failure)
    {
        int attempt;
        lock (message)
        {
            round.Replies[i] = failure;
            round.Attempted = true;
            attempt = message.Attempts + 1;
        }
        LogOutcome(message, i, failure, attempt, null);
    }

    private async Task DeliverLocallyAsync(DeliveryJob job)
    {
        var results = new SmtpReply[job.Recipients.Length];
        var agent = LocalAgent;
        if (agent is null)
        {
            Array.Fill(results, SmtpReply.Local(451, "4.3.0 local delivery is not available (no local delivery agent)"));
            await CompleteJobAsync(job, results, null);
            return;
        }
        MessageBuffer? body = null;
        try
        {
            body = await job.Message.AcquireBodyAsync(_spool);
            var outcomes = await agent.DeliverAsync(job.Message.Envelope, body, job.Recipients, _stopping.Token);
            foreach (var outcome in outcomes)
            {
                int k = Array.IndexOf(job.Recipients, outcome.RecipientIndex);
                if (k < 0)
                    continue;
                var reply = outcome.Reply;
                results[k] = string.IsNullOrEmpty(outcome.Detail) ? reply : new SmtpReply(reply.Code, $"{reply.Text} ({outcome.Detail})");
            }
        }
        catch (Exception e) when (!_stopping.IsCancellationRequested)
        {
            Array.Fill(results, SmtpReply.Local(451, $"4.3.0 local delivery failed: {e.Message}"));
        }
        finally
        {
            body?.Release();
        }
        for (int k = 0; k < results.Length; k++)
            if (results[k].Code == 0)
                results[k] = SmtpReply.Local(451, "4.3.0 local delivery gave no answer");
        await CompleteJobAsync(job, results, new AttemptInfo("local", "", null, false, false));
    }

    // ---- Results of a job -----------------------------------------------------------------

    /// <summary>
    /// Test seam, null in production (one null check per job): awaited by <see cref="CompleteJobAsync"/>
    /// between recording a job's results in its round and logging its outcomes, so a test can hold
    /// one job there while another job of the same round reports and ends the round (the
    /// interleaving that once lost a job's deliveries and sent them twice).
    /// </summary>
    internal Func<DeliveryJob, Task>? AfterJobResultsRecorded { get; set; }

    /// <summary>
    /// A job reports (on its loop's thread): replies per job recipient (null or code 0: not
    /// attempted, e.g. the message was held meanwhile). Deliveries are recorded at once; the
    /// rest waits for the end of the round, which the last job to report runs.
    /// </summary>
    internal async Task CompleteJobAsync(DeliveryJob job, SmtpReply[]? results, AttemptInfo? info)
    {
        var message = job.Message;
        List<(ushort, RecipientState)>? delivered = null;
        bool last;
        int attempt;
        lock (message)
        {
            var round = message.Round!;
            attempt = message.Attempts + 1;
            if (results is not null)
            {
                for (int k = 0; k < results.Length; k++)
                {
                    int i = job.Recipients[k];
                    var reply = results[k];
                    if (reply.Code == 0)
                        continue;
                    round.Attempted = true;
                    round.Replies[i] = reply;
                    round.RemoteMta[i] = info is { ReplyFromRemote: true } ? info.Host : null;
                    if (info is { DsnPassed: true })
                        (round.DsnPassed ??= new bool[message.Recipients.Length])[i] = true;
                    if (reply.IsPositive && message.Recipients[i] == RecipientState.Pending && !message.Finalized)
                    {
                        message.Recipients[i] = RecipientState.Delivered;
                        (delivered ??= new()).Add(((ushort)i, RecipientState.Delivered));
                    }
                }
            }
        }

        if (AfterJobResultsRecorded is { } testSeam)
            await testSeam(job);

        if (results is not null)
            for (int k = 0; k < results.Length; k++)
                if (results[k].Code != 0)
                    LogOutcome(message, job.Recipients[k], results[k], attempt, info);

        // The job leaves the round only after its outcomes are logged: the round's last job cools
        // the message, which drops its envelope, and a job still logging then failed on it ("the
        // envelope is not loaded"), so its deliveries were never recorded and the retry sent them
        // again (the soak saw this three times an hour at 5,700 msg/s).
        lock (message)
            last = --message.Round!.Outstanding == 0;

        if (last)
        {
            // The end of the round writes one record anyway: these deliveries go into it.
            await FinishRoundAsync(message, delivered);
            return;
        }
        if (delivered is not null)
        {
            // Recorded at once (not at the end of the round): a crash now must not repeat these.
            await AppendStatusAsync(new StatusRecord
            {
                Id = message.Id,
                TimeUnixMs = NowMs(),
                Flags = StatusFlags.None,
                Attempts = message.Attempts,
                NextAttemptUnixMs = message.NextAttemptUnixMs,
                Changes = delivered.ToArray(),
            });
        }
    }

    private void LogOutcome(QueuedMessage message, int i, SmtpReply reply, int attempt, AttemptInfo? info)
    {
        string outcome = reply.IsPositive ? "delivered" : reply.IsPermanent ? "failed" : "deferred";
        CountOutcome(message, reply, info);
        // Failures only: a delivery costs nothing here.
        string? bounceClass = null;
        if (!reply.IsPositive)
        {
            var cls = Classify(reply, info);
            bounceClass = cls.Name();
            Telemetry.RelayMetrics.BounceClasses.Increment(info?.Site ?? BounceSite.Of(info?.Host, message.Envelope.Recipients[i]), (int)cls, reply.IsPermanent);
            if (reply.IsPermanent)
                AutoSuppress(message, i, cls, reply);
        }
        PublishOutcome(message, i, reply, attempt, info, bounceClass);
        if (_deliveryLog.IsEnabled)
        {
            _deliveryLog.Write(new DeliveryEvent
            {
                Event = outcome,
                Id = message.Id,
                Recipient = message.Envelope.Recipients[i],
                Attempt = attempt,
                Host = info?.Host,
                Ip = string.IsNullOrEmpty(info?.Ip) ? null : info.Ip,
                Reply = reply.ToString(),
                Class = bounceClass,
                Tls = info?.Tls,
                TlsPolicy = info?.TlsPolicy,
                TlsVerified = info?.TlsVerified,
                TlsFailure = info?.TlsFailure,
                Source = info?.Source,
                Site = info?.Site,
            });
        }
        var level = reply.IsPositive ? Telemetry.LogLevel.Debug : Telemetry.LogLevel.Info;
        if (_log.IsEnabled(level))
            _log.Write(level, $"{message.IdText}: to=<{message.Envelope.RecipientText(i)}> relay={info?.Host ?? "none"}{(string.IsNullOrEmpty(info?.Ip) ? "" : $"[{info.Ip}]")} attempt={attempt} status={outcome}{(bounceClass is null ? "" : " class=" + bounceClass)} ({reply})");
    }

    /// <summary>The bounce class of a failed or deferred reply; a reply no remote server gave (no info, or a local one) is the relay's own.</summary>
    private BounceClass Classify(SmtpReply reply, AttemptInfo? info) =>
        Volatile.Read(ref _settings).BounceClasses.Classify(reply, local: info is not { ReplyFromRemote: true });

    // Per-recipient counters for the metrics endpoint; the destination label is the next-hop
    // host, bounded in cardinality by the metric itself.
    private static void CountOutcome(QueuedMessage message, SmtpReply reply, AttemptInfo? info)
    {
        string destination = info?.Host ?? "none";
        if (reply.IsPositive)
        {
            Telemetry.RelayMetrics.Delivered.Increment();
            Telemetry.RelayMetrics.DestinationDelivered.Increment(destination);
            if (info?.Site is { } site)
            {
                Telemetry.RelayMetrics.SiteDelivered.Increment(site);
                Telemetry.RelayMetrics.SourceDelivered.Increment(info.Source!);
            }
            Telemetry.RelayMetrics.DeliveryLatencySeconds.Observe((NowMs() - message.Envelope.DueSinceUnixMs) / 1000.0); // a scheduled message from its time
            if (destination == "local")
                Telemetry.RelayMetrics.LocalDelivered.Increment();
        }
        else if (reply.IsPermanent)
        {
            Telemetry.RelayMetrics.Bounced.Increment();
            Telemetry.RelayMetrics.DestinationBounced.Increment(destination);
            if (info?.Site is { } site)
                Telemetry.RelayMetrics.SiteBounced.Increment(site);
        }
        else
        {
            Telemetry.RelayMetrics.Deferred.Increment();
            Telemetry.RelayMetrics.DestinationDeferred.Increment(destination);
            if (info?.Site is { } site)
                Telemetry.RelayMetrics.SiteDeferred.Increment(site);
        }
    }

    // ---- The end of a round ---------------------------------------------------------------

    /// <summary>What a finished round decided for a message, recipient by recipient (<see cref="FinishRoundAsync"/>).</summary>
    private struct RoundOutcome
    {
        public DeliveryRound Round;
        public List<int>? Failed, Expired, Delayed, Relayed;
        public bool Done, Attempted, Warn;
        public int Attempts;

        /// <summary>Without the DSN the failures must not be recorded: the recipients stay queued and are tried again (delivery and bounce).</summary>
        public void NotificationFailed()
        {
            Failed = Expired = null;
            Warn = false;
            Done = false;
        }
    }

    /// <summary>
    /// Settles a round once every job has reported: permanent failures, expiry and the delay
    /// warning make (at most) one DSN, spooled and committed before the failures are recorded
    /// (so a crash in between repeats the bounce rather than losing it); then one status record;
    /// then the message leaves the queue or waits in the retry heap.
    /// </summary>
    internal async Task FinishRoundAsync(QueuedMessage message, List<(ushort, RecipientState)>? delivered = null)
    {
        long now = NowMs();
        if (!TryDecide(message, now, out var outcome))
            return;
        ulong? dsnId = await NotifySenderAsync(message, outcome, now);
        if (dsnId is null)
            outcome.NotificationFailed();
        PublishRoundEnd(message, outcome, dsnId ?? 0);
        var (changes, next) = await RecordOutcomeAsync(message, outcome, delivered, now);
        Settle(message, outcome, changes, next, dsnId ?? 0);
    }

    /// <summary>
    /// Step 1, under the message's lock: which recipients failed for good, expired, want a delay
    /// warning or a success notice, and whether the message is done. False when an administrator
    /// deleted or returned it while the jobs ran (that already decided it).
    /// </summary>
    private bool TryDecide(QueuedMessage message, long now, out RoundOutcome outcome)
    {
        outcome = default;
        var envelope = message.Envelope;
        int count = message.Recipients.Length;
        lock (message)
        {
            var round = outcome.Round = message.Round!;
            if (message.Finalized)
            {
                message.Round = null;
                return false;
            }
            outcome.Attempted = round.Attempted;
            int pending = 0;
            for (int i = 0; i < count; i++)
            {
                var state = message.Recipients[i];
                if (state == RecipientState.Delivered)
                {
                    if (round.Replies[i].IsPositive && Wants(envelope, i, DsnNotify.Success) && !(round.DsnPassed?[i] ?? false))
                        (outcome.Relayed ??= new()).Add(i);
                    continue;
                }
                if (state != RecipientState.Pending)
                    continue;
                if (round.Replies[i].IsPermanent)
                    (outcome.Failed ??= new()).Add(i);
                else
                    pending++;
            }
            if (outcome.Attempted)
            {
                message.Attempts++;
                message.LastError = LastError(round);
            }
            outcome.Attempts = message.Attempts;
            // A scheduled message's clocks start at its deliver_after time, not when it was posted.
            if (pending > 0 && outcome.Attempted && _retry.IsExpired(envelope.DueSinceUnixMs, now))
            {
                for (int i = 0; i < count; i++)
                    if (message.Recipients[i] == RecipientState.Pending && !round.Replies[i].IsPermanent)
                        (outcome.Expired ??= new()).Add(i);
                pending = 0;
            }
            if (pending > 0 && outcome.Attempted && _routing.DelayWarning is { } delay && !message.DelayWarned
                && now - envelope.DueSinceUnixMs >= (long)delay.TotalMilliseconds)
            {
                outcome.Warn = true;
                for (int i = 0; i < count; i++)
                    if (message.Recipients[i] == RecipientState.Pending && !round.Replies[i].IsPermanent && Wants(envelope, i, DsnNotify.Delay))
                        (outcome.Delayed ??= new()).Add(i);
            }
            outcome.Done = pending == 0;
            if (outcome.Done)
                message.Finalized = true;
        }
        return true;
    }

    /// <summary>Step 2: one DSN for everything this round has to tell the sender; its queue id, 0 for none, null when it could not be queued.</summary>
    private async Task<ulong?> NotifySenderAsync(QueuedMessage message, RoundOutcome outcome, long now)
    {
        var notices = Notices(message, outcome.Round, outcome.Failed, outcome.Expired, outcome.Delayed, outcome.Relayed, now);
        if (notices is null)
            return 0;
        try
        {
            return await _bouncer.SendAsync(message, notices, now);
        }
        catch (Exception e)
        {
            _log.Error($"{message.IdText}: could not queue the delivery status notification: {ExceptionText.Of(e)}");
            lock (message)
                message.Finalized = false;
            return null;
        }
    }

    /// <summary>Step 3: one status record with every recipient's change and the next attempt time, awaited until durable.</summary>
    private async Task<(List<(ushort, RecipientState)> Changes, long Next)> RecordOutcomeAsync(QueuedMessage message, RoundOutcome outcome,
        List<(ushort, RecipientState)>? delivered, long now)
    {
        var changes = delivered ?? new List<(ushort, RecipientState)>();
        if (outcome.Failed is not null)
            foreach (int i in outcome.Failed)
                changes.Add(((ushort)i, RecipientState.Failed));
        if (outcome.Expired is not null)
            foreach (int i in outcome.Expired)
                changes.Add(((ushort)i, RecipientState.Failed));
        long next = outcome.Done ? 0 : _retry.NextAttemptUnixMs(outcome.Attempts, now);
        if (outcome.Attempted || changes.Count > 0 || outcome.Done)
        {
            var flags = outcome.Done ? StatusFlags.Done : StatusFlags.None;
            if (outcome.Warn)
                flags |= StatusFlags.DelayWarned;
            await AppendStatusAsync(new StatusRecord
            {
                Id = message.Id,
                TimeUnixMs = now,
                Flags = flags,
                Attempts = outcome.Attempts,
                NextAttemptUnixMs = next,
                Changes = changes.ToArray(),
            });
        }
        return (changes, next);
    }

    /// <summary>
    /// Step 4: the recorded outcome in memory, the log lines, then the message leaves the queue or
    /// goes back to its index slot and the retry heap (waiting costs as little memory as possible:
    /// the envelope is read back at the next attempt).
    /// </summary>
    private void Settle(QueuedMessage message, RoundOutcome outcome, List<(ushort, RecipientState)> changes, long next, ulong dsnId)
    {
        lock (message)
        {
            foreach (var (i, state) in changes)
                message.Recipients[i] = state;
            if (outcome.Warn)
                message.DelayWarned = true;
            message.NextAttemptUnixMs = next;
            message.Round = null;
        }
        LogRoundEnd(message, outcome.Round, outcome.Failed, outcome.Expired, outcome.Delayed, outcome.Relayed, dsnId, outcome.Attempts, next, outcome.Done);

        message.ReleaseBody();
        if (outcome.Done)
        {
            Completed(message);
            return;
        }
        bool finalized;
        lock (message)
            finalized = message.Finalized;
        if (!finalized)
            Cool(message, next);
    }

    private static string? LastError(DeliveryRound round)
    {
        string? error = null;
        foreach (var r in round.Replies)
            if (r.Code != 0 && !r.IsPositive)
                error = r.ToString();
        return error;
    }

    /// <summary>
    /// RFC 3461 4.1: without NOTIFY, failures are reported (and, by this relay's policy, delays);
    /// NEVER reports nothing; otherwise exactly what was asked for.
    /// </summary>
    internal static bool Wants(Envelope envelope, int i, DsnNotify what)
    {
        var notify = envelope.Notify is { } n && i < n.Length ? n[i] : DsnNotify.None;
        if (notify == DsnNotify.None)
            return what != DsnNotify.Success;
        if ((notify & DsnNotify.Never) != 0)
            return false;
        return (notify & what) != 0;
    }

    /// <summary>A message from nobody (null reverse-path) or itself a bounce never causes a DSN.</summary>
    internal static bool MayBounce(Envelope envelope) =>
        envelope.Sender.Length > 0 && (envelope.Flags & EnvelopeFlags.IsBounce) == 0;

    private List<DsnRecipient>? Notices(QueuedMessage message, DeliveryRound round, List<int>? failed, List<int>? expired,
        List<int>? delayed, List<int>? relayed, long now)
    {
        var envelope = message.Envelope;
        if (!MayBounce(envelope))
            return null;
        List<DsnRecipient>? notices = null;
        var at = DateTimeOffset.FromUnixTimeMilliseconds(now);
        if (failed is not null)
        {
            foreach (int i in failed)
                if (Wants(envelope, i, DsnNotify.Failure))
                    (notices ??= new()).Add(Notice(envelope, round, i, DsnAction.Failed, round.Replies[i], at));
        }
        if (expired is not null)
        {
            foreach (int i in expired)
            {
                if (!Wants(envelope, i, DsnNotify.Failure))
                    continue;
                var last = round.Replies[i].Code != 0 ? round.Replies[i] : SmtpReply.Local(451, "4.4.7 delivery time expired");
                var reply = new SmtpReply(last.Code, $"{last.Text} (delivery time expired after {message.Attempts} attempts)");
                (notices ??= new()).Add(Notice(envelope, round, i, DsnAction.Failed, reply, at));
            }
        }
        if (delayed is not null)
        {
            var until = DateTimeOffset.FromUnixTimeMilliseconds(envelope.DueSinceUnixMs) + _retry.MaxLifetime;
            foreach (int i in delayed)
            {
                var n = Notice(envelope, round, i, DsnAction.Delayed, round.Replies[i], at);
                (notices ??= new()).Add(new DsnRecipient
                {
                    FinalRecipient = n.FinalRecipient, OriginalRecipient = n.OriginalRecipient, Action = n.Action,
                    Status = n.Status, RemoteMta = n.RemoteMta, Diagnostic = n.Diagnostic,
                    DiagnosticFromRemote = n.DiagnosticFromRemote, BounceClass = n.BounceClass, LastAttempt = n.LastAttempt, WillRetryUntil = until,
                });
            }
        }
        if (relayed is not null)
            foreach (int i in relayed)
                (notices ??= new()).Add(Notice(envelope, round, i, DsnAction.Relayed, round.Replies[i], at));
        return notices;
    }

    private DsnRecipient Notice(Envelope envelope, DeliveryRound round, int i, DsnAction action, SmtpReply reply, DateTimeOffset at) => new()
    {
        FinalRecipient = envelope.Recipients[i],
        OriginalRecipient = envelope.OriginalRecipients is { } o && i < o.Length ? o[i] : null,
        Action = action,
        Status = reply.Code == 0 ? (action == DsnAction.Delayed ? "4.0.0" : "5.0.0") : DsnRecipient.StatusOf(reply),
        RemoteMta = round.RemoteMta[i],
        Diagnostic = reply.Code == 0 ? null : reply.ToString(),
        DiagnosticFromRemote = round.RemoteMta[i] is not null,
        BounceClass = reply.Code == 0 || reply.IsPositive ? null
            : Volatile.Read(ref _settings).BounceClasses.Classify(reply, local: round.RemoteMta[i] is null).Name(),
        LastAttempt = at,
    };

    private void LogRoundEnd(QueuedMessage message, DeliveryRound round, List<int>? failed, List<int>? expired,
        List<int>? delayed, List<int>? relayed, ulong dsnId, int attempts, long next, bool done)
    {
        var envelope = message.Envelope;
        if (expired is not null)
        {
            foreach (int i in expired)
            {
                _log.Info($"{message.IdText}: to=<{envelope.RecipientText(i)}> status=expired (gave up after {attempts} attempts: {round.Replies[i]})");
                _deliveryLog.Write(new DeliveryEvent
                {
                    Event = "expired", Id = message.Id, Recipient = envelope.Recipients[i], Attempt = attempts,
                    Reply = round.Replies[i].Code == 0 ? null : round.Replies[i].ToString(),
                    Class = round.Replies[i].Code == 0 ? null
                        : Volatile.Read(ref _settings).BounceClasses.Classify(round.Replies[i], local: round.RemoteMta[i] is null).Name(),
                });
            }
        }
        if (delayed is not null && dsnId != 0)
            foreach (int i in delayed)
                _deliveryLog.Write(new DeliveryEvent { Event = "delayed", Id = message.Id, Recipient = envelope.Recipients[i], Attempt = attempts, DsnId = dsnId });
        if (relayed is not null && dsnId != 0)
            foreach (int i in relayed)
                _deliveryLog.Write(new DeliveryEvent { Event = "relayed", Id = message.Id, Recipient = envelope.Recipients[i], Attempt = attempts, DsnId = dsnId });
        if (dsnId != 0)
        {
            _log.Info($"{message.IdText}: sender notification {QueueIdGenerator.ToString(dsnId)} queued for <{envelope.SenderText}>");
            _deliveryLog.Write(new DeliveryEvent { Event = "bounce", Id = message.Id, Recipient = envelope.Sender, DsnId = dsnId, Attempt = attempts });
        }
        else if ((failed is not null || expired is not null) && !MayBounce(envelope))
        {
            _log.Info($"{message.IdText}: no sender notification: " + (envelope.Sender.Length == 0 ? "null sender" : "the message is itself a notification"));
        }
        if (!done && round.Attempted && _deliveryLog.IsEnabled)
            _deliveryLog.Write(new DeliveryEvent { Event = "scheduled", Id = message.Id, Attempt = attempts, NextAttemptUnixMs = next });
    }

    // ---- Retries --------------------------------------------------------------------------

    private async Task RetryTickerAsync()
    {
        var stopping = _stopping.Token;
        long lastCompaction = NowMs();
        long seenActivity = 0, trimmedActivity = 0, quietSince = NowMs(), lastTrim = 0;
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await _wakeup.WaitAsync(TickInterval, stopping);
            }
            catch (OperationCanceledException)
            {
                break;
            }
            try
            {
                await PumpAsync(stopping);
            }
            catch (Exception e)
            {
                _log.Error($"delivery: starting due messages failed: {e}");
            }
            if (NowMs() - lastCompaction >= 60_000)
            {
                lastCompaction = NowMs();
                // Stale entries (flushed, held, deleted messages) are otherwise dropped only when due.
                if (_deferred.Count > _index.Count + 1024)
                    _deferred.Compact(_index.IsDue);
            }
            // Give memory back once delivery has gone quiet after a burst (e.g. a backlog whose
            // first attempts all failed): the attempts' short-lived objects that outlived a gen0
            // collection sit as garbage in the older generations until a full collection, which
            // an idle relay never triggers, and freed memory is decommitted only by later collections;
            // with a large queue that is most of its resident size.
            long activity = Interlocked.Read(ref _activity);
            if (activity != seenActivity)
                (seenActivity, quietSince) = (activity, NowMs());
            else if (activity != trimmedActivity && NowMs() - quietSince >= QuietTrimAfterMs && NowMs() - lastTrim >= 60_000)
            {
                // At most once a minute: with a million queued a full collection takes ~0.1 s.
                (trimmedActivity, lastTrim) = (activity, NowMs());
                GiveMemoryBack();
            }
            if (Volatile.Read(ref _trimAfterRecoveryAt) is > 0 and var at && NowMs() >= at)
            {
                Volatile.Write(ref _trimAfterRecoveryAt, 0);
                lastTrim = NowMs();
                GiveMemoryBack();
            }
        }
    }

    /// <summary>
    /// Starts waiting messages while the active set has room. Fairness: parked new mail and due
    /// retries are taken in turn, one each, so neither starves the other: a recovered backlog of a
    /// million cannot keep new mail waiting behind it (as it would in one due-time order), and
    /// steady new mail cannot take every slot that comes free (it goes straight in only up to
    /// half of the set while retries wait, see <see cref="EnqueueAsync"/>). Runs on the ticker
    /// only, so it is never called from a loop's thread (a dispatch may wait for a loop).
    /// </summary>
    private async Task PumpAsync(CancellationToken stopping)
    {
        bool backlogFirst = false;
        while (!stopping.IsCancellationRequested)
        {
            uint now = NowSeconds();
            if (Volatile.Read(ref _hotCount) >= _activeLimit)
            {
                _backlogWaiting = _deferred.HasDue(now);
                return;
            }
            QueuedMessage? message = backlogFirst ? (TakeDue(now) ?? TakeIncoming()) : (TakeIncoming() ?? TakeDue(now));
            backlogFirst = !backlogFirst;
            if (message is null)
            {
                _backlogWaiting = false;
                return;
            }
            try
            {
                await DispatchAsync(message);
            }
            catch (Exception e)
            {
                _log.Error($"{message.IdText}: attempt failed to start: {e}");
            }
        }
    }

    private QueuedMessage? TakeDue(uint now)
    {
        while (_deferred.TryTakeDue(now, out var entry))
            if (Warm(entry.Id, entry.Due, fresh: false, attempt: true) is { } message)
                return message;
        return null;
    }

    private QueuedMessage? TakeIncoming()
    {
        while (_incoming.TryDequeue(out ulong id))
        {
            // A parked message has no due time (0); an admin command may have moved it meanwhile
            // (then it is in the heap, or held, or gone, and this entry is stale).
            if (Warm(id, 0, fresh: true, attempt: true) is { } message)
                return message;
        }
        return null;
    }

    // Aggressive: compacts (the large object heap too) and decommits the freed memory at once.
    // The message blocks pooled beyond the quiet bound go first, so this collection frees them.
    private static void GiveMemoryBack()
    {
        PinnedBlockPool.Shared.Trim();
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    internal void Completed(QueuedMessage message)
    {
        lock (_index.Gate)
            Unregister(message);
        Interlocked.Increment(ref _activity);
        WakeForFreedSlot();
        if (_log.IsEnabled(Telemetry.LogLevel.Debug))
            _log.Debug($"{message.IdText}: removed");
    }

    /// <summary>Appends a status record; failures are logged (the outcome is then repeated after a restart: at least once, never lost).</summary>
    private async Task AppendStatusAsync(StatusRecord record)
    {
        try
        {
            // The events this status settles are durable first (the journal's group commit; at once when events are off).
            await _events.DurableAsync();
            await _spool.AppendStatusAsync(record);
        }
        catch (Exception e)
        {
            _log.Error($"{QueueIdGenerator.ToString(record.Id)}: could not record delivery status: {ExceptionText.Of(e)}");
        }
    }

    /// <summary>The oldest log address a live message still needs (for truncation).</summary>
    public long OldestLiveAddress(long fallback)
    {
        long min = fallback;
        foreach (var floor in _reservations.Values)
            if (floor < min)
                min = floor;
        return _index.OldestAddress(min);
    }

    internal static ReadOnlySpan<byte> DomainOf(byte[] address)
    {
        var span = address.AsSpan();
        int at = span.LastIndexOf((byte)'@');
        return at < 0 ? default : span[(at + 1)..];
    }

    internal static long NowMs() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

    /// <summary>Stops the loops; deliveries in flight get until the deadline to finish.</summary>
    public async Task StopAsync(TimeSpan deadline)
    {
        _stopping.Cancel();
        var stops = new Task[_loops.Length];
        for (int i = 0; i < _loops.Length; i++)
            stops[i] = _loops[i].StopAsync(deadline);
        await Task.WhenAll(stops);
        if (_ticker is not null)
            await _ticker;
        _traffic.Dispose();
        // Bodies still held in memory go back to the pool; the messages stay in the spool.
        foreach (var m in _hot.Values)
            m.ReleaseBody();
        _context.TlsReports?.Dispose(); // the day's TLS-RPT counts, written
    }

    public async ValueTask DisposeAsync()
    {
        if (!_stopping.IsCancellationRequested)
            await StopAsync(TimeSpan.FromSeconds(5));
        _stopping.Dispose();
    }
}
