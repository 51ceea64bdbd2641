namespace NativeRelay.Tools;

/// <summary>What <c>nativerelay blast</c> sends, how hard, and how it reports.</summary>
public sealed class BlastOptions
{
    public string Host { get; set; } = "127.0.0.1";
    public int Port { get; set; } = 2525;
    public long Messages { get; set; } = 1000;
    public int Sessions { get; set; } = 10;
    public int Size { get; set; } = 1024;
    /// <summary>0: no limit (one connection per session for the whole run).</summary>
    public long PerConnection { get; set; }
    public int Recipients { get; set; } = 1;
    public string From { get; set; } = "blast@example.org";
    public string Rcpt { get; set; } = "sink@example.com";
    /// <summary>Messages started per second over all sessions; 0: no limit.</summary>
    public double Rate { get; set; }
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(600);
    public bool Tls { get; set; }
    public string Helo { get; set; } = "blast.example.org";
    public bool Json { get; set; }
    public bool Quiet { get; set; }

    public string Target => Host.Contains(':') ? $"[{Host}]:{Port}" : $"{Host}:{Port}";
}
