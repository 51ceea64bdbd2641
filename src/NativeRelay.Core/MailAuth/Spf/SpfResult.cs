namespace NativeRelay.MailAuth.Spf;

/// <summary>The results of check_host() (RFC 7208 section 2.6), by their A-R names (RFC 8601 2.7.2).</summary>
public enum SpfResult : byte
{
    None,
    Neutral,
    Pass,
    Fail,
    SoftFail,
    TempError,
    PermError,
}

/// <summary>
/// One SPF check: the result, the identity checked ("mailfrom", or "helo" for a null sender), the
/// domain and sender it was checked for, the mechanism that matched, the explanation of a
/// <c>fail</c> (the record's <c>exp=</c> text, when there is one and it could be fetched) and,
/// for errors, what went wrong.
/// </summary>
public sealed record SpfVerdict(SpfResult Result, string Identity, string Domain, string Sender, string? Mechanism = null, string? Explanation = null, string? Problem = null)
{
    /// <summary>The result's lower-case name as RFC 8601 prints it ("pass", "softfail", ...).</summary>
    public string ResultName => Name(Result);

    public static string Name(SpfResult result) => result switch
    {
        SpfResult.None => "none",
        SpfResult.Neutral => "neutral",
        SpfResult.Pass => "pass",
        SpfResult.Fail => "fail",
        SpfResult.SoftFail => "softfail",
        SpfResult.TempError => "temperror",
        _ => "permerror",
    };
}
