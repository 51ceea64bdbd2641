using System.Buffers;
using System.Buffers.Text;
using System.IO.Pipelines;
using System.Net;
using System.Text;
using NativeRelay.Delivery;
using NativeRelay.Message;
using NativeRelay.Net;
using NativeRelay.Spool;

namespace NativeRelay.Smtp;

/// <summary>
/// One SMTP conversation on the receiving side (RFC 5321). The input pipe is parsed in place:
/// every complete command line in the buffer is handled synchronously and its reply appended to
/// the output pipe; the output is flushed only when the input is drained, so a pipelined burst
/// (RFC 2920) gets one write of all its replies. DATA content is un-stuffed straight into a pooled
/// <see cref="MessageBuffer"/>; end of data is the only asynchronous step (spool append, then the
/// group commit) before the 250.
/// </summary>
internal sealed class SmtpServerSession
{
    private const int MaxCommandLine = 512;

    private enum Phase { Connected, Ready, HaveSender, HaveRecipients, Data }

    private enum Step { NeedMoreInput, EndOfData, Close }

    private readonly SmtpServer _server;
    private readonly SocketConnection _connection;
    private readonly PipeReader _input;
    private readonly PipeWriter _output;
    private readonly IPAddress _clientAddress;
    private readonly bool _mayRelay;
    private readonly byte[] _lineScratch = new byte[MaxCommandLine];
    private readonly DotUnstuffer _unstuffer;

    private Phase _phase = Phase.Connected;
    private bool _esmtp;
    private string _heloName = "";
    private byte[] _sender = [];
    private readonly List<byte[]> _recipients = new();
    private EnvelopeFlags _flags;
    private MessageBuffer? _message;
    private ulong _queueId;
    private DateTimeOffset _dataStarted;
    private bool _discardingLongLine;
    private bool _closeAfterFlush;
    private int _errors;

    public SmtpServerSession(SmtpServer server, SocketConnection connection, ListenerInfo listener)
    {
        _server = server;
        _connection = connection;
        _input = connection.Transport.Input;
        _output = connection.Transport.Output;
        _clientAddress = connection.RemoteEndPoint.Address.IsIPv4MappedToIPv6
            ? connection.RemoteEndPoint.Address.MapToIPv4()
            : connection.RemoteEndPoint.Address;
        _mayRelay = server.MayRelay(_clientAddress);
        var limits = server.Settings.Limits;
        _unstuffer = new DotUnstuffer(maxLineLength: 998, maxMessageSize: limits.MaxMessageSize);
    }

    private bool InTransaction => _phase is Phase.HaveSender or Phase.HaveRecipients or Phase.Data;

