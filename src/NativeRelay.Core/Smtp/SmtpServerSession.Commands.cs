using System.Buffers;
using System.Text;
using NativeRelay.Policy;
using NativeRelay.Spool;

namespace NativeRelay.Smtp;

/// <summary>The envelope commands: EHLO/HELO, MAIL (with its ESMTP parameters) and RCPT (relay policy, DSN parameters).</summary>
internal sealed partial class SmtpServerSession
{
    private Step Hello(bool extended, ReadOnlySpan<byte> argument)
    {
        int space = argument.IndexOfAny((byte)' ', (byte)'\t');
        var name = space < 0 ? argument : argument[..space];
        if (name.IsEmpty || name.ContainsAnyExceptInRange((byte)33, (byte)126))
            return Error(SmtpReplies.HeloNeedsDomain);
        ResetTransaction();
        _esmtp = extended;
        _heloName = Encoding.ASCII.GetString(name);
        _phase = Phase.Ready;
        var o = _output;
        o.Write(extended ? "250-"u8 : "250 "u8);
        o.Write(_server.HostnameBytes);
        o.Write(" Hello "u8);
        o.Write(name);
        o.Write("\r\n"u8);
        if (extended)
            o.Write(_server.EhloCapabilities(OfferStartTls, OfferAuth, requireTls: _tls is not null));
        return Step.Continue;
    }

