namespace NativeRelay.Smtp;

/// <summary>
/// Fixed replies as UTF-8 literals: writing one is a memcpy into the output pipe. Enhanced status
/// codes per RFC 3463 / RFC 5248. Replies that carry variable text are built in SmtpServerSession.
/// </summary>
internal static class SmtpReplies
{
    public static ReadOnlySpan<byte> Ok => "250 2.0.0 Ok\r\n"u8;
    public static ReadOnlySpan<byte> SenderOk => "250 2.1.0 Sender ok\r\n"u8;
    public static ReadOnlySpan<byte> RecipientOk => "250 2.1.5 Recipient ok\r\n"u8;
    public static ReadOnlySpan<byte> StartData => "354 End data with <CR><LF>.<CR><LF>\r\n"u8;
    public static ReadOnlySpan<byte> Bye => "221 2.0.0 Bye\r\n"u8;
    public static ReadOnlySpan<byte> Vrfy => "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery\r\n"u8;
    public static ReadOnlySpan<byte> Help => "214 2.0.0 Commands: HELO EHLO STARTTLS AUTH MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP; see RFC 5321\r\n"u8;

    public static ReadOnlySpan<byte> BadSequenceNeedHelo => "503 5.5.1 Bad sequence of commands: send EHLO or HELO first\r\n"u8;
    public static ReadOnlySpan<byte> BadSequenceNestedMail => "503 5.5.1 Bad sequence of commands: MAIL already given\r\n"u8;
    public static ReadOnlySpan<byte> BadSequenceNeedMail => "503 5.5.1 Bad sequence of commands: send MAIL first\r\n"u8;
    public static ReadOnlySpan<byte> BadSequenceNeedRcpt => "503 5.5.1 Bad sequence of commands: send RCPT first\r\n"u8;
    public static ReadOnlySpan<byte> Unrecognized => "500 5.5.2 Command not recognized\r\n"u8;
    public static ReadOnlySpan<byte> LineTooLong => "500 5.5.6 Command line too long (the limit is 512 octets)\r\n"u8;
    public static ReadOnlySpan<byte> NotImplemented => "502 5.5.1 Command not implemented\r\n"u8;
    public static ReadOnlySpan<byte> HeloNeedsDomain => "501 5.5.4 Syntax: EHLO domain-or-address-literal\r\n"u8;
    public static ReadOnlySpan<byte> NoArgumentsAllowed => "501 5.5.4 Syntax error: no arguments allowed\r\n"u8;
    public static ReadOnlySpan<byte> MailSyntax => "501 5.5.4 Syntax: MAIL FROM:<address> [parameters]\r\n"u8;
    public static ReadOnlySpan<byte> RcptSyntax => "501 5.5.4 Syntax: RCPT TO:<address> [parameters]\r\n"u8;
    public static ReadOnlySpan<byte> BadSenderAddress => "501 5.1.7 Bad sender address syntax\r\n"u8;
    public static ReadOnlySpan<byte> BadRecipientAddress => "501 5.1.3 Bad recipient address syntax\r\n"u8;
    public static ReadOnlySpan<byte> NonAsciiAddress => "553 5.6.7 Non-ASCII address requires SMTPUTF8\r\n"u8;
    public static ReadOnlySpan<byte> UnknownParameter => "555 5.5.4 Unsupported MAIL/RCPT parameter\r\n"u8;
    public static ReadOnlySpan<byte> SizeExceededAtMail => "552 5.3.4 Message size exceeds fixed maximum message size\r\n"u8;
    public static ReadOnlySpan<byte> TooManyRecipients => "452 4.5.3 Too many recipients\r\n"u8;
    public static ReadOnlySpan<byte> RelayDenied => "554 5.7.1 Relay access denied\r\n"u8;
    public static ReadOnlySpan<byte> SizeExceededAtData => "552 5.3.4 Message size exceeds fixed maximum message size\r\n"u8;
    public static ReadOnlySpan<byte> DataLineTooLong => "550 5.6.0 Message refused: a line is longer than 998 octets (RFC 5322 2.1.1)\r\n"u8;
    public static ReadOnlySpan<byte> BareLineEnding => "554 5.6.0 Message refused: bare CR or LF in message data (RFC 5321 2.3.8); closing connection\r\n"u8;
    public static ReadOnlySpan<byte> MailLoop => "554 5.4.6 Too many hops: mail loop detected\r\n"u8;
    /// <summary>The spool's disk is (nearly) full: RFC 5321 4.5.3.1.10 and RFC 3463 4.3.1; the client keeps the message and retries.</summary>
    public static ReadOnlySpan<byte> InsufficientStorage => "452 4.3.1 Insufficient system storage\r\n"u8;
    public static ReadOnlySpan<byte> SpoolFailure => "451 4.3.0 Local error in processing: message not queued, try again later\r\n"u8;
    public static ReadOnlySpan<byte> TooManyErrors => "421 4.7.0 Too many errors; closing connection\r\n"u8;
    public static ReadOnlySpan<byte> Timeout => "421 4.4.2 Timeout exceeded; closing connection\r\n"u8;
    public static ReadOnlySpan<byte> PregreetViolation => "554 5.5.1 Protocol error: talked before the greeting\r\n"u8;
    public static ReadOnlySpan<byte> ShuttingDown => "421 4.3.2 Service shutting down; closing connection\r\n"u8;
    public static ReadOnlySpan<byte> TooManyConnections => "421 4.7.0 Too many connections; try again later\r\n"u8;
    public static ReadOnlySpan<byte> SizeParamSyntax => "501 5.5.4 Syntax error in SIZE parameter\r\n"u8;
    public static ReadOnlySpan<byte> BodyParamSyntax => "501 5.5.4 BODY must be 7BIT or 8BITMIME\r\n"u8;

