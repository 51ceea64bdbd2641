using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text;
using NativeRelay.Delivery;
using NativeRelay.Message;
using NativeRelay.Spool;

namespace NativeRelay.Smtp;

/// <summary>The message: DATA and BDAT (RFC 3030), the un-stuffing and chunk reading, and the end of data (trace headers, spool, commit, 250).</summary>
internal sealed partial class SmtpServerSession
{
    private Step Data(ReadOnlySpan<byte> argument)
    {
        if (_phase == Phase.Connected)
            return Error(SmtpReplies.BadSequenceNeedHelo);
        if (_phase == Phase.Ready)
            return Error(SmtpReplies.BadSequenceNeedMail);
        if (_phase != Phase.HaveRecipients)
            return Error(SmtpReplies.BadSequenceNeedRcpt);
        if (_usedBdat)
            return Error(SmtpReplies.DataAfterBdat);
        if (!argument.IsEmpty)
            return Error(SmtpReplies.NoArgumentsAllowed);

        StartMessage();
        _unstuffer.Reset();
        _phase = Phase.Data;
        return Reply(SmtpReplies.StartData);
    }

    private void StartMessage()
    {
        _queueId = _server.Ids.Next();
        _dataStarted = DateTimeOffset.UtcNow;
        _message = MessageBuffer.Rent();
        _message.Reserve(_frontReserve);
    }

    /// <summary>BDAT chunk-size [LAST] (RFC 3030). The chunk's bytes follow the command line at once.</summary>
    private Step Bdat(ReadOnlySpan<byte> argument)
    {
        if (!TryParseBdat(argument, out long size, out bool last))
        {
            // Where the chunk ends is unknown, so its bytes would be read as commands: close.
            ResetTransaction();
            _output.Write(SmtpReplies.BdatSyntax);
            _closeAfterFlush = true;
            return Step.Close;
        }
        if (size > _server.Settings.Limits.MaxMessageSize)
        {
            ResetTransaction();
            _output.Write(SmtpReplies.BdatChunkTooLarge);
            _closeAfterFlush = true;
            return Step.Close;
        }

        if (_failedBdatReply is { } failed)
        {
            // More chunks of a transaction that already failed: same answer, not counted again.
            _skipRemaining = size;
            if (last)
                _failedBdatReply = null;
            return Reply(failed);
        }

        byte[]? refusal = _phase switch
        {
            Phase.Connected => BdatNeedHelo,
            Phase.Ready => BdatNeedMail,
            Phase.HaveSender => BdatNeedRcpt,
            _ => null,
        };
        if (refusal is not null)
        {
            _skipRemaining = size;
            _failedBdatReply = last ? null : refusal;
            return Error(refusal);
        }

        if (!_usedBdat)
        {
            _usedBdat = true;
            StartMessage();
            _bdat.StartMessage();
        }
        _bdat.StartChunk(size, last);
        _phase = Phase.Bdat;
        return size == 0 ? ChunkComplete() : Step.Continue;
    }

    internal static bool TryParseBdat(ReadOnlySpan<byte> argument, out long size, out bool last)
    {
        last = false;
        int space = argument.IndexOf((byte)' ');
        var number = space < 0 ? argument : argument[..space];
        if (space >= 0)
        {
            if (!Ascii.EqualsIgnoreCase(argument[(space + 1)..], "LAST"u8))
            {
                size = 0;
                return false;
            }
            last = true;
        }
        return EsmtpParameters.TryParseSize(number, out size);
    }

    private void FeedChunk(ref ReadOnlySequence<byte> buffer)
    {
        long consumed = 0;
        foreach (var memory in buffer)
        {
            if (_bdat.ChunkRemaining == 0)
                break;
            var span = memory.Span;
            int used = _bdat.Consume(span, _message!);
            consumed += used;
            if (used < span.Length)
                break;
        }
        buffer = buffer.Slice(consumed);
    }