    private Step Mail(ReadOnlySpan<byte> argument)
    {
        if (_phase == Phase.Connected)
            return Error(SmtpReplies.BadSequenceNeedHelo);
        if (_phase != Phase.Ready)
            return Error(SmtpReplies.BadSequenceNestedMail);
        // The spool's disk is full: refuse before the client sends the data (RFC 3463 4.3.1).
        if (_server.Spool.IsFull)
            return Reply(SmtpReplies.InsufficientStorage);
        // RFC 6409 4.3: a submission server requires authentication before MAIL.
        if (_listener.IsSubmission && _authenticatedUser is null)
            return Error(SmtpReplies.AuthRequired);

        // SMTPUTF8 (RFC 6531) comes after the path it allows: look for the word first, parse
        // with UTF-8 allowed only then, and check below that it really was a parameter.
        bool nonAscii = argument.ContainsAnyExceptInRange((byte)0, (byte)127);
        bool utf8 = _esmtp && nonAscii && MentionsSmtpUtf8(argument);
        var error = MailboxPath.Parse(argument, "FROM:"u8, allowUtf8: utf8, allowBareAddress: false,
            out var address, out var parameters);
        if (error != PathError.None)
            return Error(PathErrorReply(error, SmtpReplies.MailSyntax, SmtpReplies.BadSenderAddress));
        // The parser lets a bare "postmaster" through for RCPT (RFC 5321 4.5.1); a sender needs a domain.
        if (!address.IsEmpty && !MailboxPath.TrySplit(address, out _, out _))
            return Error(SmtpReplies.BadSenderAddress);

        var flags = EnvelopeFlags.None;
        var seen = Seen.None;
        byte[]? envelopeId = null;
        var p = new EsmtpParameters(parameters, allowUtf8: utf8);
        while (p.MoveNext())
        {
            if (!_esmtp)
                return Error(SmtpReplies.UnknownParameter);
            var keyword = p.Keyword;
            var value = p.Value;
            Seen which;
            if (EsmtpParameters.KeywordEquals(keyword, "SIZE"u8))
            {
                which = Seen.Size;
                if (!EsmtpParameters.TryParseSize(value, out long size))
                    return Error(SmtpReplies.SizeParamSyntax);
                if (size > _server.Settings.Limits.MaxMessageSize)
                    return Error(SmtpReplies.SizeExceededAtMail);
            }
            else if (EsmtpParameters.KeywordEquals(keyword, "BODY"u8))
            {
                which = Seen.Body;
                if (EsmtpParameters.KeywordEquals(value, "8BITMIME"u8))
                    flags |= EnvelopeFlags.EightBitMime;
                else if (EsmtpParameters.KeywordEquals(value, "BINARYMIME"u8))
                    return Error(SmtpReplies.BinaryMimeNotSupported);
                else if (!EsmtpParameters.KeywordEquals(value, "7BIT"u8))
                    return Error(SmtpReplies.BodyParamSyntax);
            }
            else if (EsmtpParameters.KeywordEquals(keyword, "SMTPUTF8"u8))
            {
                which = Seen.SmtpUtf8;
                if (!value.IsEmpty)
                    return Error(SmtpReplies.SmtpUtf8ParamSyntax);
                flags |= EnvelopeFlags.SmtpUtf8;
            }
            else if (EsmtpParameters.KeywordEquals(keyword, "RET"u8))
            {
                which = Seen.Ret;
                if (EsmtpParameters.KeywordEquals(value, "FULL"u8))
                    flags |= EnvelopeFlags.ReturnFull;
                else if (EsmtpParameters.KeywordEquals(value, "HDRS"u8))
                    flags |= EnvelopeFlags.ReturnHeadersOnly;
                else
                    return Error(SmtpReplies.RetSyntax);
            }
            else if (EsmtpParameters.KeywordEquals(keyword, "ENVID"u8))
            {
                which = Seen.EnvId;
                envelopeId = DecodePrintableXtext(value, MaxEnvelopeIdLength);
                if (envelopeId is null)
                    return Error(SmtpReplies.EnvIdSyntax);
            }
            else if (EsmtpParameters.KeywordEquals(keyword, "REQUIRETLS"u8))
            {
                which = Seen.RequireTls;
                if (!value.IsEmpty)
                    return Error(SmtpReplies.RequireTlsParamSyntax);
                if (_tls is null)
                    return Error(SmtpReplies.RequireTlsWithoutTls);
                flags |= EnvelopeFlags.RequireTls;
            }
            else if (EsmtpParameters.KeywordEquals(keyword, "AUTH"u8))
            {
                // RFC 4954 5: the original submitter as another server asserts it. Checked, not trusted.
                which = Seen.Auth;
                if (!(value.SequenceEqual("<>"u8) || DecodePrintableXtext(value, MailboxPath.MaxPathLength * 3) is not null))
                    return Error(SmtpReplies.AuthParamSyntax);
            }
            else
            {
                return Error(SmtpReplies.UnknownParameter);
            }
            if ((seen & which) != 0)
                return Error(SmtpReplies.DuplicateParameter);
            seen |= which;
        }
        if (p.IsMalformed)
            return Error(SmtpReplies.MailSyntax);
        if (nonAscii && (flags & EnvelopeFlags.SmtpUtf8) == 0)
            return Error(SmtpReplies.NonAsciiAddress);

        _sender = address.ToArray();
        _flags = flags;
        _envelopeId = envelopeId;
        _phase = Phase.HaveSender;
        _transactionDeadline = Environment.TickCount64 + _transactionMilliseconds;
        if (StartSenderChecks())
            return Step.CheckSender; // the reply waits for SPF (CheckSenderAsync)
        return Reply(SmtpReplies.SenderOk);
    }

    /// <summary>True when " SMTPUTF8" appears as a word (any case); the parameter loop confirms it.</summary>
    private static bool MentionsSmtpUtf8(ReadOnlySpan<byte> argument)
    {
        const int Length = 9; // " SMTPUTF8"
        for (int i = argument.IndexOf((byte)' '); i >= 0 && i + Length <= argument.Length; )
        {
            if (Ascii.EqualsIgnoreCase(argument.Slice(i, Length), " SMTPUTF8"u8)
                && (i + Length == argument.Length || argument[i + Length] == (byte)' '))
                return true;
            int next = argument[(i + 1)..].IndexOf((byte)' ');
            i = next < 0 ? -1 : i + 1 + next;
        }
        return false;
    }

