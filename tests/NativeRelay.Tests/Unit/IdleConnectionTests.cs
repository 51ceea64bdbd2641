using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// A connection to a next hop outlives its message: it waits, parked, for the destination's next
/// job, and says goodbye once <c>delivery.idleConnectionSeconds</c> pass without one.
/// </summary>
public sealed class IdleConnectionTests
{
    private const int IdleSeconds = 5;

    [Fact]
    public async Task An_idle_connection_takes_the_next_message_then_closes_after_the_idle_time()
    {
        await using var world = await DeliveryWorld.StartAsync(o => o.Delivery.IdleConnectionSeconds = IdleSeconds);
        var peer = world.Peers[0];

        await SendAsync(world, "idle-1@test");
        // The peer has the message before the relay has its 250: wait until the connection is parked
        // (a job that came sooner would rightly get a second connection of the slow-start window).
        await world.WaitUntilAsync(() => world.Scheduler.ParkedConnections == 1, "the connection parked");
        Assert.Equal(1, peer.OpenConnections);

        // Parked, not closed: the next message goes over the same connection.
        await SendAsync(world, "idle-2@test");
        Assert.Equal(1, peer.ConnectionCount);

        // Nothing more to send: the relay closes it once the idle time has passed.
        await peer.WaitUntilAsync(() => peer.OpenConnections == 0, Waits.Delivery, "the idle connection closed");
        Assert.Equal(1, peer.ConnectionCount);

        // A message after that opens a new one.
        await SendAsync(world, "idle-3@test");
        Assert.Equal(2, peer.ConnectionCount);
    }

    [Fact]
    public async Task Stopping_the_relay_closes_a_parked_connection_without_waiting_out_the_idle_time()
    {
        var world = await DeliveryWorld.StartAsync(o => o.Delivery.IdleConnectionSeconds = 3600);
        var peer = world.Peers[0];
        try
        {
            await SendAsync(world, "parked@test");
            await world.WaitUntilAsync(() => world.Scheduler.ParkedConnections == 1, "the connection parked");
            Assert.Equal(1, peer.OpenConnections);

            await world.Scheduler.DisposeAsync();

            // An hour of idle time left, yet the stop ends the wait and the connection goes.
            await peer.WaitUntilAsync(() => peer.OpenConnections == 0, Waits.Delivery, "the parked connection closed at the stop");
        }
        finally
        {
            await world.DisposeAsync();
        }
    }

    private static async Task SendAsync(DeliveryWorld world, string messageId)
    {
        await world.QueueAsync(DeliveryWorld.Envelope("alice@origin.test", ["bob@dest.test"]), MessageText.Simple(messageId));
        await world.Peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == $"<{messageId}>", messageId);
    }
}