    public static ReadOnlySpan<byte> SmtpUtf8ParamSyntax => "501 5.5.4 SMTPUTF8 takes no value\r\n"u8;
    public static ReadOnlySpan<byte> RequireTlsParamSyntax => "501 5.5.4 REQUIRETLS takes no value\r\n"u8;
    /// <summary>RFC 8689 4.1: REQUIRETLS only in a session protected by TLS.</summary>
    public static ReadOnlySpan<byte> RequireTlsWithoutTls => "530 5.7.10 REQUIRETLS needs a TLS session (STARTTLS first)\r\n"u8;
    public static ReadOnlySpan<byte> BinaryMimeNotSupported => "555 5.5.4 BODY=BINARYMIME is not supported\r\n"u8;
    public static ReadOnlySpan<byte> DuplicateParameter => "501 5.5.4 Duplicate MAIL/RCPT parameter\r\n"u8;
    public static ReadOnlySpan<byte> RetSyntax => "501 5.5.4 RET must be FULL or HDRS\r\n"u8;
    public static ReadOnlySpan<byte> EnvIdSyntax => "501 5.5.4 Syntax error in ENVID parameter (xtext, at most 100 characters)\r\n"u8;
    public static ReadOnlySpan<byte> AuthParamSyntax => "501 5.5.4 Syntax error in AUTH parameter\r\n"u8;
    public static ReadOnlySpan<byte> NotifySyntax => "501 5.5.4 NOTIFY must be NEVER or a list of SUCCESS, FAILURE and DELAY\r\n"u8;
    public static ReadOnlySpan<byte> OrcptSyntax => "501 5.5.4 Syntax error in ORCPT parameter (addr-type;xtext)\r\n"u8;
    public static ReadOnlySpan<byte> UnknownUser => "550 5.1.1 Recipient address rejected: User unknown in local recipient table\r\n"u8;

    // Limits.
    public static ReadOnlySpan<byte> TooManyCommands => "421 4.7.0 Too many commands; closing connection\r\n"u8;
    public static ReadOnlySpan<byte> TransactionTimeout => "421 4.4.2 Transaction time limit exceeded; closing connection\r\n"u8;

    // CHUNKING (RFC 3030).
    public static ReadOnlySpan<byte> BdatSyntax => "501 5.5.4 Syntax: BDAT chunk-size [LAST]; closing connection, since the chunk cannot be skipped\r\n"u8;
    public static ReadOnlySpan<byte> BdatChunkTooLarge => "552 5.3.4 Chunk exceeds the maximum message size; closing connection\r\n"u8;
    public static ReadOnlySpan<byte> DataAfterBdat => "503 5.5.1 Bad sequence of commands: DATA after BDAT\r\n"u8;
    public static ReadOnlySpan<byte> BdatBareLineEnding => "554 5.6.0 Message refused: bare CR or LF in message data (RFC 5321 2.3.8)\r\n"u8;

    // STARTTLS (RFC 3207).
    public static ReadOnlySpan<byte> ReadyToStartTls => "220 2.0.0 Ready to start TLS\r\n"u8;
    public static ReadOnlySpan<byte> TlsAlreadyActive => "503 5.5.1 Bad sequence of commands: TLS already active\r\n"u8;
    public static ReadOnlySpan<byte> StartTlsInTransaction => "503 5.5.1 Bad sequence of commands: STARTTLS inside a mail transaction\r\n"u8;

    // AUTH (RFC 4954).
    public static ReadOnlySpan<byte> AuthNotEnabled => "503 5.5.1 Authentication not enabled on this port\r\n"u8;
    public static ReadOnlySpan<byte> AuthAlreadyDone => "503 5.5.1 Bad sequence of commands: already authenticated\r\n"u8;
    public static ReadOnlySpan<byte> AuthInTransaction => "503 5.5.1 Bad sequence of commands: AUTH inside a mail transaction\r\n"u8;
    public static ReadOnlySpan<byte> AuthNeedsEncryption => "538 5.7.11 Encryption required for requested authentication mechanism\r\n"u8;
    public static ReadOnlySpan<byte> AuthUnknownMechanism => "504 5.5.4 Unrecognized authentication type\r\n"u8;
    public static ReadOnlySpan<byte> AuthSyntax => "501 5.5.4 Syntax: AUTH mechanism [initial-response]\r\n"u8;
    public static ReadOnlySpan<byte> AuthCancelled => "501 5.7.0 Authentication cancelled\r\n"u8;
    public static ReadOnlySpan<byte> AuthBadResponse => "501 5.5.2 Cannot decode response\r\n"u8;
    public static ReadOnlySpan<byte> AuthSucceeded => "235 2.7.0 Authentication successful\r\n"u8;
    public static ReadOnlySpan<byte> AuthFailed => "535 5.7.8 Authentication credentials invalid\r\n"u8;
    public static ReadOnlySpan<byte> AuthTooManyFailures => "421 4.7.0 Too many failed authentication attempts; closing connection\r\n"u8;
    public static ReadOnlySpan<byte> AuthRequired => "530 5.7.0 Authentication required\r\n"u8;
}
