namespace NativeRelay.MailAuth;

/// <summary>The outcome of checking one DKIM-Signature, by RFC 8601 section 2.7.1's result names.</summary>
public enum DkimResult : byte
{
    None,
    Pass,
    Fail,
    Neutral,
    Policy,
    TempError,
    PermError,
}

/// <summary>
/// One signature's verdict: the signing domain (d=) that DMARC aligns against, and what an
/// Authentication-Results header prints (selector, algorithm, the first bytes of b=, a reason).
/// </summary>
public sealed record DkimVerdict(DkimResult Result, string Domain, string Selector, string Algorithm, string? Reason, string SignaturePrefix);

/// <summary>Checks every DKIM-Signature of a whole message (header section and body as received, CRLF line ends).</summary>
public interface IDkimVerifier
{
    Task<IReadOnlyList<DkimVerdict>> VerifyAsync(ReadOnlyMemory<byte> message, CancellationToken cancel);
}
