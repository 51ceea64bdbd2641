namespace NativeRelay.Tools;

/// <summary>How big a load <c>nativerelay bench</c> runs.</summary>
public sealed class BenchOptions
{
    public long Messages { get; set; } = 20_000;
    public int Sessions { get; set; } = 20;
    public int Size { get; set; } = 1024;
    public long PerConnection { get; set; }
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(120);
    public string? TempDirectory { get; set; }
    public bool Json { get; set; }
    public bool Quiet { get; set; }
}