    private Step Rcpt(ReadOnlySpan<byte> argument)
    {
        if (_phase == Phase.Connected)
            return Error(SmtpReplies.BadSequenceNeedHelo);
        if (_phase is not (Phase.HaveSender or Phase.HaveRecipients))
            return Error(SmtpReplies.BadSequenceNeedMail);

        bool utf8 = (_flags & EnvelopeFlags.SmtpUtf8) != 0;
        var error = MailboxPath.Parse(argument, "TO:"u8, allowUtf8: utf8, allowBareAddress: false,
            out var address, out var parameters);
        if (error != PathError.None)
            return Error(PathErrorReply(error, SmtpReplies.RcptSyntax, SmtpReplies.BadRecipientAddress));
        if (address.IsEmpty)
            return Error(SmtpReplies.BadRecipientAddress);

        var notify = DsnNotify.None;
        byte[]? orcpt = null;
        var seen = Seen.None;
        var p = new EsmtpParameters(parameters, allowUtf8: utf8);
        while (p.MoveNext())
        {
            if (!_esmtp)
                return Error(SmtpReplies.UnknownParameter);
            Seen which;
            if (EsmtpParameters.KeywordEquals(p.Keyword, "NOTIFY"u8))
            {
                which = Seen.Notify;
                notify = ParseNotify(p.Value);
                if (notify == DsnNotify.None)
                    return Error(SmtpReplies.NotifySyntax);
            }
            else if (EsmtpParameters.KeywordEquals(p.Keyword, "ORCPT"u8))
            {
                which = Seen.Orcpt;
                orcpt = ParseOrcpt(p.Value);
                if (orcpt is null)
                    return Error(SmtpReplies.OrcptSyntax);
            }
            else
            {
                return Error(SmtpReplies.UnknownParameter);
            }
            if ((seen & which) != 0)
                return Error(SmtpReplies.DuplicateParameter);
            seen |= which;
        }
        if (p.IsMalformed)
            return Error(SmtpReplies.RcptSyntax);

        bool mayRelay = _authenticatedUser is not null || (_isRelayClient && !_listener.IsSubmission);
        switch (_server.Policy.Check(address, mayRelay))
        {
            case RecipientVerdict.RelayDenied:
                return Error(SmtpReplies.RelayDenied);
            case RecipientVerdict.UnknownUser:
                return UnknownUser(address);
        }
        // The suppression list: one keyed hash and one probe per scope in use, no allocation. Not
        // counted as a client error: a bulk sender's list may well hold addresses that bounced.
        if (_server.Suppression is { } suppression && _server.Settings.Suppression.RefuseAtRcpt
            && suppression.IsSuppressed(address, PoolAtRcpt(), SenderDomain()))
        {
            Telemetry.RelayMetrics.RecipientsSuppressed.Increment();
            return Reply(NativeRelay.Traffic.Suppression.SuppressionReplies.Refused);
        }
        if (_recipients.Count >= _server.Settings.Limits.MaxRecipients)
            return Reply(SmtpReplies.TooManyRecipients); // a 4xx: the client sends the rest in another transaction

        _recipients.Add(address.ToArray());
        _notify.Add(notify);
        _orcpt.Add(orcpt);
        _anyNotify |= notify != DsnNotify.None;
        _anyOrcpt |= orcpt is not null;
        _phase = Phase.HaveRecipients;
        return Reply(SmtpReplies.RecipientOk);
    }

    /// <summary>The envelope sender's domain (empty for the null sender), for sender-domain suppression entries.</summary>
    private ReadOnlySpan<byte> SenderDomain()
    {
        int at = _sender.AsSpan().LastIndexOf((byte)'@');
        return at < 0 ? default : _sender.AsSpan(at + 1);
    }

    /// <summary>"550 5.1.1 &lt;address&gt;: Recipient address rejected: ..." as Postfix words it, rendered on the stack.</summary>
    private Step UnknownUser(ReadOnlySpan<byte> address)
    {
        Telemetry.RelayMetrics.RecipientsUnknown.Increment();
        var prefix = "550 5.1.1 <"u8;
        var suffix = ">: Recipient address rejected: User unknown in local recipient table\r\n"u8;
        if (address.Length > MailboxPath.MaxPathLength)
            return Error(SmtpReplies.UnknownUser);
        Span<byte> reply = stackalloc byte[prefix.Length + MailboxPath.MaxPathLength + suffix.Length];
        prefix.CopyTo(reply);
        address.CopyTo(reply[prefix.Length..]);
        suffix.CopyTo(reply[(prefix.Length + address.Length)..]);
        return Error(reply[..(prefix.Length + address.Length + suffix.Length)]);
    }

