using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using NativeRelay.Message;
using NativeRelay.Net;
using NativeRelay.Smtp.Auth;
using NativeRelay.Spool;

namespace NativeRelay.Smtp;

/// <summary>
/// One SMTP conversation on the receiving side (RFC 5321). The input pipe is parsed in place:
/// every complete command line in the buffer is handled synchronously and its reply appended to
/// the output pipe; the output is flushed only when the input is drained, so a pipelined burst
/// (RFC 2920) gets one write of all its replies. DATA content is un-stuffed straight into a pooled
/// <see cref="MessageBuffer"/>, BDAT chunks (RFC 3030) are copied into it by their exact length.
/// The asynchronous steps are few and happen between commands: end of data (spool append, then
/// the group commit, then 250), the TLS handshake after STARTTLS (RFC 3207), and checking a
/// password after AUTH (RFC 4954).
/// </summary>
/// <remarks>
/// <para>After STARTTLS the session swaps its pipes for those of a <see cref="TlsTransport"/> and
/// forgets everything the client said before (RFC 3207 4.2); anything the client pipelined
/// behind STARTTLS is thrown away unread, so no plain-text command can be injected into the
/// encrypted session (CVE-2011-0411 and its kin).</para>
/// <para>Limits: commands per session, errors per session, recipients, message size, line length,
/// command and data timeouts, and a total time per transaction. Breaking one gets a reply with
/// an enhanced status code; the ones that leave the session in doubt close it with 421.</para>
/// </remarks>
internal sealed partial class SmtpServerSession
{
    private const int MaxCommandLine = CommandLineReader.MaxCommandLineLength;
    private const int MaxEnvelopeIdLength = 100;   // RFC 3461 4.4
    private const int MaxOrcptLength = 500;        // RFC 3461 4.2
    private static readonly TimeSpan MaxAuthDelay = TimeSpan.FromSeconds(30);

    private enum Phase { Connected, Ready, HaveSender, HaveRecipients, Data, Bdat }

    /// <summary>What Process (and HandleCommand) ask RunAsync to do next. Continue means "go on parsing".</summary>
    private enum Step { Continue, EndOfData, StartTls, Authenticate, CheckSender, Close }

    private enum AuthStep : byte { None, PlainResponse, LoginUser, LoginPassword }

    /// <summary>Which limit a wait for the client runs into first (for the reply and the log line).</summary>
    private enum WaitLimit : byte { Command, FirstCommand, Transaction }

    // MAIL / RCPT parameters seen, to refuse duplicates.
    [Flags]
    private enum Seen : ushort { None = 0, Size = 1, Body = 2, SmtpUtf8 = 4, Ret = 8, EnvId = 16, Auth = 32, Notify = 64, Orcpt = 128, RequireTls = 256 }

    // Replies for the rest of a BDAT transaction that already failed (kept as arrays: a span cannot be a field).
    private static readonly byte[] BdatNeedHelo = SmtpReplies.BadSequenceNeedHelo.ToArray();
    private static readonly byte[] BdatNeedMail = SmtpReplies.BadSequenceNeedMail.ToArray();
    private static readonly byte[] BdatNeedRcpt = SmtpReplies.BadSequenceNeedRcpt.ToArray();
    private static readonly byte[] BdatTooBig = SmtpReplies.SizeExceededAtData.ToArray();
    private static readonly byte[] BdatBareLine = SmtpReplies.BdatBareLineEnding.ToArray();

    private readonly SmtpServer _server;
    private readonly SocketConnection _connection;
    private readonly ListenerInfo _listener;
    private readonly IPAddress _clientAddress;
    private string? _clientAddressText; // the envelope's copy, made once per connection
    private readonly bool _isRelayClient;
    private byte[]? _authScratch;
    private readonly DotUnstuffer _unstuffer;
    private readonly BdatReader _bdat;
    private readonly int _traceReserve;  // Received (and on submission Message-ID, Date)
    private readonly int _frontReserve;  // that, and room for DKIM-Signature fields when signing
    private readonly TimeSpan _commandTimeout;
    private readonly TimeSpan _idleBeforeCommand;
    private readonly TimeSpan _dataTimeout;
    private readonly long _transactionMilliseconds;

    private PipeReader _input;
    private PipeWriter _output;
    private TlsTransport? _tls;
    // The command, data and flush timeouts: armed around each wait for the client, watched by the
    // process's one DeadlineClock (no timer or token registration per command).
    private readonly Deadline _deadline;

    private Phase _phase = Phase.Connected;
    private bool _esmtp;
    private string _heloName = "";