    public async Task RunAsync(CancellationToken stopping)
    {
        var limits = _server.Settings.Limits;
        var commandTimeout = TimeSpan.FromSeconds(limits.CommandTimeoutSeconds);
        var dataTimeout = TimeSpan.FromSeconds(limits.DataTimeoutSeconds);
        var timeout = new CancellationTokenSource();
        // Shutdown wakes an idle session so it can say 421 and leave; a transaction in progress
        // is allowed to finish first (checked after each step).
        using var onStop = stopping.UnsafeRegister(static s => ((PipeReader)s!).CancelPendingRead(), _input);
        try
        {
            _output.Write(_server.Greeting);
            await _output.FlushAsync();

            while (true)
            {
                if (!_input.TryRead(out var result))
                {
                    // The input is drained: this is when replies to a pipelined group go out.
                    var flush = await _output.FlushAsync();
                    if (flush.IsCompleted || _closeAfterFlush)
                        break;
                    if (stopping.IsCancellationRequested && !InTransaction)
                    {
                        await ReplyAndCloseAsync(SmtpReplies.ShuttingDown.ToArray());
                        break;
                    }
                    timeout.CancelAfter(_phase == Phase.Data ? dataTimeout : commandTimeout);
                    try
                    {
                        result = await _input.ReadAsync(timeout.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        await ReplyAndCloseAsync(SmtpReplies.Timeout.ToArray());
                        break;
                    }
                    if (!timeout.TryReset())
                    {
                        timeout.Dispose();
                        timeout = new CancellationTokenSource();
                    }
                }
                if (_closeAfterFlush)
                    break;

                var buffer = result.Buffer;
                var step = Process(ref buffer);
                _input.AdvanceTo(buffer.Start, step == Step.NeedMoreInput ? buffer.End : buffer.Start);

                if (step == Step.EndOfData)
                    await FinishMessageAsync();
                else if (step == Step.Close)
                    break;

                if (result.IsCompleted && step == Step.NeedMoreInput)
                    break; // the client closed (mid-DATA too: the partial message is simply dropped)
            }
            await _output.FlushAsync();
        }
        finally
        {
            timeout.Dispose();
            ResetTransaction();
        }
    }

    private async ValueTask ReplyAndCloseAsync(byte[] reply)
    {
        _output.Write(reply);
        await _output.FlushAsync();
    }

    /// <summary>Handles everything complete in <paramref name="buffer"/>; on return it starts at what is left.</summary>
    private Step Process(ref ReadOnlySequence<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            if (_phase == Phase.Data)
            {
                var status = FeedData(ref buffer);
                if (status == DataStatus.NeedMoreData)
                    return Step.NeedMoreInput;
                if (status == DataStatus.Complete)
                    return Step.EndOfData;
                // Bare CR or LF: where the message ends is now ambiguous (the SMTP smuggling
                // class of attacks), so nothing is queued and the connection ends.
                _server.Log.Info($"{_clientAddress}: refused message with a bare CR or LF in DATA");
                ResetTransaction();
                _output.Write(SmtpReplies.BareLineEnding);
                _closeAfterFlush = true;
                return Step.Close;
            }

            if (_discardingLongLine)
            {
                var lf = buffer.PositionOf((byte)'\n');
                if (lf is null)
                {
                    buffer = buffer.Slice(buffer.End);
                    return Step.NeedMoreInput;
                }
                buffer = buffer.Slice(buffer.GetPosition(1, lf.Value));
                _discardingLongLine = false;
                if (!Error(SmtpReplies.LineTooLong))
                    return Step.Close;
                continue;
            }

            var lineStatus = CommandLineReader.TryReadLine(buffer, MaxCommandLine, _lineScratch, out var line, out var lineEnd);
            if (lineStatus == LineStatus.NeedMoreData)
                return Step.NeedMoreInput;
            buffer = buffer.Slice(lineEnd);
            if (lineStatus == LineStatus.TooLong)
            {
                _discardingLongLine = true;
                continue;
            }
            if (!HandleCommand(line))
                return Step.Close;
        }
        return Step.NeedMoreInput;
    }

    /// <summary>Returns false when the session must end.</summary>
    private bool HandleCommand(ReadOnlySpan<byte> line)
    {
        var verb = SmtpCommandParser.Parse(line, out var argument);
        switch (verb)
        {
            case SmtpVerb.Ehlo:
            case SmtpVerb.Helo:
                return Hello(verb == SmtpVerb.Ehlo, argument);
            case SmtpVerb.Mail:
                return Mail(argument);
            case SmtpVerb.Rcpt:
                return Rcpt(argument);
            case SmtpVerb.Data:
                return Data(argument);
            case SmtpVerb.Rset:
                if (!argument.IsEmpty)
                    return Error(SmtpReplies.NoArgumentsAllowed);
                ResetTransaction();
                if (_phase != Phase.Connected)
                    _phase = Phase.Ready;
                return Reply(SmtpReplies.Ok);
            case SmtpVerb.Noop:
                return Reply(SmtpReplies.Ok);
            case SmtpVerb.Quit:
                _output.Write(SmtpReplies.Bye);
                _closeAfterFlush = true;
                return false;
            case SmtpVerb.Vrfy:
                return Reply(SmtpReplies.Vrfy);
            case SmtpVerb.Help:
                return Reply(SmtpReplies.Help);
            case SmtpVerb.Expn:
            case SmtpVerb.StartTls:
            case SmtpVerb.Auth:
            case SmtpVerb.Bdat:
                return Error(SmtpReplies.NotImplemented);
            default:
                return Error(SmtpReplies.Unrecognized);
        }
    }