    /// <summary>RFC 3461 4.1: "NEVER" alone, or a comma list of SUCCESS, FAILURE, DELAY. None on a syntax error.</summary>
    internal static DsnNotify ParseNotify(ReadOnlySpan<byte> value)
    {
        var result = DsnNotify.None;
        if (value.IsEmpty)
            return DsnNotify.None;
        while (true)
        {
            int comma = value.IndexOf((byte)',');
            var item = comma < 0 ? value : value[..comma];
            DsnNotify one;
            if (Ascii.EqualsIgnoreCase(item, "NEVER"u8))
                one = DsnNotify.Never;
            else if (Ascii.EqualsIgnoreCase(item, "SUCCESS"u8))
                one = DsnNotify.Success;
            else if (Ascii.EqualsIgnoreCase(item, "FAILURE"u8))
                one = DsnNotify.Failure;
            else if (Ascii.EqualsIgnoreCase(item, "DELAY"u8))
                one = DsnNotify.Delay;
            else
                return DsnNotify.None;
            if ((result & one) != 0)
                return DsnNotify.None;
            result |= one;
            if (comma < 0)
                break;
            value = value[(comma + 1)..];
        }
        return (result & DsnNotify.Never) != 0 && result != DsnNotify.Never ? DsnNotify.None : result;
    }

    /// <summary>
    /// RFC 3461 4.2: <c>addr-type ";" xtext</c>, kept as "addr-type;decoded". With the "utf-8"
    /// type of RFC 6533 the value is utf-8-addr-xtext/unitext and is kept as given.
    /// </summary>
    internal static byte[]? ParseOrcpt(ReadOnlySpan<byte> value)
    {
        if (value.Length > MaxOrcptLength)
            return null;
        int semicolon = value.IndexOf((byte)';');
        if (semicolon <= 0 || semicolon == value.Length - 1)
            return null;
        var type = value[..semicolon];
        var text = value[(semicolon + 1)..];
        if (type.ContainsAnyExcept(OrcptTypeBytes))
            return null;
        if (Ascii.EqualsIgnoreCase(type, "utf-8"u8))
        {
            if (text.ContainsAnyInRange((byte)0, (byte)32) || text.Contains((byte)127))
                return null;
            return value.ToArray();
        }
        var decoded = DecodePrintableXtext(text, MaxOrcptLength);
        if (decoded is null)
            return null;
        var result = new byte[semicolon + 1 + decoded.Length];
        value[..(semicolon + 1)].CopyTo(result);
        decoded.CopyTo(result.AsSpan(semicolon + 1));
        return result;
    }

    private static readonly SearchValues<byte> OrcptTypeBytes =
        SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-/=?^_`{|}~"u8);

    /// <summary>Decodes xtext whose decoded form must be printable ASCII (it ends up in DSN header fields).</summary>
    private static byte[]? DecodePrintableXtext(ReadOnlySpan<byte> xtext, int maxLength)
    {
        if (xtext.IsEmpty || xtext.Length > maxLength)
            return null;
        Span<byte> decoded = stackalloc byte[xtext.Length];
        if (EsmtpParameters.DecodeXtext(xtext, decoded, out int written) != OperationStatus.Done)
            return null;
        decoded = decoded[..written];
        if (decoded.ContainsAnyExceptInRange((byte)32, (byte)126))
            return null;
        return decoded.ToArray();
    }

    private static ReadOnlySpan<byte> PathErrorReply(PathError error, ReadOnlySpan<byte> syntax, ReadOnlySpan<byte> badAddress) =>
        error switch
        {
            PathError.Syntax or PathError.MissingPrefix or PathError.Empty => syntax,
            PathError.NonAscii => SmtpReplies.NonAsciiAddress,
            _ => badAddress,
        };
}