    /// <summary>All bytes of a chunk are in: 250 for a middle chunk, the end of the message for LAST.</summary>
    private Step ChunkComplete()
    {
        if (_bdat.IsLast)
            return Step.EndOfData;
        if (_bdat.Failed)
        {
            // Refuse now (RFC 3030 lets the server answer any chunk with an error); later chunks
            // of this transaction get the same answer until its LAST.
            var reply = BdatFailureReply();
            _server.Log.Info($"{_clientAddress}: refused a BDAT message: {Encoding.ASCII.GetString(reply).TrimEnd()}");
            ResetTransaction();
            _failedBdatReply = reply;
            return Error(reply);
        }
        _phase = Phase.HaveRecipients;
        Span<byte> text = stackalloc byte[64];
        "250 2.0.0 "u8.CopyTo(text);
        int n = 10;
        _bdat.ChunkSize.TryFormat(text[n..], out int digits);
        n += digits;
        " octets received\r\n"u8.CopyTo(text[n..]);
        n += 18;
        return Reply(text[..n]);
    }

    private byte[] BdatFailureReply() =>
        _bdat.SizeExceeded ? BdatTooBig : _bdat.BareLineEnding ? BdatBareLine : _server.DataLineTooLongReply;

    private DataStatus FeedData(ref ReadOnlySequence<byte> buffer)
    {
        long consumed = 0;
        var status = DataStatus.NeedMoreData;
        foreach (var memory in buffer)
        {
            // A line over the limit refuses the message at its end: the rest is only counted (its size still decides 552 or 550).
            IBufferWriter<byte> into = _unstuffer.LineTooLong ? DiscardingWriter.Instance : _message!;
            status = _unstuffer.Process(memory.Span, into, out int used);
            consumed += used;
            if (status != DataStatus.NeedMoreData)
                break;
        }
        buffer = buffer.Slice(consumed);
        return status;
    }

    /// <summary>The end of the data (DATA terminator or BDAT LAST): check, trace, spool, commit, then 250.</summary>
    // Pooled: once per message, awaited once by the session loop.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask FinishMessageAsync()
    {
        var message = _message!;
        bool bdat = _usedBdat;
        if (bdat)
            _bdat.FinishMessage(message);
        bool sizeExceeded = bdat ? _bdat.SizeExceeded : _unstuffer.SizeExceeded;
        bool lineTooLong = bdat ? _bdat.LineTooLong : _unstuffer.LineTooLong;
        bool bareLineEnding = bdat && _bdat.BareLineEnding;
        if (sizeExceeded || lineTooLong || bareLineEnding)
        {
            Telemetry.RelayMetrics.MessagesRejected.Increment();
            ResetTransaction();
            Error(sizeExceeded ? SmtpReplies.SizeExceededAtData
                : bareLineEnding ? SmtpReplies.BdatBareLineEnding
                : _server.DataLineTooLongReply);
            return;
        }

        var facts = ScanHeaders(message);
        if (facts.ReceivedCount >= _server.Settings.Limits.MaxReceivedHeaders)
        {
            _server.Log.Info($"{_clientAddress}: refused a message with too many Received headers (mail loop)");
            Telemetry.RelayMetrics.MessagesRejected.Increment();
            ResetTransaction();
            Reply(SmtpReplies.MailLoop);
            return;
        }
        // Traffic control: the message's pool, decided here and stored with it; a pool header is taken out.
        string? pool = _server.Settings.Traffic.PoolRules is { IsEmpty: false } poolRules ? ChoosePool(message, poolRules) : null;
        bool hold = false;
        if (ChecksInbound)
        {
            (bool accepted, byte[] authResults, hold) = await AuthenticateMessageAsync(message);
            if (!accepted)
                return;
            WriteTraceHeaders(message, facts);
            message = PrependAuthenticationResults(message, authResults);
        }
        else
        {
            WriteTraceHeaders(message, facts);
        }
        if (_server.Signer is { } signer)
            message = await SignAsync(signer, message);

        var envelope = new Envelope
        {
            Sender = _sender,
            Recipients = _recipients.ToArray(),
            Notify = _anyNotify ? _notify.ToArray() : null,
            OriginalRecipients = _anyOrcpt ? _orcpt.ToArray() : null,
            EnvelopeId = _envelopeId,
            AuthenticatedUser = _authenticatedUser,
            ClientAddress = _clientAddressText ??= _clientAddress.ToString(),
            HeloName = _heloName,
            ArrivalUnixMs = _dataStarted.ToUnixTimeMilliseconds(),
            Flags = _flags | (_authenticatedUser is null ? EnvelopeFlags.None : EnvelopeFlags.Authenticated)
                    // RFC 8689 5: with REQUIRETLS the header field is ignored (REQUIRETLS wins).
                    | (facts.TlsRequiredNo && (_flags & EnvelopeFlags.RequireTls) == 0 ? EnvelopeFlags.TlsOptional : EnvelopeFlags.None),
            Pool = pool,
        };
        ulong id = _queueId;
        SpooledMessage spooled;
        try
        {
            spooled = await _server.Accept.AppendAsync(id, envelope, message);
        }
        catch (Exception e)
        {
            SpoolFailed(id, e);
            return;
        }
        try
        {
            await _server.Accept.WaitForCommitAsync(spooled.Head);
            if (hold)
                await HoldQuarantinedAsync(id);
        }
        catch (Exception e)
        {
            _server.Accept.Abandon(spooled);
            SpoolFailed(id, e);
            return;
        }

        WriteQueuedReply(id);
        _server.CountAccepted(message.ContentLength, envelope.Recipients.Length);
        _server.Log.Info($"{new QueueIdText(id)}: queued from={envelope.SenderForLog} rcpts={envelope.Recipients.Length} size={message.ContentLength} client={_clientAddress}{(_tls is null ? "" : " tls")}{(_authenticatedUser is null ? "" : " auth=")}{_authenticatedUser}{(pool is null ? "" : " pool=")}{pool}");

        _message = null; // the session's reference moves to the queue
        ResetTransaction();
        await _server.Accept.HandOverAsync(spooled, hold);
    }

