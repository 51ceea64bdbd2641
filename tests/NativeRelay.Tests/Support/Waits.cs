namespace NativeRelay.Tests.Support;

/// <summary>The bounded waits of the end-to-end tests: generous, for slow CI machines.</summary>
public static class Waits
{
    /// <summary>For a delivery or anything else that should happen soon.</summary>
    public static readonly TimeSpan Delivery = TimeSpan.FromSeconds(60);

    /// <summary>For a process to exit after a signal.</summary>
    public static readonly TimeSpan Exit = TimeSpan.FromSeconds(30);

    /// <summary>Polls <paramref name="condition"/> every 50 ms until it holds; fails the test naming <paramref name="what"/> after <paramref name="timeout"/>.</summary>
    public static async Task UntilAsync(Func<bool> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!condition())
        {
            if (DateTime.UtcNow > deadline)
                Assert.Fail($"timed out after {timeout.TotalSeconds:0} s waiting until {what}");
            await Task.Delay(50);
        }
    }

    /// <summary>As <see cref="UntilAsync(Func{bool}, TimeSpan, string)"/>, for a condition that must be asked for (a CLI run, a scrape).</summary>
    public static async Task UntilAsync(Func<Task<bool>> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
                Assert.Fail($"timed out after {timeout.TotalSeconds:0} s waiting until {what}");
            await Task.Delay(50);
        }
    }
}