    // The transaction.
    private byte[] _sender = [];
    private readonly List<byte[]> _recipients = new();
    private readonly List<DsnNotify> _notify = new();
    private readonly List<byte[]?> _orcpt = new();
    private bool _anyNotify;
    private bool _anyOrcpt;
    private byte[]? _envelopeId;
    private EnvelopeFlags _flags;
    private bool _usedBdat;
    private long _transactionDeadline;  // Environment.TickCount64; 0 outside a transaction
    private long _firstCommandDeadline; // Environment.TickCount64: the greeting plus limits.idleBeforeCommandSeconds
    private MessageBuffer? _message;
    private ulong _queueId;
    private DateTimeOffset _dataStarted;

    // BDAT bytes to throw away (a refused chunk), and the reply for further chunks of a failed BDAT transaction.
    private long _skipRemaining;
    private byte[]? _failedBdatReply;

    // AUTH.
    private AuthStep _authStep;
    private byte[]? _authUser;
    private byte[]? _authPassword;
    private string? _authenticatedUser;
    private int _authFailures;

    private bool _discardingLongLine;
    private bool _closeAfterFlush;
    private bool _outputBroken;     // a flush failed or timed out: the peer is gone or not reading
    private int _errors;
    private long _commands;

    public SmtpServerSession(SmtpServer server, SocketConnection connection, ListenerInfo listener)
    {
        _server = server;
        _connection = connection;
        _listener = listener;
        _input = connection.Transport.Input;
        _output = connection.Transport.Output;
        _clientAddress = connection.RemoteEndPoint.Address.IsIPv4MappedToIPv6
            ? connection.RemoteEndPoint.Address.MapToIPv4()
            : connection.RemoteEndPoint.Address;
        _isRelayClient = server.MayRelay(_clientAddress);
        var limits = server.Settings.Limits;
        _unstuffer = new DotUnstuffer(maxLineLength: limits.MaxLineLength, maxMessageSize: limits.MaxMessageSize);
        _bdat = new BdatReader(limits.MaxLineLength, limits.MaxMessageSize);
        // Room in front of the message for the trace headers and, when signing, the DKIM-Signature fields.
        _traceReserve = ReceivedHeader.MaxLength + (listener.IsSubmission ? SubmissionHeaders.MaxLength : 0);
        _inboundMode = server.Inbound?.Settings.ModeFor(listener.EndPoint, listener.IsSubmission) ?? NativeRelay.MailAuth.InboundAuthMode.Off;
        _frontReserve = Math.Min(MessageBuffer.MaxReserve, _traceReserve + (server.Signer?.MaxHeaderLength ?? 0)
            + (_inboundMode == NativeRelay.MailAuth.InboundAuthMode.Off ? 0 : AuthenticationResultsReserve));
        _commandTimeout = TimeSpan.FromSeconds(limits.CommandTimeoutSeconds);
        _idleBeforeCommand = TimeSpan.FromSeconds(limits.IdleBeforeCommandSeconds);
        _dataTimeout = TimeSpan.FromSeconds(limits.DataTimeoutSeconds);
        _transactionMilliseconds = limits.TransactionTimeoutSeconds * 1000L;
        _deadline = new Deadline(DeadlineClock.Shared, static (state, waitingFor) =>
        {
            var session = (SmtpServerSession)state;
            if (waitingFor == DeadlineFor.Read)
                session._input.CancelPendingRead();
            else
                session._output.CancelPendingFlush();
        }, this);
    }

    private bool InTransaction => _phase is Phase.HaveSender or Phase.HaveRecipients or Phase.Data or Phase.Bdat;

    private bool OfferStartTls => _server.Certificates is not null && _tls is null;

    private bool OfferAuth => _server.Users is not null && _listener.IsSubmission
                              && (_tls is not null || _server.Settings.AllowPlaintextAuth);