    /// <summary>Not durable, so not acknowledged: the client keeps the message and retries.</summary>
    private void SpoolFailed(ulong id, Exception e)
    {
        if (e is SpoolFullException)
            _server.Log.Warn($"{QueueIdGenerator.ToString(id)}: not queued: {e.Message}");
        else
            _server.Log.Error($"spool append failed for {QueueIdGenerator.ToString(id)}: {NativeRelay.Telemetry.ExceptionText.Of(e)}");
        ResetTransaction();
        Reply(e is SpoolFullException ? SmtpReplies.InsufficientStorage : SmtpReplies.SpoolFailure);
    }

    /// <summary>
    /// The transaction's pool as far as RCPT can know it, for the suppression list's pool scope:
    /// the pool rules decide on the listener, the AUTH user and the sender, all known by now, unless
    /// a rule reads a header field; then the pool waits for the data and RCPT checks only the
    /// global and sender-domain scopes (queued mail is checked again with its pool). Null: the
    /// default pool. The rules' own strings: nothing is allocated.
    /// </summary>
    private string? PoolAtRcpt() =>
        _server.Settings.Traffic.PoolRules is { IsEmpty: false, HeaderBytes.Length: 0 } rules
            ? rules.Choose(_listener, _authenticatedUser, _sender, static _ => null)
            : null;

    /// <summary>
    /// The pool of this message by the rules (null: the default pool). Header fields a rule names
    /// are read and taken out only for a trusted client (relay networks or authenticated), and
    /// only in the first block of the header section (where the header scan looks).
    /// </summary>
    private string? ChoosePool(MessageBuffer message, NativeRelay.Traffic.Sources.PoolRules rules)
    {
        List<(int Offset, int Length, string Name, string Value)>? fields = null;
        if (rules.HeaderBytes.Length > 0 && (_isRelayClient || _authenticatedUser is not null))
        {
            var headers = message.FirstBlockContent()[message.Reserved..];
            fields = NativeRelay.Traffic.Sources.PoolRules.FindHeaders(headers, rules.HeaderBytes);
        }
        string? pool = rules.Choose(_listener, _authenticatedUser, _sender, name =>
        {
            if (fields is null)
                return null;
            foreach (var f in fields)
                if (string.Equals(f.Name, name, StringComparison.OrdinalIgnoreCase))
                    return f.Value;
            return null;
        });
        if (fields is { Count: > 0 })
        {
            // The last first: taking a field out moves only what is before it, so earlier offsets hold.
            for (int i = fields.Count - 1; i >= 0; i--)
                message.TryRemoveBeforeFill(fields[i].Offset, fields[i].Length);
        }
        return pool;
    }

    /// <summary>
    /// DKIM: once per message, before the spool append, so the signature is stored with the message.
    /// The signer hashes and signs on the thread pool. A failure leaves the message unsigned, never refused.
    /// </summary>
    private async ValueTask<MessageBuffer> SignAsync(NativeRelay.MailAuth.IMessageSigner signer, MessageBuffer message)
    {
        try
        {
            // The signer may hand back a copy with more room in front (it then released the original).
            return _message = await signer.SignAsync(message, _sender, _authenticatedUser);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _server.Log.Error($"{new QueueIdText(_queueId)}: DKIM signing failed, sent unsigned: {NativeRelay.Telemetry.ExceptionText.Of(e)}");
            return message;
        }
    }

