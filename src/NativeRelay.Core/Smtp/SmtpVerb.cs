namespace NativeRelay.Smtp;

/// <summary>
/// The SMTP command verbs the server recognises (RFC 5321 4.1, plus STARTTLS from RFC 3207,
/// AUTH from RFC 4954 and BDAT from RFC 3030).
/// </summary>
/// <remarks>
/// A byte-sized enum so a session can keep "last command" state and per-verb counters cheaply.
/// <see cref="Unknown"/> is zero so a default value never reads as a real command.
/// </remarks>
public enum SmtpVerb : byte
{
    Unknown,
    Helo,
    Ehlo,
    Mail,
    Rcpt,
    Data,
    Bdat,
    Rset,
    Noop,
    Quit,
    Vrfy,
    Expn,
    Help,
    StartTls,
    Auth,
}
