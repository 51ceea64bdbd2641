using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using NativeRelay.Delivery;
using NativeRelay.Message;
using NativeRelay.Net;
using NativeRelay.Policy;
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
internal sealed class SmtpServerSession
{
    private const int MaxCommandLine = CommandLineReader.MaxCommandLineLength;
    private const int MaxEnvelopeIdLength = 100;   // RFC 3461 4.4
    private const int MaxOrcptLength = 500;        // RFC 3461 4.2
    private static readonly TimeSpan MaxAuthDelay = TimeSpan.FromSeconds(30);

    private enum Phase { Connected, Ready, HaveSender, HaveRecipients, Data, Bdat }

    /// <summary>What Process (and HandleCommand) ask RunAsync to do next. Continue means "go on parsing".</summary>
    private enum Step { Continue, EndOfData, StartTls, Authenticate, Close }

    private enum AuthStep : byte { None, PlainResponse, LoginUser, LoginPassword }

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
    private readonly int _traceReserve;
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
        _traceReserve = ReceivedHeader.MaxLength + (listener.IsSubmission ? SubmissionHeaders.MaxLength : 0);
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
                    var wait = ReadTimeout(out bool transactionLimit);
                    if (wait <= TimeSpan.Zero)
                    {
                        await ReplyAndCloseAsync(SmtpReplies.TransactionTimeout);
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
                        if (_commands == 0)
                            Telemetry.RelayMetrics.IdleBeforeCommandClosed.Increment();
                        _server.Log.Info($"{_clientAddress}: {(transactionLimit ? "transaction time limit" : _commands == 0 ? "no command" : "timeout")}, closing");
                        await ReplyAndCloseAsync(transactionLimit ? SmtpReplies.TransactionTimeout : SmtpReplies.Timeout);
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

    private TimeSpan ReadTimeout(out bool transactionLimit)
    {
        var wait = _phase is Phase.Data or Phase.Bdat ? _dataTimeout : _commandTimeout;
        transactionLimit = false;
        if (_commands == 0 && _idleBeforeCommand < wait)
            wait = _idleBeforeCommand;
        if (_transactionDeadline != 0 && InTransaction)
        {
            long left = _transactionDeadline - Environment.TickCount64;
            if (left < wait.TotalMilliseconds)
            {
                wait = TimeSpan.FromMilliseconds(Math.Max(0, left));
                transactionLimit = true;
            }
        }
        return wait;
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

    /// <summary>The TLS handshake, then a fresh start: RFC 3207 4.2 says forget all that was said before.</summary>
    private async ValueTask<bool> StartTlsAsync(CancellationToken stopping)
    {
        try
        {
            _tls = await TlsTransport.AcceptAsync(_connection.Transport, _server.Certificates!, _commandTimeout, stopping);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _server.Log.Info($"{_clientAddress}: TLS handshake failed: {e.GetType().Name}: {e.Message}");
            return false;
        }
        _input = _tls.Input;
        _output = _tls.Output;
        ResetTransaction();
        _phase = Phase.Connected;
        _esmtp = false;
        _heloName = "";
        _authStep = AuthStep.None;
        _authenticatedUser = null;
        _discardingLongLine = false;
        return true;
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

    private byte[] AuthScratch => _authScratch ??= new byte[Sasl.MaxResponseLine];

    private static bool StartsWithAuth(in ReadOnlySequence<byte> buffer)
    {
        Span<byte> head = stackalloc byte[5];
        if (buffer.Length < 5)
            return false;
        buffer.Slice(0, 5).CopyTo(head);
        return Ascii.EqualsIgnoreCase(head, "AUTH "u8);
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

    private Step StartTls(ReadOnlySpan<byte> argument)
    {
        if (!argument.IsEmpty)
            return Error(SmtpReplies.NoArgumentsAllowed);
        if (_server.Certificates is null)
            return Error(SmtpReplies.NotImplemented);
        if (_tls is not null)
            return Error(SmtpReplies.TlsAlreadyActive);
        if (InTransaction)
            return Error(SmtpReplies.StartTlsInTransaction);
        _output.Write(SmtpReplies.ReadyToStartTls);
        return Step.StartTls;
    }

    private Step Auth(ReadOnlySpan<byte> argument)
    {
        if (_server.Users is null || !_listener.IsSubmission)
            return Error(SmtpReplies.AuthNotEnabled);
        if (_phase == Phase.Connected || !_esmtp)
            return Error(SmtpReplies.BadSequenceNeedHelo);
        if (_authenticatedUser is not null)
            return Error(SmtpReplies.AuthAlreadyDone);
        if (InTransaction)
            return Error(SmtpReplies.AuthInTransaction);
        if (_tls is null && !_server.Settings.AllowPlaintextAuth)
            return Error(SmtpReplies.AuthNeedsEncryption);

        int space = argument.IndexOf((byte)' ');
        var name = space < 0 ? argument : argument[..space];
        var initial = space < 0 ? default : argument[(space + 1)..];
        if (name.IsEmpty || initial.IndexOf((byte)' ') >= 0)
            return Error(SmtpReplies.AuthSyntax);
        var mechanism = Sasl.ParseMechanism(name);
        if (mechanism == SaslMechanism.None)
            return Error(SmtpReplies.AuthUnknownMechanism);

        if (space < 0)
        {
            _authStep = mechanism == SaslMechanism.Plain ? AuthStep.PlainResponse : AuthStep.LoginUser;
            return Reply(mechanism == SaslMechanism.Plain ? Sasl.EmptyChallenge : Sasl.LoginUserChallenge);
        }
        if (Sasl.IsCancel(initial))
            return Error(SmtpReplies.AuthCancelled);
        var decoded = Sasl.DecodeResponse(initial);
        if (decoded is null)
            return Error(SmtpReplies.AuthBadResponse);
        if (mechanism == SaslMechanism.Plain)
            return PlainCredentials(decoded);
        _authUser = decoded;
        _authStep = AuthStep.LoginPassword;
        return Reply(Sasl.LoginPasswordChallenge);
    }

    /// <summary>A line of the AUTH exchange (a base64 response, or "*" to cancel).</summary>
    private Step AuthResponse(ReadOnlySpan<byte> line)
    {
        var step = _authStep;
        _authStep = AuthStep.None;
        if (Sasl.IsCancel(line))
        {
            ClearCredentials();
            return Error(SmtpReplies.AuthCancelled);
        }
        var decoded = Sasl.DecodeResponse(line);
        if (decoded is null)
        {
            ClearCredentials();
            return Error(SmtpReplies.AuthBadResponse);
        }
        switch (step)
        {
            case AuthStep.PlainResponse:
                return PlainCredentials(decoded);
            case AuthStep.LoginUser:
                _authUser = decoded;
                _authStep = AuthStep.LoginPassword;
                return Reply(Sasl.LoginPasswordChallenge);
            default:
                _authUser ??= [];
                _authPassword = decoded;
                return Step.Authenticate;
        }
    }

    private Step PlainCredentials(byte[] message)
    {
        // A malformed PLAIN message is a failed login like any other (same delay, same count).
        Sasl.TryParsePlain(message, out var user, out var password);
        CryptographicOperations.ZeroMemory(message);
        _authUser = user;
        _authPassword = password;
        return Step.Authenticate;
    }

    private void ClearCredentials()
    {
        if (_authPassword is not null)
            CryptographicOperations.ZeroMemory(_authPassword);
        _authUser = null;
        _authPassword = null;
    }

    /// <summary>Checks the collected credentials: 235, or 535 after a delay that grows with each failure, and 421 at the limit.</summary>
    private async ValueTask AuthenticateAsync(CancellationToken stopping)
    {
        var user = _authUser ?? [];
        var password = _authPassword ?? [];
        _authUser = null;
        _authPassword = null;
        string? name = null;
        try
        {
            if (user.Length > 0 && password.Length > 0)
                name = await _server.Users!.VerifyAsync(user, password);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(password);
        }

        if (name is not null)
        {
            _authenticatedUser = name;
            _server.Log.Info($"{_clientAddress}: authenticated as {name}");
            Reply(SmtpReplies.AuthSucceeded);
            return;
        }

        _authFailures++;
        var limits = _server.Settings.Limits;
        int fromAddress = _server.AuthThrottle.RecordFailure(_clientAddress);
        _server.Log.Info($"{_clientAddress}: AUTH failed for '{Printable(user)}' ({_authFailures} of {limits.MaxAuthFailures} in this session, {fromAddress} from this address lately)");
        var delay = AuthThrottle.Delay(_authFailures, fromAddress, limits.AuthFailureDelaySeconds, MaxAuthDelay);
        if (delay > TimeSpan.Zero)
        {
            try
            {
                await Task.Delay(delay, stopping);
            }
            catch (OperationCanceledException)
            {
            }
        }
        if (_authFailures >= limits.MaxAuthFailures)
        {
            _output.Write(SmtpReplies.AuthFailed);
            _output.Write(SmtpReplies.AuthTooManyFailures);
            _closeAfterFlush = true;
            return;
        }
        Error(SmtpReplies.AuthFailed);
    }

    private static string Printable(byte[] text)
    {
        var s = Encoding.UTF8.GetString(text, 0, Math.Min(text.Length, 64));
        return string.Create(s.Length, s, static (span, source) =>
        {
            for (int i = 0; i < span.Length; i++)
                span[i] = char.IsControl(source[i]) || source[i] == '\'' ? '?' : source[i];
        });
    }

    private Step Mail(ReadOnlySpan<byte> argument)
    {
        if (_phase == Phase.Connected)
            return Error(SmtpReplies.BadSequenceNeedHelo);
        if (_phase != Phase.Ready)
            return Error(SmtpReplies.BadSequenceNestedMail);
        // The spool's disk is full: refuse before the client sends the data (RFC 3463 4.3.1).
        if (_server.Spool.IsFull)
            return Reply("452 4.3.1 Insufficient system storage\r\n"u8);
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
        _message.Reserve(_traceReserve);
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
            status = _unstuffer.Process(memory.Span, _message!, out int used);
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
        WriteTraceHeaders(message, facts);

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
            Flags = _flags | (_authenticatedUser is null ? EnvelopeFlags.None : EnvelopeFlags.Authenticated),
        };
        ulong id = _queueId;
        long head, first;
        _server.Intake.ReserveSpool(id);
        try
        {
            (head, first) = await _server.Spool.AppendMessageAsync(id, envelope, message);
            await _server.Spool.WaitForCommitAsync(head);
        }
        catch (SpoolFullException e)
        {
            _server.Intake.CancelReservation(id);
            _server.Log.Warn($"{QueueIdGenerator.ToString(id)}: not queued: {e.Message}");
            ResetTransaction();
            Reply("452 4.3.1 Insufficient system storage\r\n"u8);
            return;
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
        _server.CountAccepted(message.ContentLength, envelope.Recipients.Length);
        _server.Log.Info($"{new QueueIdText(id)}: queued from={envelope.SenderForLog} rcpts={envelope.Recipients.Length} size={message.ContentLength} client={_clientAddress}{(_tls is null ? "" : " tls")}{(_authenticatedUser is null ? "" : " auth=")}{_authenticatedUser}");

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
        ResetTransaction();
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

    private static ReadOnlySpan<byte> PathErrorReply(PathError error, ReadOnlySpan<byte> syntax, ReadOnlySpan<byte> badAddress) =>
        error switch
        {
            PathError.Syntax or PathError.MissingPrefix or PathError.Empty => syntax,
            PathError.NonAscii => SmtpReplies.NonAsciiAddress,
            _ => badAddress,
        };

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
        if (_phase is Phase.HaveSender or Phase.HaveRecipients or Phase.Data or Phase.Bdat)
            _phase = Phase.Ready;
    }
}
