namespace NativeRelay.Smtp;

/// <summary>
/// A reply from a remote SMTP server. The text is kept only for replies that are not 2xx/3xx
/// (they go into logs and bounces); success replies cost no string.
/// </summary>
public readonly record struct SmtpReply(int Code, string? Text)
{
    public bool IsPositive => Code is >= 200 and < 400;
    public bool IsTransient => Code is >= 400 and < 500;
    public bool IsPermanent => Code >= 500;

    public override string ToString() => Text is null ? Code.ToString() : $"{Code} {Text}";

    /// <summary>A synthetic reply for failures that never reached the remote (connect, timeout, reset).</summary>
    public static SmtpReply Local(int code, string text) => new(code, text);
}

/// <summary>What the remote server said it supports after EHLO.</summary>
[Flags]
public enum SmtpCapabilities
{
    None = 0,
    Pipelining = 1,
    EightBitMime = 2,
    Size = 4,
    SmtpUtf8 = 8,
    Chunking = 16,
    StartTls = 32,
    EnhancedStatusCodes = 64,
    Dsn = 128,
    /// <summary>RFC 8689.</summary>
    RequireTls = 256,
}
