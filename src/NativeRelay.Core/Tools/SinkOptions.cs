using System.Net;

namespace NativeRelay.Tools;

/// <summary>How <c>nativerelay sink</c> listens and answers.</summary>
public sealed class SinkOptions
{
    public IPEndPoint Listen { get; set; } = new(IPAddress.Loopback, 2526);
    public int ReplyCode { get; set; } = 250;
    public int RcptReplyCode { get; set; } = 250;
    /// <summary>The share (0..1) of recipients refused with 550 5.1.1, each RCPT drawn independently (a soak's hard bounces).</summary>
    public double RcptFailShare { get; set; }
    /// <summary>The share (0..1) of recipients deferred with 451 4.2.0, each RCPT drawn independently (a soak's retries).</summary>
    public double RcptDeferShare { get; set; }
    public TimeSpan Delay { get; set; } = TimeSpan.Zero;
    public string? SaveDirectory { get; set; }
    public long ExitAfter { get; set; }
    public TimeSpan? Timeout { get; set; }
    public string Hostname { get; set; } = "sink.nativerelay.test";
    public bool Pipelining { get; set; } = true;
    public bool Chunking { get; set; } = true;
    public bool Json { get; set; }
    public bool Quiet { get; set; }
    /// <summary>Certificate chain and key (PEM) for STARTTLS; null: STARTTLS is not offered.</summary>
    public string? TlsCertificate { get; set; }
    public string? TlsKey { get; set; }
}
