namespace NativeRelay.Traffic.Bounces;

/// <summary>
/// Why a recipient failed or was deferred, in the words a bulk sender acts on: an invalid
/// recipient or a bad domain is never mailed again (suppression), a full mailbox may recover,
/// a rate limit means slow down, a policy block means fix the reputation, and so on.
/// </summary>
public enum BounceClass : byte
{
    Other,
    InvalidRecipient,
    BadDomain,
    MailboxFull,
    MessageTooLarge,
    ContentBlock,
    PolicyBlock,
    AuthenticationFailure,
    RateLimited,
    TlsFailure,
    DnsFailure,
    ConnectionFailure,
}

/// <summary>The names of the classes as they appear in the rules file, the delivery log, the DSN and the metrics.</summary>
public static class BounceClassNames
{
    /// <summary>Indexed by the enum's value.</summary>
    private static readonly string[] Names =
    [
        "other",
        "invalid-recipient",
        "bad-domain",
        "mailbox-full",
        "message-too-large",
        "content-block",
        "policy-block",
        "authentication-failure",
        "rate-limited",
        "tls-failure",
        "dns-failure",
        "connection-failure",
    ];

    public static int Count => Names.Length;

    public static IReadOnlyList<string> All => Names;

    public static string Name(this BounceClass c) => Names[(int)c];

    public static bool TryParse(string? name, out BounceClass c)
    {
        int i = name is null ? -1 : Array.IndexOf(Names, name.Trim().ToLowerInvariant());
        c = i < 0 ? BounceClass.Other : (BounceClass)i;
        return i >= 0;
    }
}
