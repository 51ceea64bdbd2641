using NativeRelay.Smtp;

namespace NativeRelay.Message;

/// <summary>RFC 3464 2.3.3: what happened to a recipient.</summary>
public enum DsnAction : byte
{
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

/// <summary>One recipient's block in a DSN (RFC 3464 2.3).</summary>
public sealed class DsnRecipient
{
    /// <summary>The recipient as it was delivered to (the envelope address, UTF-8).</summary>
    public required byte[] FinalRecipient { get; init; }
    /// <summary>ORCPT as given ("rfc822;user@example.com", decoded), or null.</summary>
    public byte[]? OriginalRecipient { get; init; }
    public required DsnAction Action { get; init; }
    /// <summary>RFC 3463 status, e.g. "5.1.1".</summary>
    public required string Status { get; init; }
    /// <summary>The next hop that gave the diagnostic (host name), or null when no remote was reached.</summary>
    public string? RemoteMta { get; init; }
    /// <summary>The reply, e.g. "550 5.1.1 &lt;x@example.com&gt;: no such user", or null.</summary>
    public string? Diagnostic { get; init; }
    /// <summary>The diagnostic came from the remote SMTP server (type "smtp"); otherwise this relay made it up.</summary>
    public bool DiagnosticFromRemote { get; init; }
    /// <summary>The bounce class of the diagnostic ("invalid-recipient", ...; Traffic/Bounces), or null.</summary>
    public string? BounceClass { get; init; }
    public DateTimeOffset? LastAttempt { get; init; }
    /// <summary>For delayed recipients: when the relay gives up.</summary>
    public DateTimeOffset? WillRetryUntil { get; init; }

    /// <summary>
    /// The RFC 3463 status of a reply: its enhanced code when it has one of the same class
    /// ("550 5.1.1 ..."), otherwise the class alone ("5.0.0", "4.0.0", "2.0.0").
    /// </summary>
    public static string StatusOf(SmtpReply reply)
    {
        int cls = reply.Code / 100;
        var text = reply.Text.AsSpan();
        if (text.Length >= 5 && text[0] == (char)('0' + cls) && text[1] == '.')
        {
            int end = 2;
            int dots = 1;
            while (end < text.Length && (char.IsAsciiDigit(text[end]) || text[end] == '.'))
            {
                if (text[end] == '.')
                    dots++;
                end++;
            }
            var code = text[..end];
            if (dots == 2 && code[^1] != '.' && !code.Contains("..", StringComparison.Ordinal) && end - 2 <= 8
                && (end == text.Length || text[end] == ' '))
                return code.ToString();
        }
        return cls switch { 2 => "2.0.0", 4 => "4.0.0", _ => "5.0.0" };
    }
}

/// <summary>Everything a DSN says about one message (RFC 3464 2.2: the per-message fields, then the recipients).</summary>
public sealed class DsnReport
{
    /// <summary>This relay's name (Reporting-MTA, MAILER-DAEMON@...).</summary>
    public required string ReportingMta { get; init; }
    /// <summary>The original envelope sender: the DSN goes to it.</summary>
    public required byte[] ReturnPath { get; init; }
    public required ulong OriginalQueueId { get; init; }
    /// <summary>The DSN's own queue id (its Message-ID).</summary>
    public required ulong DsnQueueId { get; init; }
    public required DateTimeOffset ArrivalDate { get; init; }
    public required DateTimeOffset Date { get; init; }
    /// <summary>ENVID (RFC 3461), decoded, or null.</summary>
    public byte[]? EnvelopeId { get; init; }
    public required IReadOnlyList<DsnRecipient> Recipients { get; init; }
    /// <summary>Return the whole message (message/rfc822) rather than its headers (text/rfc822-headers).</summary>
    public bool ReturnFullMessage { get; init; }
    /// <summary>A note on why only headers are returned although the whole message was asked for, or null.</summary>
    public string? ReturnNote { get; init; }
    /// <summary>The message was SMTPUTF8: use message/global-delivery-status and message/global (RFC 6533, RFC 6532).</summary>
    public bool International { get; init; }
}
