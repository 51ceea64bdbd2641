using System.Net;
using System.Net.Sockets;
using System.Text;
using NativeRelay.Net;
using NativeRelay.Smtp;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// The shared deadline clock behind every session's command, data and flush timeouts: an armed
/// deadline that passes is expired once, with what was being waited for; a disarmed, unexpired or
/// disposed one never is; an expiry and a disarm never both win; the clock's own timer fires.
/// Most tests tick a private clock by hand (its period is an hour, so it never ticks by itself),
/// at a time given to the tick, so nothing waits for the time to pass.
/// </summary>
public sealed class DeadlineClockTests
{
    private static DeadlineClock HandClock() => new(TimeSpan.FromHours(1));

    private sealed class Expiries
    {
        private int _count;
        public readonly List<DeadlineFor> Seen = [];
        public readonly SemaphoreSlim Signal = new(0);
        public int Count => Volatile.Read(ref _count);

        public static void Record(object state, DeadlineFor waitingFor)
        {
            var e = (Expiries)state;
            lock (e.Seen)
                e.Seen.Add(waitingFor);
            Interlocked.Increment(ref e._count);
            e.Signal.Release();
        }
    }

    // A tick an hour from now: every deadline armed for less has passed.
    private static void TickAnHourLater(DeadlineClock clock) => clock.Tick(Environment.TickCount64 + 3_600_000);

