namespace NativeRelay.Events;

/// <summary>
/// The one way the message path reports events. With no webhook configured it is
/// <see cref="NullEventPublisher"/>: <see cref="IsEnabled"/> is false, callers build nothing, and
/// <see cref="DurableAsync"/> is an already completed task.
/// </summary>
public interface IEventPublisher
{
    bool IsEnabled { get; }

    /// <summary>Appends the event to the journal (never waits for the disk).</summary>
    void Publish(RelayEvent e);

    /// <summary>Completes when every event published before the call is durable.</summary>
    Task DurableAsync();
}

/// <summary>Events off: nothing is journaled and nothing waits.</summary>
public sealed class NullEventPublisher : IEventPublisher
{
    public static NullEventPublisher Instance { get; } = new();

    private NullEventPublisher()
    {
    }

    public bool IsEnabled => false;

    public void Publish(RelayEvent e)
    {
    }

    public Task DurableAsync() => Task.CompletedTask;
}