    private bool Hello(bool extended, ReadOnlySpan<byte> argument)
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
            o.Write(_server.EhloCapabilities);
        return true;
    }

    private bool Mail(ReadOnlySpan<byte> argument)
    {
        if (_phase == Phase.Connected)
            return Error(SmtpReplies.BadSequenceNeedHelo);
        if (_phase != Phase.Ready)
            return Error(SmtpReplies.BadSequenceNestedMail);

        var error = MailboxPath.Parse(argument, "FROM:"u8, allowUtf8: false, allowBareAddress: false,
            out var address, out var parameters);
        if (error != PathError.None)
            return Error(PathErrorReply(error, SmtpReplies.MailSyntax, SmtpReplies.BadSenderAddress));
        // The parser lets a bare "postmaster" through for RCPT (RFC 5321 4.5.1); a sender needs a domain.
        if (!address.IsEmpty && !MailboxPath.TrySplit(address, out _, out _))
            return Error(SmtpReplies.BadSenderAddress);

        var flags = EnvelopeFlags.None;
        var p = new EsmtpParameters(parameters);
        while (p.MoveNext())
        {
            if (!_esmtp)
                return Error(SmtpReplies.UnknownParameter);
            if (EsmtpParameters.KeywordEquals(p.Keyword, "SIZE"u8))
            {
                if (!EsmtpParameters.TryParseSize(p.Value, out long size))
                    return Error(SmtpReplies.SizeParamSyntax);
                if (size > _server.Settings.Limits.MaxMessageSize)
                    return Error(SmtpReplies.SizeExceededAtMail);
            }
            else if (EsmtpParameters.KeywordEquals(p.Keyword, "BODY"u8))
            {
                if (EsmtpParameters.KeywordEquals(p.Value, "8BITMIME"u8))
                    flags |= EnvelopeFlags.EightBitMime;
                else if (!EsmtpParameters.KeywordEquals(p.Value, "7BIT"u8))
                    return Error(SmtpReplies.BodyParamSyntax);
            }
            else
            {
                return Error(SmtpReplies.UnknownParameter);
            }
        }
        if (p.IsMalformed)
            return Error(SmtpReplies.MailSyntax);

        _sender = address.ToArray();
        _flags = flags;
        _phase = Phase.HaveSender;
        return Reply(SmtpReplies.SenderOk);
    }

    private bool Rcpt(ReadOnlySpan<byte> argument)
    {
        if (_phase == Phase.Connected)
            return Error(SmtpReplies.BadSequenceNeedHelo);
        if (_phase is not (Phase.HaveSender or Phase.HaveRecipients))
            return Error(SmtpReplies.BadSequenceNeedMail);

        var error = MailboxPath.Parse(argument, "TO:"u8, allowUtf8: false, allowBareAddress: false,
            out var address, out var parameters);
        if (error != PathError.None)
            return Error(PathErrorReply(error, SmtpReplies.RcptSyntax, SmtpReplies.BadRecipientAddress));
        if (address.IsEmpty)
            return Error(SmtpReplies.BadRecipientAddress);
        var p = new EsmtpParameters(parameters);
        if (p.MoveNext() || p.IsMalformed)
            return Error(SmtpReplies.UnknownParameter);

        if (!_mayRelay)
            return Error(SmtpReplies.RelayDenied);
        if (_recipients.Count >= _server.Settings.Limits.MaxRecipients)
            return Reply(SmtpReplies.TooManyRecipients); // a 4xx: the client sends the rest in another transaction

        _recipients.Add(address.ToArray());
        _phase = Phase.HaveRecipients;
        return Reply(SmtpReplies.RecipientOk);
    }

    private bool Data(ReadOnlySpan<byte> argument)
    {
        if (_phase == Phase.Connected)
            return Error(SmtpReplies.BadSequenceNeedHelo);
        if (_phase == Phase.Ready)
            return Error(SmtpReplies.BadSequenceNeedMail);
        if (_phase != Phase.HaveRecipients)
            return Error(SmtpReplies.BadSequenceNeedRcpt);
        if (!argument.IsEmpty)
            return Error(SmtpReplies.NoArgumentsAllowed);

        _queueId = _server.Ids.Next();
        _dataStarted = DateTimeOffset.UtcNow;
        _message = MessageBuffer.Rent();
        _message.Reserve(ReceivedHeader.MaxLength);
        _unstuffer.Reset();
        _phase = Phase.Data;
        return Reply(SmtpReplies.StartData);
    }

    private DataStatus FeedData(ref ReadOnlySequence<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            var segment = buffer.First.Span;
            var status = _unstuffer.Process(segment, _message!, out int consumed);
            buffer = buffer.Slice(consumed);
            if (status != DataStatus.NeedMoreData)
                return status;
        }
        return DataStatus.NeedMoreData;
    }

    /// <summary>The data terminator arrived: check, trace, spool, commit, then 250.</summary>
    private async ValueTask FinishMessageAsync()
    {
        var message = _message!;
        _phase = Phase.Ready;
        if (_unstuffer.SizeExceeded)
        {
            ResetTransaction();
            Error(SmtpReplies.SizeExceededAtData);
            return;
        }
        if (_unstuffer.LineTooLong)
        {
            ResetTransaction();
            Error(SmtpReplies.DataLineTooLong);
            return;
        }
        if (CountReceivedHeaders(message) >= _server.Settings.Limits.MaxReceivedHeaders)
        {
            _server.Log.Info($"{_clientAddress}: refused a message with too many Received headers (mail loop)");
            ResetTransaction();
            Reply(SmtpReplies.MailLoop);
            return;
        }
        WriteReceivedHeader(message);

        var envelope = new Envelope
        {
            Sender = _sender,
            Recipients = _recipients.ToArray(),
            ClientAddress = _clientAddress.ToString(),
            HeloName = _heloName,
            ArrivalUnixMs = _dataStarted.ToUnixTimeMilliseconds(),
            Flags = _flags,
        };
        ulong id = _queueId;
        long head, first;
        _server.Intake.ReserveSpool(id);
        try
        {
            (head, first) = await _server.Spool.AppendMessageAsync(id, envelope, message);
            await _server.Spool.WaitForCommitAsync(head);
        }
        catch (Exception e)
        {
            _server.Intake.CancelReservation(id);
            // Not durable, so not acknowledged: the client keeps the message and retries.
            _server.Log.Error($"spool append failed for {QueueIdGenerator.ToString(id)}: {e.Message}");
            ResetTransaction();
            Reply(SmtpReplies.SpoolFailure);
            return;
        }

        WriteQueuedReply(id);
        _server.CountAccepted(message.ContentLength);
        _server.Log.Info($"{QueueIdGenerator.ToString(id)}: queued from={envelope.SenderText} rcpts={envelope.Recipients.Length} size={message.ContentLength} client={_clientAddress}");

        var queued = new QueuedMessage
        {
            Id = id,
            HeadAddress = head,
            FirstAddress = first,
            Envelope = envelope,
            Recipients = new RecipientState[envelope.Recipients.Length],
            Body = message, // the session's reference moves to the queue
        };
        _message = null;
        _recipients.Clear();
        _sender = [];
        await _server.Intake.EnqueueAsync(queued);
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

    private void WriteReceivedHeader(MessageBuffer message)
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
            Protocol = _esmtp ? "ESMTP"u8 : "SMTP"u8,
            QueueId = id,
            ForRecipient = _recipients.Count == 1 ? _recipients[0] : default,
            TlsDescription = default,
            Timestamp = _dataStarted,
        };
        var reserved = message.GetReservedSpan();
        Span<byte> header = stackalloc byte[ReceivedHeader.MaxLength];
        int length = ReceivedHeader.Write(trace, header);
        // Right-align the header against the message so the two are contiguous.
        header[..length].CopyTo(reserved[(reserved.Length - length)..]);
        message.TrimReservedFront(reserved.Length - length);
    }

    /// <summary>Counts Received fields in the header section, which may span several buffer blocks.</summary>
    private static int CountReceivedHeaders(MessageBuffer message)
    {
        // Header sections are almost always inside the first block; the rare larger one is
        // copied (bounded) so the count still sees every field.
        var first = message.FirstBlockContent();
        var scanner = new HeaderScanner(first);
        while (scanner.TryReadNext(out _))
        {
        }
        if (scanner.Status != HeaderScanStatus.NoBody || first.Length >= message.ContentLength)
            return HeaderScanner.CountFields(first, "Received"u8);

        const int MaxHeaderScan = 1024 * 1024;
        int length = (int)Math.Min(message.ContentLength, MaxHeaderScan);
        var copy = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            message.CopyTo(0, copy.AsSpan(0, length));
            return HeaderScanner.CountFields(copy.AsSpan(0, length), "Received"u8);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(copy);
        }
    }

    private static ReadOnlySpan<byte> PathErrorReply(PathError error, ReadOnlySpan<byte> syntax, ReadOnlySpan<byte> badAddress) =>
        error switch
        {
            PathError.Syntax or PathError.MissingPrefix or PathError.Empty => syntax,
            PathError.NonAscii => SmtpReplies.NonAsciiAddress,
            _ => badAddress,
        };

    private bool Reply(ReadOnlySpan<byte> reply)
    {
        _output.Write(reply);
        return true;
    }

    /// <summary>Sends an error reply and counts it; past the limit the client is dropped with 421.</summary>
    private bool Error(ReadOnlySpan<byte> reply)
    {
        _output.Write(reply);
        if (++_errors < _server.Settings.Limits.MaxErrors)
            return true;
        _server.Log.Info($"{_clientAddress}: dropped after {_errors} errors");
        _output.Write(SmtpReplies.TooManyErrors);
        _closeAfterFlush = true;
        return false;
    }

    private void ResetTransaction()
    {
        _message?.Release();
        _message = null;
        _recipients.Clear();
        _sender = [];
        _flags = EnvelopeFlags.None;
        if (_phase is Phase.HaveSender or Phase.HaveRecipients or Phase.Data)
            _phase = Phase.Ready;
    }
}
