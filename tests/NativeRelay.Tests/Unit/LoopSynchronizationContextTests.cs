using NativeRelay.Delivery;

namespace NativeRelay.Tests.Unit;

/// <summary>The delivery loop's event loop: lock-free posts from many threads, no lost wake-ups, a clean stop.</summary>
public sealed class LoopSynchronizationContextTests
{
    [Fact]
    public void Posts_from_many_threads_all_run_once_on_the_loop_thread_in_each_posters_order()
    {
        const int Posters = 4, PerPoster = 20_000;
        var loop = new LoopSynchronizationContext();
        var thread = new Thread(loop.Run) { IsBackground = true, Name = "test-loop" };
        thread.Start();

        // Only the loop's thread touches these, which is the point of the loop.
        var next = new int[Posters];
        int ran = 0, wrongThread = 0, outOfOrder = 0;
        var allRan = new ManualResetEventSlim();
        var posters = Enumerable.Range(0, Posters).Select(p => new Thread(() =>
        {
            for (int i = 0; i < PerPoster; i++)
            {
                int poster = p, sequence = i;
                loop.Post(_ =>
                {
                    if (Environment.CurrentManagedThreadId != thread.ManagedThreadId)
                        wrongThread++;
                    if (next[poster] != sequence)
                        outOfOrder++;
                    next[poster] = sequence + 1;
                    if (++ran == Posters * PerPoster)
                        allRan.Set();
                }, null);
                // Now and then let the loop run dry and go to sleep, so wake-ups are exercised too.
                if (i % 1000 == 0)
                    Thread.Sleep(1);
            }
        })).ToList();
        posters.ForEach(t => t.Start());
        posters.ForEach(t => t.Join());

        Assert.True(allRan.Wait(TimeSpan.FromSeconds(30)), $"{Volatile.Read(ref ran)} of {Posters * PerPoster} ran");
        Assert.Equal(0, wrongThread);
        Assert.Equal(0, outOfOrder);
        loop.Stop();
        Assert.True(thread.Join(TimeSpan.FromSeconds(10)), "the loop did not end after Stop");
        Assert.Equal(Posters * PerPoster, ran);
    }

    [Fact]
    public void A_post_after_a_sleep_wakes_the_loop_every_time()
    {
        var loop = new LoopSynchronizationContext();
        var thread = new Thread(loop.Run) { IsBackground = true };
        thread.Start();
        for (int i = 0; i < 200; i++)
        {
            // Each post finds the loop asleep (or about to be): a lost wake-up would hang here.
            using var done = new ManualResetEventSlim();
            loop.Post(_ => done.Set(), null);
            Assert.True(done.Wait(TimeSpan.FromSeconds(10)), $"post {i} never ran");
            if (i % 20 == 0)
                Thread.Sleep(2);
        }
        loop.Stop();
        Assert.True(thread.Join(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public void Work_queued_at_stop_still_runs_and_late_posts_go_to_the_thread_pool()
    {
        var loop = new LoopSynchronizationContext();
        int onLoop = 0, elsewhere = 0;
        var thread = new Thread(loop.Run) { IsBackground = true };
        // Queued before the loop even starts, and the stop comes right behind them: all must run, there.
        for (int i = 0; i < 100; i++)
            loop.Post(_ =>
            {
                if (Environment.CurrentManagedThreadId == thread.ManagedThreadId)
                    Interlocked.Increment(ref onLoop);
                else
                    Interlocked.Increment(ref elsewhere);
            }, null);
        thread.Start();
        loop.Stop();
        Assert.True(thread.Join(TimeSpan.FromSeconds(10)));
        Assert.Equal(100, onLoop);
        Assert.Equal(0, elsewhere);

        using var late = new ManualResetEventSlim();
        bool onPool = false;
        loop.Post(_ => { onPool = Thread.CurrentThread.IsThreadPoolThread; late.Set(); }, null);
        Assert.True(late.Wait(TimeSpan.FromSeconds(10)), "a post after the loop ended never ran");
        Assert.True(onPool);
    }

    [Fact]
    public void Posts_racing_the_stop_each_run_exactly_once_on_the_loop_or_the_pool()
    {
        // Many rounds, each stopping a loop while four threads post to it as fast as they can:
        // a post that slips in as the loop leaves must still run (on the pool), never be lost.
        for (int round = 0; round < 50; round++)
        {
            var loop = new LoopSynchronizationContext();
            var thread = new Thread(loop.Run) { IsBackground = true };
            thread.Start();
            int posted = 0, ran = 0;
            using var go = new ManualResetEventSlim();
            var posters = Enumerable.Range(0, 4).Select(_ => new Thread(() =>
            {
                go.Wait();
                for (int i = 0; i < 2_000; i++)
                {
                    loop.Post(_ => Interlocked.Increment(ref ran), null);
                    Interlocked.Increment(ref posted);
                }
            })).ToList();
            posters.ForEach(t => t.Start());
            go.Set();
            Thread.SpinWait(1000 * (round % 10));
            loop.Stop();
            posters.ForEach(t => t.Join());
            Assert.True(thread.Join(TimeSpan.FromSeconds(10)), "the loop did not end after Stop");
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (Volatile.Read(ref ran) < posted && DateTime.UtcNow < deadline)
                Thread.Sleep(1);
            Assert.Equal(posted, Volatile.Read(ref ran));
        }
    }
}