    private void WriteQueuedReply(ulong id)
    {
        Span<byte> reply = stackalloc byte[64];
        "250 2.0.0 Ok: queued as "u8.CopyTo(reply);
        int n = 24;
        n += QueueIdGenerator.Format(id, reply[n..]);
        reply[n++] = (byte)'\r';
        reply[n++] = (byte)'\n';
        _output.Write(reply[..n]);
    }

    /// <summary>RFC 3848 protocol name: ESMTP plus S for TLS and A for AUTH; UTF8SMTP... under SMTPUTF8 (RFC 6531 3.7.3).</summary>
    private ReadOnlySpan<byte> ProtocolName()
    {
        if (!_esmtp)
            return "SMTP"u8;
        bool tls = _tls is not null;
        bool auth = _authenticatedUser is not null;
        if ((_flags & EnvelopeFlags.SmtpUtf8) != 0)
            return tls ? (auth ? "UTF8SMTPSA"u8 : "UTF8SMTPS"u8) : (auth ? "UTF8SMTPA"u8 : "UTF8SMTP"u8);
        return tls ? (auth ? "ESMTPSA"u8 : "ESMTPS"u8) : (auth ? "ESMTPA"u8 : "ESMTP"u8);
    }

    /// <summary>
    /// Writes Received (and, on submission, a missing Message-ID and Date, RFC 6409 8) right-aligned
    /// into the reserved front of the buffer, so headers and message are contiguous without a copy.
    /// </summary>
    private void WriteTraceHeaders(MessageBuffer message, HeaderFacts facts)
    {
        Span<byte> client = stackalloc byte[64];
        _clientAddress.TryFormat(client, out int clientLength);
        Span<byte> id = stackalloc byte[16];
        QueueIdGenerator.Format(_queueId, id);
        Span<byte> helo = stackalloc byte[Encoding.ASCII.GetMaxByteCount(_heloName.Length)];
        int heloLength = Encoding.ASCII.GetBytes(_heloName, helo);
        var trace = new ReceivedTrace
        {
            HeloName = helo[..heloLength],
            ClientAddress = client[..clientLength],
            ClientHostName = default,
            ByHostName = _server.HostnameBytes,
            Protocol = ProtocolName(),
            QueueId = id,
            ForRecipient = _recipients.Count == 1 ? _recipients[0] : default,
            TlsDescription = _tls is null ? default : _tls.Description,
            Timestamp = _dataStarted,
        };
        var reserved = message.GetReservedSpan();
        Span<byte> header = stackalloc byte[_traceReserve];
        int length = ReceivedHeader.Write(trace, header);
        if (_listener.IsSubmission)
        {
            if (!facts.HasMessageId)
                length += SubmissionHeaders.WriteMessageId(header[length..], _dataStarted, id, _server.HostnameBytes);
            if (!facts.HasDate)
                length += SubmissionHeaders.WriteDate(header[length..], _dataStarted);
        }
        header[..length].CopyTo(reserved[(reserved.Length - length)..]);
        message.TrimReservedFront(reserved.Length - length);
    }

    /// <summary>Scans the header section, which may span several buffer blocks; the reserved front is skipped.</summary>
    private static HeaderFacts ScanHeaders(MessageBuffer message)
    {
        int reserved = message.Reserved;
        long length = message.ContentLength - reserved;
        // Header sections are almost always inside the first block; the rare larger one is
        // copied (bounded) so the scan still sees every field.
        var first = message.FirstBlockContent()[reserved..];
        var facts = HeaderFacts.Scan(first);
        if (facts.HeaderSectionComplete || first.Length >= length)
            return facts;

        const int MaxHeaderScan = 1024 * 1024;
        int copyLength = (int)Math.Min(length, MaxHeaderScan);
        var copy = ArrayPool<byte>.Shared.Rent(copyLength);
        try
        {
            message.CopyTo(reserved, copy.AsSpan(0, copyLength));
            return HeaderFacts.Scan(copy.AsSpan(0, copyLength));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(copy);
        }
    }
}