    public async Task RunAsync(CancellationToken stopping)
    {
        CancellationTokenRegistration onStop = default;
        try
        {
            // RFC 8314: on an implicit-TLS port the handshake comes before the greeting.
            if (_listener.IsImplicitTls && !await StartTlsAsync(stopping))
                return;
            // Shutdown wakes an idle session so it can say 421 and leave; a transaction in
            // progress is allowed to finish first (checked after each step).
            onStop = stopping.UnsafeRegister(static s => ((SmtpServerSession)s!)._input.CancelPendingRead(), this);

            if (await TalksBeforeGreetingAsync())
                return;
            _output.Write(_server.Greeting);
            if (!await FlushAsync())
                return;
            _firstCommandDeadline = Environment.TickCount64 + (long)_idleBeforeCommand.TotalMilliseconds;

            while (true)
            {
                if (!_input.TryRead(out var result))
                {
                    // The input is drained: this is when replies to a pipelined group go out.
                    if (!await FlushAsync() || _closeAfterFlush)
                        break;
                    if (stopping.IsCancellationRequested && !InTransaction)
                    {
                        await ReplyAndCloseAsync(SmtpReplies.ShuttingDown);
                        break;
                    }
                    var wait = ReadTimeout(out var limit);
                    if (wait <= TimeSpan.Zero)
                    {
                        await TimedOutAsync(limit);
                        break;
                    }
                    _deadline.Arm(wait, DeadlineFor.Read);
                    bool timedOut;
                    try
                    {
                        result = await _input.ReadAsync();
                    }
                    finally
                    {
                        timedOut = _deadline.Disarm();
                    }
                    if (timedOut)
                    {
                        // Bytes that came in the same tick as the expiry are dropped with it, as a timer firing then would have.
                        await TimedOutAsync(limit);
                        break;
                    }
                }
                if (_closeAfterFlush)
                    break;

                var buffer = result.Buffer;
                var step = Process(ref buffer);
                if (step == Step.StartTls)
                {
                    // Whatever followed STARTTLS in the buffer was sent before the handshake: drop it unread.
                    if (!buffer.IsEmpty)
                        _server.Log.Info($"{_clientAddress}: discarded {buffer.Length} bytes pipelined after STARTTLS");
                    _input.AdvanceTo(buffer.End);
                }
                else
                {
                    _input.AdvanceTo(buffer.Start, step == Step.Continue ? buffer.End : buffer.Start);
                }

                switch (step)
                {
                    case Step.EndOfData:
                        await FinishMessageAsync();
                        break;
                    case Step.Authenticate:
                        await AuthenticateAsync(stopping);
                        break;
                    case Step.CheckSender:
                        await CheckSenderAsync();
                        break;
                    case Step.StartTls:
                        if (!await FlushAsync() || !await StartTlsAsync(stopping))
                            return;
                        continue;
                    case Step.Close:
                        await FlushAsync();
                        return;
                }

                if (_transactionDeadline != 0 && InTransaction && Environment.TickCount64 > _transactionDeadline)
                {
                    _server.Log.Info($"{_clientAddress}: transaction time limit, closing");
                    await ReplyAndCloseAsync(SmtpReplies.TransactionTimeout);
                    break;
                }
                if (result.IsCompleted && step == Step.Continue)
                    break; // the client closed (mid-DATA too: the partial message is simply dropped)
            }
            if (!_outputBroken)
                await FlushAsync();
        }
        catch (Exception e) when (e is IOException or ObjectDisposedException or System.Security.Authentication.AuthenticationException)
        {
            // A TLS session broken by the peer (or a reset) ends the conversation; nothing was acknowledged that is not spooled.
            _server.Log.Info($"{_clientAddress}: connection ended: {e.Message}");
        }
        finally
        {
            onStop.Dispose();
            _deadline.Dispose();
            ResetTransaction();
            if (_tls is not null)
                await _tls.DisposeAsync(_outputBroken ? TimeSpan.Zero : TimeSpan.FromSeconds(5));
        }
    }

    /// <summary>
    /// Postscreen's pregreet test (limits.greetingDelaySeconds, on plain SMTP listeners for
    /// clients outside relayNetworks): the greeting waits, and a client that sends anything first
    /// is not speaking SMTP as RFC 5321 4.3.1 has it (it waits for the 220), which is what
    /// spambots that blast commands without listening do. True when the session is over.
    /// </summary>
    private async ValueTask<bool> TalksBeforeGreetingAsync()
    {
        int delay = _server.Settings.Limits.GreetingDelaySeconds;
        if (delay <= 0 || _listener.Kind != ListenerKind.Smtp || _isRelayClient)
            return false;
        _deadline.Arm(TimeSpan.FromSeconds(delay), DeadlineFor.Read);
        ReadResult early;
        bool waited;
        try
        {
            early = await _input.ReadAsync();
        }
        finally
        {
            waited = _deadline.Disarm();
        }
        if (waited || (early.IsCanceled && early.Buffer.IsEmpty))
        {
            // Silent for the whole delay (or the relay is stopping: the loop says 421 then).
            _input.AdvanceTo(early.Buffer.Start);
            return false;
        }
        _input.AdvanceTo(early.Buffer.End);
        if (early.Buffer.IsEmpty && early.IsCompleted)
            return true; // gone before the greeting
        Telemetry.RelayMetrics.PregreetRefused.Increment();
        _server.Log.Info($"{_clientAddress}: talked before the greeting ({early.Buffer.Length} bytes), refused");
        await ReplyAndCloseAsync(SmtpReplies.PregreetViolation);
        return true;
    }

