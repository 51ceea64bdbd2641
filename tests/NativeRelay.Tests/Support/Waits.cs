namespace NativeRelay.Tests.Support;

/// <summary>The bounded waits of the end-to-end tests: generous, for slow CI machines.</summary>
public static class Waits
{
    /// <summary>For a delivery or anything else that should happen soon.</summary>
    public static readonly TimeSpan Delivery = TimeSpan.FromSeconds(60);

    /// <summary>For a process to exit after a signal.</summary>
    public static readonly TimeSpan Exit = TimeSpan.FromSeconds(30);
}
