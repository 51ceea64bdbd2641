using NativeRelay.Message;
using NativeRelay.Spool;

namespace NativeRelay.Delivery;

/// <summary>
/// A message in the queue, as the delivery side tracks it. Once handed to a delivery loop it is
/// touched only by that loop's thread, so nothing here is synchronised.
/// </summary>
public sealed class QueuedMessage
{
    public required ulong Id { get; init; }
    public required long HeadAddress { get; set; }
    public required long FirstAddress { get; set; }
    public required Envelope Envelope { get; init; }
    public required RecipientState[] Recipients { get; init; }

    /// <summary>The bytes while they are still in memory (fresh from a session); null once dropped, then read from the spool.</summary>
    public MessageBuffer? Body { get; set; }

    public int Attempts { get; set; }
    public long NextAttemptUnixMs { get; set; }
    public string? LastError { get; set; }

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

    public void ReleaseBody()
    {
        Body?.Release();
        Body = null;
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
}