    private TimeSpan ReadTimeout(out WaitLimit limit)
    {
        var wait = _phase is Phase.Data or Phase.Bdat ? _dataTimeout : _commandTimeout;
        limit = WaitLimit.Command;
        if (_commands == 0)
        {
            // Counted from the greeting, not from the last byte: a client that sends a byte a
            // second never makes a command, and must not hold its slot longer than a silent one
            // (issue 30: it did, for as long as it kept dribbling).
            long left = _firstCommandDeadline - Environment.TickCount64;
            if (left < wait.TotalMilliseconds)
            {
                wait = TimeSpan.FromMilliseconds(Math.Max(0, left));
                limit = WaitLimit.FirstCommand;
            }
        }
        if (_transactionDeadline != 0 && InTransaction)
        {
            long left = _transactionDeadline - Environment.TickCount64;
            if (left < wait.TotalMilliseconds)
            {
                wait = TimeSpan.FromMilliseconds(Math.Max(0, left));
                limit = WaitLimit.Transaction;
            }
        }
        return wait;
    }

    /// <summary>The client ran into a time limit while the relay waited for it: 421 and close.</summary>
    private ValueTask<bool> TimedOutAsync(WaitLimit limit)
    {
        bool noCommand = _commands == 0 && limit != WaitLimit.Transaction;
        if (noCommand)
            Telemetry.RelayMetrics.IdleBeforeCommandClosed.Increment();
        _server.Log.Info($"{_clientAddress}: {(limit == WaitLimit.Transaction ? "transaction time limit" : noCommand ? "no command" : "timeout")}, closing");
        return ReplyAndCloseAsync(limit == WaitLimit.Transaction ? SmtpReplies.TransactionTimeout : SmtpReplies.Timeout);
    }

    /// <summary>Flushes the replies; false when the peer is gone or did not take them within the command timeout.</summary>
    private async ValueTask<bool> FlushAsync()
    {
        if (_outputBroken)
            return false;
        _deadline.Arm(_commandTimeout, DeadlineFor.Write);
        FlushResult flush;
        bool timedOut;
        try
        {
            flush = await _output.FlushAsync();
        }
        catch (OperationCanceledException)
        {
            // Not expected (a cancelled flush is a result, not an exception), but a writer over a stream may say it so.
            flush = new FlushResult(isCanceled: true, isCompleted: false);
        }
        finally
        {
            timedOut = _deadline.Disarm();
        }
        if (timedOut)
        {
            _server.Log.Info($"{_clientAddress}: does not read its replies, closing");
            _outputBroken = true;
            _connection.PeerStoppedReading(); // it had the command timeout: no second wait at close

            return false;
        }
        if (flush.IsCompleted || flush.IsCanceled)
            _outputBroken = true;
        return !_outputBroken;
    }

    private ValueTask<bool> ReplyAndCloseAsync(ReadOnlySpan<byte> reply)
    {
        _output.Write(reply);
        _closeAfterFlush = true;
        return FlushAsync();
    }

