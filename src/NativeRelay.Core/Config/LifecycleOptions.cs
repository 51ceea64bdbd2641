namespace NativeRelay.Config;

/// <summary>The human log on standard output (<c>log</c> in the file).</summary>
public sealed class LogOptions
{
    /// <summary>"debug", "info", "warn" or "error": the least severe line written.</summary>
    public string Level { get; set; } = "info";
    /// <summary>"text" (one human-readable line per event) or "json" (one JSON object per line).</summary>
    public string Format { get; set; } = "text";
}

/// <summary>What SIGTERM/SIGINT does (<c>shutdown</c> in the file).</summary>
public sealed class ShutdownOptions
{
    /// <summary>How long sessions in the middle of a transaction may take to finish it after SIGTERM.</summary>
    public int DrainSeconds { get; set; } = 30;
}
