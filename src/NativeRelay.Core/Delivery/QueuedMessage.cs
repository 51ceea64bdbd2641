using NativeRelay.Message;
using NativeRelay.Spool;

namespace NativeRelay.Delivery;

/// <summary>
/// A message in the queue, as the delivery side tracks it.
/// <para>
/// Its recipients may go to several destinations, owned by different delivery loops, at the same
/// time (one job per destination). Everything those jobs share (recipient states, the round in
/// progress, the admin flags) changes only under the message's own lock (<c>lock (message)</c>).
/// The lock is per message, so it is uncontended except in the instant two of its own jobs finish
/// together, and it is never held across an await or an I/O: a loop never waits on another loop.
/// </para>
/// </summary>
public sealed class QueuedMessage
{
    private Envelope? _envelope;
    private string? _lastError;

    public required ulong Id { get; init; }
    public required long HeadAddress { get; set; }
    public required long FirstAddress { get; set; }

    /// <summary>
    /// The envelope while the message is being worked on. A message waiting for its retry does not
    /// hold it (with a large backlog the envelope would be most of what a queued message costs):
    /// the end of an attempt drops it (<see cref="DropEnvelope"/>) and the next dispatch reads it
    /// back from the spool head (<see cref="DeliveryScheduler"/>).
    /// </summary>
    public Envelope Envelope
    {
        get => _envelope ?? throw new InvalidOperationException($"{IdText}: the envelope is not loaded; read it from the spool");
        set => _envelope = value;
    }

    public bool HasEnvelope => _envelope is not null;

    /// <summary>The envelope if it is loaded (read once: safe against a concurrent drop).</summary>
    public bool TryGetEnvelope(out Envelope envelope)
    {
        envelope = Volatile.Read(ref _envelope)!;
        return envelope is not null;
    }

    public void DropEnvelope() => _envelope = null;

    public required RecipientState[] Recipients { get; init; }

    /// <summary>
    /// The bytes while they are in memory (fresh from a session, or read back for an attempt);
    /// null once dropped, then read from the spool again. Jobs take their own references
    /// (<see cref="AcquireBodyAsync"/>), so dropping this one never pulls bytes from under a send.
    /// </summary>
    public MessageBuffer? Body { get; set; }

    public int Attempts { get; set; }
    public long NextAttemptUnixMs { get; set; }

    /// <summary>The last error; equal texts are shared (a destination that is down gives a million deferred messages one string).</summary>
    public string? LastError
    {
        get => _lastError;
        set => _lastError = SharedText.Get(value);
    }

    /// <summary>The Message-ID for events, once read from the bytes ("" when the message has none); null: not read yet.</summary>
    internal string? MessageIdField { get; set; }

    /// <summary>Size of the message in bytes (from the session, or from the spool at recovery).</summary>
    public long Size { get; set; }

    /// <summary>Held by an administrator: not attempted until released.</summary>
    public bool Held { get; internal set; }

    /// <summary>A delay warning (DSN) was sent already.</summary>
    public bool DelayWarned { get; internal set; }

    /// <summary>The message is leaving the queue (done, deleted or returned): nothing more is attempted or recorded.</summary>
    internal bool Finalized { get; set; }

    /// <summary>The attempt in progress (null between attempts).</summary>
    internal DeliveryRound? Round { get; set; }

    /// <summary>Came in from a session or the bouncer (not from the retry heap): counts against new mail's share of the active limit.</summary>
    internal bool Fresh { get; set; }

    /// <summary>The destination of the last attempt (the first one if it was split), for queue stats.</summary>
    internal string? LastDestination { get; set; }

    public string IdText => QueueIdGenerator.ToString(Id);

    public int PendingRecipients
    {
        get
        {
            int n = 0;
            foreach (var s in Recipients)
                if (s == RecipientState.Pending)
                    n++;
            return n;
        }
    }

    /// <summary>Not to be attempted now (held, or leaving the queue).</summary>
    internal bool IsStopped => Held || Finalized;

    /// <summary>
    /// A reference to the bytes for one job (release it when done): the cached buffer if there is
    /// one, otherwise read from the spool and cached for the message's other jobs.
    /// </summary>
    internal async ValueTask<MessageBuffer> AcquireBodyAsync(SpoolLog spool)
    {
        lock (this)
        {
            if (Body is not null)
                return Body.AddReference();
        }
        var (_, read) = await spool.ReadMessageAsync(Id, HeadAddress);
        lock (this)
        {
            if (Body is null)
            {
                Body = read.AddReference(); // one for the cache, one for the caller
                return read;
            }
            var cached = Body.AddReference();
            read.Release();
            return cached;
        }
    }

    /// <summary>Drops the cached bytes (jobs keep their own references).</summary>
    public void ReleaseBody()
    {
        MessageBuffer? body;
        lock (this)
        {
            body = Body;
            Body = null;
        }
        body?.Release();
    }
}

/// <summary>A small bounded pool of equal strings, so many messages with the same error hold one copy.</summary>
internal static class SharedText
{
    private const int Limit = 1024;
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, string> Texts = new();

    public static string? Get(string? text)
    {
        if (text is null)
            return null;
        if (Texts.TryGetValue(text, out var shared))
            return shared;
        if (Texts.Count >= Limit)
            Texts.Clear();
        return Texts.GetOrAdd(text, text);
    }
}

/// <summary>Where a receiving session hands a durably spooled message for delivery.</summary>
public interface IQueueIntake
{
    /// <summary>
    /// Called before a message is appended to the spool: until <see cref="EnqueueAsync"/> or
    /// <see cref="CancelReservation"/>, the log is not truncated past the point where it will land.
    /// </summary>
    void ReserveSpool(ulong id);

    void CancelReservation(ulong id);

    /// <summary>Takes ownership of the message (and its body reference). May wait when delivery is saturated.</summary>
    ValueTask EnqueueAsync(QueuedMessage message);

    /// <summary>
    /// Called by a receiver before it takes a new message: completes when delivery has room for
    /// more new mail, or when the longest pause is up (inflow control, <see cref="InFlowGate"/>).
    /// </summary>
    ValueTask WaitForInFlowRoomAsync() => default;
}