    /// <summary>Handles everything complete in <paramref name="buffer"/>; on return it starts at what is left.</summary>
    private Step Process(ref ReadOnlySequence<byte> buffer)
    {
        // For a command line split across pipe blocks (rare); on the stack, so an idle session holds no line buffer.
        Span<byte> lineScratch = stackalloc byte[MaxCommandLine];
        while (!buffer.IsEmpty)
        {
            if (_skipRemaining > 0)
            {
                long skip = Math.Min(_skipRemaining, buffer.Length);
                buffer = buffer.Slice(skip);
                _skipRemaining -= skip;
                continue;
            }

            if (_phase == Phase.Data)
            {
                var status = FeedData(ref buffer);
                if (status == DataStatus.NeedMoreData)
                    return Step.Continue;
                if (status == DataStatus.Complete)
                    return Step.EndOfData;
                // Bare CR or LF: where the message ends is now ambiguous (the SMTP smuggling
                // class of attacks), so nothing is queued and the connection ends.
                _server.Log.Info($"{_clientAddress}: refused message with a bare CR or LF in DATA");
                Telemetry.RelayMetrics.MessagesRejected.Increment();
                ResetTransaction();
                _output.Write(SmtpReplies.BareLineEnding);
                _closeAfterFlush = true;
                return Step.Close;
            }

            if (_phase == Phase.Bdat)
            {
                FeedChunk(ref buffer);
                if (_bdat.ChunkRemaining > 0)
                    return Step.Continue;
                var chunkStep = ChunkComplete();
                if (chunkStep != Step.Continue)
                    return chunkStep;
                continue;
            }

            if (_discardingLongLine)
            {
                var lf = buffer.PositionOf((byte)'\n');
                if (lf is null)
                {
                    buffer = buffer.Slice(buffer.End);
                    return Step.Continue;
                }
                buffer = buffer.Slice(buffer.GetPosition(1, lf.Value));
                _discardingLongLine = false;
                if (Error(SmtpReplies.LineTooLong) == Step.Close)
                    return Step.Close;
                continue;
            }

            LineStatus lineStatus;
            scoped ReadOnlySpan<byte> line;
            SequencePosition lineEnd;
            if (_authStep != AuthStep.None)
            {
                lineStatus = CommandLineReader.TryReadLine(buffer, Sasl.MaxResponseLine, AuthScratch, out line, out lineEnd);
            }
            else
            {
                lineStatus = CommandLineReader.TryReadLine(buffer, MaxCommandLine, lineScratch, out line, out lineEnd);
                // RFC 4954 4: an AUTH command with its initial response may be up to 12288 octets.
                if (lineStatus == LineStatus.TooLong && StartsWithAuth(buffer))
                    lineStatus = CommandLineReader.TryReadLine(buffer, Sasl.MaxResponseLine, AuthScratch, out line, out lineEnd);
            }
            if (lineStatus == LineStatus.NeedMoreData)
                return Step.Continue;
            buffer = buffer.Slice(lineEnd);
            if (lineStatus == LineStatus.TooLong)
            {
                _authStep = AuthStep.None;
                _discardingLongLine = true;
                continue;
            }

            if (++_commands > _server.Settings.Limits.MaxCommands)
            {
                _server.Log.Info($"{_clientAddress}: dropped after {_commands - 1} commands");
                ResetTransaction();
                _output.Write(SmtpReplies.TooManyCommands);
                _closeAfterFlush = true;
                return Step.Close;
            }
            var step = _authStep != AuthStep.None ? AuthResponse(line) : HandleCommand(line);
            if (step != Step.Continue)
                return step;
        }
        return Step.Continue;
    }

    private Step HandleCommand(ReadOnlySpan<byte> line)
    {
        var verb = SmtpCommandParser.Parse(line, out var argument);
        if (verb != SmtpVerb.Bdat)
            _failedBdatReply = null;
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
            case SmtpVerb.Bdat:
                return Bdat(argument);
            case SmtpVerb.Rset:
                if (!argument.IsEmpty)
                    return Error(SmtpReplies.NoArgumentsAllowed);
                ResetTransaction();
                return Reply(SmtpReplies.Ok);
            case SmtpVerb.Noop:
                return Reply(SmtpReplies.Ok);
            case SmtpVerb.Quit:
                _output.Write(SmtpReplies.Bye);
                _closeAfterFlush = true;
                return Step.Close;
            case SmtpVerb.Vrfy:
                return Reply(SmtpReplies.Vrfy);
            case SmtpVerb.Help:
                return Reply(SmtpReplies.Help);
            case SmtpVerb.StartTls:
                return StartTls(argument);
            case SmtpVerb.Auth:
                return Auth(argument);
            case SmtpVerb.Expn:
                return Error(SmtpReplies.NotImplemented);
            default:
                return Error(SmtpReplies.Unrecognized);
        }
    }

    private Step Reply(ReadOnlySpan<byte> reply)
    {
        _output.Write(reply);
        return Step.Continue;
    }

    /// <summary>Sends an error reply and counts it; past the limit the client is dropped with 421.</summary>
    private Step Error(ReadOnlySpan<byte> reply)
    {
        _output.Write(reply);
        if (++_errors < _server.Settings.Limits.MaxErrors)
            return Step.Continue;
        _server.Log.Info($"{_clientAddress}: dropped after {_errors} errors");
        ResetTransaction();
        _output.Write(SmtpReplies.TooManyErrors);
        _closeAfterFlush = true;
        return Step.Close;
    }

    private void ResetTransaction()
    {
        _message?.Release();
        _message = null;
        _recipients.Clear();
        _notify.Clear();
        _orcpt.Clear();
        _anyNotify = false;
        _anyOrcpt = false;
        _envelopeId = null;
        _sender = [];
        _flags = EnvelopeFlags.None;
        _usedBdat = false;
        _transactionDeadline = 0;
        _spfCheck = null;
        if (_phase is Phase.HaveSender or Phase.HaveRecipients or Phase.Data or Phase.Bdat)
            _phase = Phase.Ready;
    }
}
