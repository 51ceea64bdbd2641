namespace NativeRelay.Config;

/// <summary>
/// One entry of <c>localDomains</c>: a domain whose mail is delivered on this host, into Maildirs
/// (<see cref="MaildirRoot"/>) or to a delivery agent over LMTP (<see cref="Lmtp"/>), never relayed.
/// </summary>
public sealed class LocalDomainOptions
{
    /// <summary>The domain, e.g. "example.com" (exact match, case-insensitive).</summary>
    public string Domain { get; set; } = "";

    /// <summary>Deliver user U to the Maildir ROOT/U/ (tmp, new and cur are created on first use).</summary>
    public string? MaildirRoot { get; set; }

    /// <summary>Deliver over LMTP (RFC 2033) to "HOST:PORT" or "unix:/path/to/socket".</summary>
    public string? Lmtp { get; set; }

    /// <summary>An aliases file ("name: target, target" lines; # comments).</summary>
    public string? Aliases { get; set; }

    /// <summary>Where mail for users that do not exist goes ("postmaster" or "user@domain"); without it they get 550 5.1.1.</summary>
    public string? CatchAll { get; set; }

    /// <summary>
    /// The users (mailboxes) of the domain. Empty: for Maildir, any user is accepted and its Maildir
    /// made on first use (unless a catch-all is set: then only users whose Maildir exists);
    /// for LMTP, the LMTP server decides.
    /// </summary>
    public List<string> Users { get; set; } = [];

    /// <summary>"user+tag" is delivered to "user" (one character; empty turns it off).</summary>
    public string RecipientDelimiter { get; set; } = "+";
}