    [Fact]
    public async Task A_passed_deadline_expires_once_with_what_was_awaited_and_disarm_reports_it()
    {
        var clock = HandClock();
        var expiries = new Expiries();
        using var deadline = new Deadline(clock, Expiries.Record, expiries);

        deadline.Arm(TimeSpan.FromSeconds(5), DeadlineFor.Write);
        TickAnHourLater(clock);
        TickAnHourLater(clock); // a second tick must not expire it again

        Assert.True(await expiries.Signal.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.False(deadline.IsArmed);
        Assert.True(deadline.Disarm());
        Assert.False(deadline.Disarm()); // reported once
        Assert.Equal([DeadlineFor.Write], expiries.Seen);
    }

    [Fact]
    public void A_deadline_not_yet_passed_or_disarmed_in_time_does_not_expire()
    {
        var clock = HandClock();
        var expiries = new Expiries();
        using var later = new Deadline(clock, Expiries.Record, expiries);
        using var inTime = new Deadline(clock, Expiries.Record, expiries);
        using var never = new Deadline(clock, Expiries.Record, expiries);

        later.Arm(TimeSpan.FromHours(2), DeadlineFor.Read);
        inTime.Arm(TimeSpan.FromSeconds(1), DeadlineFor.Read);
        Assert.False(inTime.Disarm());
        TickAnHourLater(clock);
        clock.Tick(); // and now, for real

        Assert.True(later.IsArmed);
        Assert.False(later.Disarm());
        Assert.False(inTime.Disarm());
        Assert.False(never.Disarm());
        Thread.Sleep(50); // an expiry would have been queued to the pool by the tick above
        Assert.Equal(0, expiries.Count);
    }

    [Fact]
    public void A_disposed_deadline_leaves_the_clock_and_is_never_expired()
    {
        var clock = HandClock();
        var expiries = new Expiries();
        var kept = new Deadline(clock, Expiries.Record, expiries);
        var gone = new Deadline(clock, Expiries.Record, expiries);
        Assert.Equal(2, clock.Count);

        gone.Arm(TimeSpan.FromSeconds(1), DeadlineFor.Read);
        gone.Dispose();
        gone.Dispose(); // twice is harmless
        Assert.Equal(1, clock.Count);
        TickAnHourLater(clock);

        Assert.False(gone.Disarm());
        kept.Dispose();
        Assert.Equal(0, clock.Count);
        Thread.Sleep(50);
        Assert.Equal(0, expiries.Count);
    }

    [Fact]
    public async Task A_late_cancel_on_a_finished_owner_is_contained_and_others_still_expire()
    {
        var clock = HandClock();
        var expiries = new Expiries();
        // What a stream pipe does when cancelled after it was completed.
        using var finished = new Deadline(clock, static (_, _) => throw new ObjectDisposedException("CancellationTokenSource"), new object());
        using var fine = new Deadline(clock, Expiries.Record, expiries);

        finished.Arm(TimeSpan.FromSeconds(1), DeadlineFor.Read);
        TickAnHourLater(clock);
        fine.Arm(TimeSpan.FromSeconds(1), DeadlineFor.Read);
        TickAnHourLater(clock);

        Assert.True(await expiries.Signal.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.True(finished.Disarm());
        Assert.True(fine.Disarm());
    }

    [Fact]
    public async Task The_clock_ticks_by_itself_while_deadlines_are_registered_and_again_after_it_went_quiet()
    {
        var clock = new DeadlineClock(TimeSpan.FromMilliseconds(10));
        var expiries = new Expiries();
        for (int round = 0; round < 2; round++)
        {
            using (var deadline = new Deadline(clock, Expiries.Record, expiries))
            {
                deadline.Arm(TimeSpan.FromMilliseconds(1), DeadlineFor.Read);
                Assert.True(await expiries.Signal.WaitAsync(TimeSpan.FromSeconds(30)), $"round {round}: no expiry");
                Assert.True(deadline.Disarm());
            }
            // Empty now: a tick stops the timer, and the next registration must start it again.
            for (int wait = 0; wait < 3_000 && clock.IsRunning; wait++)
                await Task.Delay(10);
            Assert.False(clock.IsRunning);
        }
        Assert.Equal(2, expiries.Count);
    }

    [Fact]
    public async Task Expiry_and_disarm_race_and_exactly_one_wins_each_time()
    {
        const int Owners = 2, Rounds = 20_000;
        var clock = HandClock();
        var expiries = new Expiries[Owners];
        var deadlines = new Deadline[Owners];
        var reported = new int[Owners];
        for (int i = 0; i < Owners; i++)
        {
            expiries[i] = new Expiries();
            deadlines[i] = new Deadline(clock, Expiries.Record, expiries[i]);
        }

        // The ticker expires whatever is armed at the moment it looks; the owners arm and disarm as
        // fast as they can, so the two meet on the same deadline over and over.
        int finished = 0;
        var ticker = new Thread(() =>
        {
            while (Volatile.Read(ref finished) < Owners)
                TickAnHourLater(clock);
        });
        ticker.Start();
        var owners = Enumerable.Range(0, Owners).Select(i => new Thread(() =>
        {
            for (int r = 0; r < Rounds; r++)
            {
                deadlines[i].Arm(TimeSpan.FromSeconds(1), DeadlineFor.Read);
                Thread.SpinWait(r % 64);
                if (deadlines[i].Disarm())
                    reported[i]++;
            }
            Interlocked.Increment(ref finished);
        })).ToArray();
        foreach (var t in owners)
            t.Start();
        foreach (var t in owners)
            Assert.True(t.Join(TimeSpan.FromSeconds(60)));
        Assert.True(ticker.Join(TimeSpan.FromSeconds(60)));

        // Every expiry an owner saw was called back once, and no callback came without one.
        for (int i = 0; i < Owners; i++)
        {
            for (int wait = 0; wait < 3_000 && expiries[i].Count < reported[i]; wait++)
                await Task.Delay(10);
            await Task.Delay(20);
            Assert.Equal(reported[i], expiries[i].Count);
            deadlines[i].Dispose();
        }
        Assert.True(reported.Sum() > 0, "no expiry met a disarm: the race was not exercised");
        Assert.True(reported.Sum() < Owners * Rounds, "every round expired: the disarm side was not exercised");
    }

    [Fact]
    public async Task The_client_gives_up_on_a_silent_server_at_its_command_timeout()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        var endPoint = (IPEndPoint)listener.LocalEndpoint;
        var serverSide = Task.Run(async () =>
        {
            using var client = await listener.AcceptTcpClientAsync();
            var stream = client.GetStream();
            await stream.WriteAsync("220 silent.test ESMTP\r\n"u8.ToArray());
            var buffer = new byte[512];
            int n = await stream.ReadAsync(buffer); // EHLO
            Assert.StartsWith("EHLO", Encoding.ASCII.GetString(buffer, 0, n));
            // ... and never a reply; hold the connection until the client drops it.
            while (await stream.ReadAsync(buffer) > 0) { }
        });

        var failure = await Assert.ThrowsAsync<SmtpSessionException>(() => SmtpClientSession.ConnectAsync(endPoint,
            new SmtpClientOptions { HeloName = "relay.test", ConnectTimeout = TimeSpan.FromSeconds(10), CommandTimeout = TimeSpan.FromSeconds(1) },
            CancellationToken.None));

        Assert.Equal(421, failure.Reply.Code);
        Assert.Contains("timeout waiting for the remote server", failure.Reply.ToString());
        await serverSide.WaitAsync(TimeSpan.FromSeconds(30)); // the client closed its end
    }
}
