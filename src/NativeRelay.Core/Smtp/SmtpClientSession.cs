using System.Buffers;
using System.Buffers.Text;
using System.IO.Pipelines;
using System.Net;
using System.Net.Security;
using System.Runtime.CompilerServices;
using System.Security.Authentication;
using System.Text;
using NativeRelay.Message;
using NativeRelay.Net;
using NativeRelay.Routing;
using NativeRelay.Spool;

namespace NativeRelay.Smtp;

/// <summary>How a client session connects and greets.</summary>
public sealed class SmtpClientOptions
{
    public required string HeloName { get; init; }
    public TimeSpan ConnectTimeout { get; init; } = TimeSpan.FromSeconds(30);
    public TimeSpan CommandTimeout { get; init; } = TimeSpan.FromMinutes(5);
    public TlsPolicy Tls { get; init; } = TlsPolicy.Opportunistic;
    /// <summary>The next hop's host name, sent as SNI (null for an address literal).</summary>
    public string? TlsHostName { get; init; }
    /// <summary>
    /// The TLS policy stage's certificate check for this connection (records the verdict; fails
    /// the handshake under the verify policy). Null: the certificate is not looked at.
    /// </summary>
    public NativeRelay.TlsPolicies.PeerCertificateCheck? PeerCheck { get; init; }
    /// <summary>The local address to connect from (an egress source); null: the kernel picks.</summary>
    public IPAddress? LocalAddress { get; init; }
}

/// <summary>Where a session failed: the caller decides from it whether to try the next host or address.</summary>
public enum SmtpFailureStage : byte
{
    Connect,
    Greeting,
    Hello,
    Tls,
    Transaction,
}

/// <summary>
/// The sending side of SMTP over one connection: greeting, EHLO (HELO fallback), STARTTLS by
/// policy, then any number of transactions. With PIPELINING, MAIL, every RCPT and DATA go out in
/// one write and their replies are read together (RFC 2920); with CHUNKING the body goes as one
/// <c>BDAT n LAST</c> after the RCPT replies (RFC 3030: raw bytes, no dot-stuffing, and nothing
/// sent when no recipient was accepted); otherwise DATA with the body dot-stuffed straight from
/// the message's pooled blocks. SIZE is declared, BODY=8BITMIME and SMTPUTF8 are passed when
/// the message has them and the peer offers them, and the DSN parameters (RFC 3461) are passed on
/// to a peer that offers DSN. A 452 to a RCPT after others were accepted means the peer's
/// recipient limit: those recipients come back unsent (code 0) for the next transaction.
///
/// Every await here is <c>ConfigureAwait(false)</c>: inside a transaction, replies are read and
/// the next bytes sent on the socket's own event thread, and only the end of the call returns to
/// the caller's context (a delivery loop). That is one wake-up of the loop per transaction
/// instead of one per reply. The session is used by one caller at a time, so nothing in it is
/// shared while it runs.
/// </summary>
public sealed class SmtpClientSession : IAsyncDisposable
{
    private readonly SocketConnection _connection;
    private PipeReader _input;
    private PipeWriter _output;
    private SslStream? _ssl;
    private readonly TimeSpan _commandTimeout;
    // Bounds each wait for a reply; watched by the process's one DeadlineClock, so arming it per
    // reply is two field writes instead of a timer update and a token registration.
    private readonly Deadline _deadline;
    private bool _broken;

    private SmtpClientSession(SocketConnection connection, TimeSpan commandTimeout)
    {
        _connection = connection;
        _input = connection.Transport.Input;
        _output = connection.Transport.Output;
        _commandTimeout = commandTimeout;
        _deadline = new Deadline(DeadlineClock.Shared, static (state, waitingFor) =>
        {
            var session = (SmtpClientSession)state;
            if (waitingFor == DeadlineFor.Write)
                session._output.CancelPendingFlush();
            else
                session._input.CancelPendingRead();
        }, this);
    }

    public SmtpCapabilities Capabilities { get; private set; }
    public long MaxSize { get; private set; }
    /// <summary>Recipients per transaction the peer takes (LIMITS RCPTMAX, or learned from a 452); 0: unknown.</summary>
    public int RecipientLimit { get; private set; }
    /// <summary>Transactions per connection the peer takes (LIMITS MAILMAX); 0: unknown.</summary>
    public int TransactionLimit { get; private set; }
    public IPEndPoint RemoteEndPoint => _connection.RemoteEndPoint;
    public int TransactionsDone { get; private set; }

    /// <summary>"TLSv1.3" etc. once STARTTLS succeeded; null in plain text.</summary>
    public string? TlsProtocol { get; private set; }
    public string? TlsCipher { get; private set; }
    /// <summary>The peer's certificate verified (trusted chain, host name per RFC 6125) by the connection's <see cref="SmtpClientOptions.PeerCheck"/>.</summary>
    public bool TlsCertificateVerified { get; private set; }
    /// <summary>How the certificate was verified ("ca", "dane", "mta-sts"), or null.</summary>
    public string? TlsVerifiedBy { get; private set; }

    /// <summary>The TLS policy decision this connection was opened with (null: none asked).</summary>
    public NativeRelay.TlsPolicies.PeerCertificateCheck? PeerCheck { get; private set; }

    /// <summary>False once the connection can no longer be trusted for another transaction.</summary>
    public bool IsUsable => !_broken;

    /// <summary>
    /// Connects, reads the greeting, says EHLO (or HELO) and starts TLS as the policy says. Any
    /// failure throws <see cref="SmtpSessionException"/> with the reply and the stage, so the
    /// caller can try the next address (RFC 5321 5.1: connect failure or a 4xx/5xx greeting).
    /// </summary>
    public static async Task<SmtpClientSession> ConnectAsync(IPEndPoint remote, SmtpClientOptions options, CancellationToken cancel)
    {
        SocketConnection connection;
        using (var connectCancel = CancellationTokenSource.CreateLinkedTokenSource(cancel))
        {
            connectCancel.CancelAfter(options.ConnectTimeout);
            try
            {
                var local = options.LocalAddress is { } bind ? new IPEndPoint(bind, 0) : null;
                connection = await SocketConnection.ConnectAsync(remote, local, connectCancel.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
            {
                throw new SmtpSessionException(SmtpReply.Local(421, $"4.4.1 connect to {remote} timed out"), SmtpFailureStage.Connect);
            }
            catch (System.Net.Sockets.SocketException e)
            {
                throw new SmtpSessionException(SmtpReply.Local(421, $"4.4.1 connect to {remote}"
                    + (options.LocalAddress is { } from ? $" from {from}" : "") + $" failed: {e.SocketErrorCode}"), SmtpFailureStage.Connect);
            }
        }

        var session = new SmtpClientSession(connection, options.CommandTimeout) { PeerCheck = options.PeerCheck };
        try
        {
            var greeting = await session.ReadReplyAsync(keepText: true).ConfigureAwait(false);
            if (greeting.Code != 220)
                throw new SmtpSessionException(greeting, SmtpFailureStage.Greeting);
            await session.HelloAsync(options).ConfigureAwait(false);
            return session;
        }
        catch
        {
            await session.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>Connects without TLS (the form the benchmarks and tools use).</summary>
    public static Task<SmtpClientSession> ConnectAsync(IPEndPoint remote, string heloName, TimeSpan connectTimeout,
        TimeSpan commandTimeout, CancellationToken cancel) =>
        ConnectAsync(remote, new SmtpClientOptions
        {
            HeloName = heloName,
            ConnectTimeout = connectTimeout,
            CommandTimeout = commandTimeout,
            Tls = TlsPolicy.None,
        }, cancel);

    private async Task HelloAsync(SmtpClientOptions options)
    {
        var reply = await EhloAsync(options.HeloName).ConfigureAwait(false);
        if (!reply.IsPositive)
        {
            if (!reply.IsPermanent)
                throw new SmtpSessionException(reply, SmtpFailureStage.Hello);
            // A server that does not know EHLO: plain SMTP (RFC 5321 3.2).
            Capabilities = SmtpCapabilities.None;
            _output.Write("HELO "u8);
            WriteAscii(options.HeloName);
            _output.Write("\r\n"u8);
            await FlushBoundedAsync().ConfigureAwait(false);
            reply = await ReadReplyAsync().ConfigureAwait(false);
            if (!reply.IsPositive)
                throw new SmtpSessionException(reply, SmtpFailureStage.Hello);
        }

        if (options.Tls == TlsPolicy.None)
            return;
        // Without OpenSSL a handshake would abort the process: opportunistic TLS is then skipped.
        // Start-up refuses a configuration that requires TLS, but a policy may still ask for it
        // (DANE, MTA-STS, REQUIRETLS, from remote input): that delivery fails temporarily instead.
        if (!NativeRelay.Net.OpenSslLibrary.IsAvailable)
        {
            if (options.Tls == TlsPolicy.Opportunistic)
                return;
            throw new SmtpSessionException(SmtpReply.Local(451, $"4.7.4 TLS is required, but OpenSSL 3 cannot be loaded on this host ({NativeRelay.Net.OpenSslLibrary.Problem})"), SmtpFailureStage.Tls);
        }
        if ((Capabilities & SmtpCapabilities.StartTls) == 0)
        {
            if (options.Tls >= TlsPolicy.Required)
                throw new SmtpSessionException(SmtpReply.Local(451, $"4.7.4 TLS is required, but {RemoteEndPoint} does not offer STARTTLS"), SmtpFailureStage.Tls)
                    { TlsFailure = NativeRelay.TlsPolicies.TlsFailureType.StarttlsNotSupported };
            return;
        }
        await StartTlsAsync(options).ConfigureAwait(false);
    }

    private async Task<SmtpReply> EhloAsync(string heloName)
    {
        _output.Write("EHLO "u8);
        WriteAscii(heloName);
        _output.Write("\r\n"u8);
        await FlushBoundedAsync().ConfigureAwait(false);
        return await ReadReplyAsync(parseCapabilities: true).ConfigureAwait(false);
    }

    /// <summary>STARTTLS (RFC 3207), the handshake over the connection's pipes, then EHLO again.</summary>
    private async Task StartTlsAsync(SmtpClientOptions options)
    {
        _output.Write("STARTTLS\r\n"u8);
        await FlushBoundedAsync().ConfigureAwait(false);
        var reply = await ReadReplyAsync().ConfigureAwait(false);
        if (reply.Code != 220)
        {
            if (options.Tls >= TlsPolicy.Required)
                throw new SmtpSessionException(SmtpReply.Local(451, $"4.7.4 TLS is required, but {RemoteEndPoint} refused STARTTLS: {reply}"), SmtpFailureStage.Tls)
                    { TlsFailure = NativeRelay.TlsPolicies.TlsFailureType.StarttlsNotSupported };
            return; // the session goes on in plain text, as it was before STARTTLS
        }
        // Nothing may come between the 220 and the handshake: bytes there would be read as if
        // they had been protected (the STARTTLS response-injection class of attacks).
        if (_input.TryRead(out var early))
        {
            bool injected = !early.Buffer.IsEmpty;
            _input.AdvanceTo(early.Buffer.Start);
            if (injected)
            {
                _broken = true;
                throw new SmtpSessionException(SmtpReply.Local(421, $"4.7.0 {RemoteEndPoint} sent data after its STARTTLS reply"), SmtpFailureStage.Tls);
            }
        }

        var ssl = new SslStream(new NativeRelay.Net.DuplexPipeStream(_input, _output), leaveInnerStreamOpen: false);
        var check = options.PeerCheck;
        var auth = new SslClientAuthenticationOptions
        {
            TargetHost = options.TlsHostName ?? "",
            // Opportunistic and required TLS protect against passive eavesdropping; an MX name
            // from DNS authenticates nothing without DNSSEC/DANE or MTA-STS, so, like Postfix's
            // "may" and "encrypt", the certificate is recorded as verified or not, never enforced
            // there. Under "verify" the TLS policy stage's check refuses what it cannot verify.
            RemoteCertificateValidationCallback = check is null ? static (_, _, _, _) => true : check.Validate,
            CertificateRevocationCheckMode = System.Security.Cryptography.X509Certificates.X509RevocationMode.NoCheck,
        };
        using (var handshakeTimeout = new CancellationTokenSource(_commandTimeout))
        {
            try
            {
                await ssl.AuthenticateAsClientAsync(auth, handshakeTimeout.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is AuthenticationException or IOException or OperationCanceledException
                                          or System.ComponentModel.Win32Exception or InvalidOperationException)
            {
                _broken = true;
                await ssl.DisposeAsync().ConfigureAwait(false);
                if (check is { MustVerify: true, Failure: { } why })
                    throw new SmtpSessionException(SmtpReply.Local(451, $"4.7.5 TLS to {RemoteEndPoint} not verified: {why}"),
                        SmtpFailureStage.Tls) { CertificateProblem = check.Problem, TlsFailure = NativeRelay.TlsPolicies.TlsFailureType.For(check.Problem) };
                throw new SmtpSessionException(SmtpReply.Local(421, $"4.7.5 TLS handshake with {RemoteEndPoint} failed: {OneLine(e.Message)}"),
                    SmtpFailureStage.Tls) { TlsFailure = options.Tls >= TlsPolicy.Required ? NativeRelay.TlsPolicies.TlsFailureType.ValidationFailure : null };
            }
        }
        _ssl = ssl;
        TlsCertificateVerified = check?.Verified ?? false;
        TlsVerifiedBy = check?.VerifiedBy;
        TlsProtocol = ssl.SslProtocol switch
        {
#pragma warning disable SYSLIB0039 // only named, never enabled
            SslProtocols.Tls => "TLSv1",
            SslProtocols.Tls11 => "TLSv1.1",
#pragma warning restore SYSLIB0039
            SslProtocols.Tls12 => "TLSv1.2",
            SslProtocols.Tls13 => "TLSv1.3",
            var p => p.ToString(),
        };
        TlsCipher = ssl.NegotiatedCipherSuite.ToString();
        _input = PipeReader.Create(ssl, new StreamPipeReaderOptions(leaveOpen: true));
        _output = PipeWriter.Create(ssl, new StreamPipeWriterOptions(leaveOpen: true));

        // RFC 3207 4.2: everything learned before TLS is forgotten; EHLO again.
        var reply2 = await EhloAsync(options.HeloName).ConfigureAwait(false);
        if (!reply2.IsPositive)
            throw new SmtpSessionException(reply2, SmtpFailureStage.Hello);
    }

    /// <summary>
    /// One mail transaction for some of the envelope's recipients (indexes into it). Fills
    /// <paramref name="results"/> (one per index): a RCPT refusal, or the final reply for every
    /// accepted recipient; code 0 for a recipient that was not sent because the peer's recipient
    /// limit was reached (send it in another transaction). A failure of the connection itself
    /// throws; the caller treats it as transient for every recipient.
    /// </summary>
    /// <param name="maxRecipients">At most this many RCPTs in the transaction (shaping); 0: the peer's limit only.</param>
    /// <returns>True when the peer offered DSN, so NOTIFY/RET/ENVID/ORCPT went with the message.</returns>
    public ValueTask<bool> SendAsync(Envelope envelope, MessageBuffer body, IReadOnlyList<int> recipients, SmtpReply[] results, int maxRecipients = 0) =>
        SendCoreAsync(envelope.Sender, envelope.Flags, envelope.EnvelopeId, envelope.Recipients, envelope.Notify,
            envelope.OriginalRecipients, recipients, body, results, maxRecipients);

    /// <summary>
    /// One transaction for a plain sender and recipient list (benchmarks, tools): one reply per
    /// recipient; one the peer's recipient limit left unsent gets 452 4.5.3.
    /// </summary>
    public async Task<SmtpReply[]> SendAsync(ReadOnlyMemory<byte> sender, IReadOnlyList<byte[]> recipients, MessageBuffer body, bool eightBit)
    {
        var results = new SmtpReply[recipients.Count];
        await SendCoreAsync(sender, eightBit ? EnvelopeFlags.EightBitMime : EnvelopeFlags.None, null, recipients, null, null, null, body, results).ConfigureAwait(false);
        for (int k = 0; k < results.Length; k++)
            if (results[k].Code == 0)
                results[k] = SmtpReply.Local(452, "4.5.3 not sent: the remote recipient limit was reached");
        return results;
    }

    // Pooled builders (here and on ReadReplyAsync): a transaction's awaits complete asynchronously
    // every time, and each would otherwise box its state machine, about 500 bytes per message.
    // Safe because every caller awaits the ValueTask exactly once.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<bool> SendCoreAsync(ReadOnlyMemory<byte> sender, EnvelopeFlags flags, byte[]? envelopeId,
        IReadOnlyList<byte[]> addresses, DsnNotify[]? notify, byte[]?[]? orcpts, IReadOnlyList<int>? recipients,
        MessageBuffer body, SmtpReply[] results, int maxRecipients = 0)
    {
        int limit = recipients?.Count ?? addresses.Count;
        if (RecipientLimit > 0 && limit > RecipientLimit)
            limit = RecipientLimit;
        if (maxRecipients > 0 && limit > maxRecipients)
            limit = maxRecipients;
        for (int k = 0; k < results.Length; k++)
            results[k] = default;
        bool pipelining = (Capabilities & SmtpCapabilities.Pipelining) != 0;
        bool chunking = (Capabilities & SmtpCapabilities.Chunking) != 0;
        bool dsn = (Capabilities & SmtpCapabilities.Dsn) != 0;
        _broken = true; // until the transaction ends cleanly

        WriteMail(sender.Span, flags, envelopeId, body.ContentLength, dsn);
        SmtpReply mail = default;
        if (!pipelining)
        {
            await FlushBoundedAsync().ConfigureAwait(false);
            mail = await ReadReplyAsync().ConfigureAwait(false);
            if (!mail.IsPositive)
            {
                Fill(results, limit, mail);
                await ResetAfterRefusalAsync().ConfigureAwait(false);
                return dsn;
            }
        }

        int accepted = 0;
        if (pipelining)
        {
            for (int k = 0; k < limit; k++)
                WriteRcpt(addresses, notify, orcpts, recipients?[k] ?? k, dsn);
            if (!chunking)
                _output.Write("DATA\r\n"u8);
            await FlushBoundedAsync().ConfigureAwait(false);
            mail = await ReadReplyAsync().ConfigureAwait(false);
            bool full = false;
            for (int k = 0; k < limit; k++)
            {
                var reply = await ReadReplyAsync().ConfigureAwait(false);
                if (full || IsRecipientLimit(reply, accepted))
                {
                    full = true; // this one and every later one: next transaction
                    continue;
                }
                results[k] = reply;
                if (reply.IsPositive)
                    accepted++;
            }
            if (full)
                RecipientLimit = accepted;
        }
        else
        {
            for (int k = 0; k < limit; k++)
            {
                WriteRcpt(addresses, notify, orcpts, recipients?[k] ?? k, dsn);
                await FlushBoundedAsync().ConfigureAwait(false);
                var reply = await ReadReplyAsync().ConfigureAwait(false);
                if (IsRecipientLimit(reply, accepted))
                {
                    RecipientLimit = accepted;
                    break;
                }
                results[k] = reply;
                if (reply.IsPositive)
                    accepted++;
            }
        }

        if (pipelining && !mail.IsPositive)
        {
            // Every RCPT (and the DATA) was answered, with 503s; the MAIL refusal is the cause.
            if (!chunking && (await ReadReplyAsync().ConfigureAwait(false)).Code == 354)
                return dsn; // a broken server: the connection stays marked broken
            Fill(results, limit, mail);
            await ResetAfterRefusalAsync().ConfigureAwait(false);
            return dsn;
        }
        if (accepted == 0)
        {
            if (pipelining && !chunking && (await ReadReplyAsync().ConfigureAwait(false)).Code == 354)
                return dsn; // should not happen; the connection stays marked broken
            await ResetAfterRefusalAsync().ConfigureAwait(false);
            return dsn;
        }

        SmtpReply final;
        if (chunking)
        {
            _output.Write("BDAT "u8);
            WriteNumber(body.ContentLength);
            _output.Write(" LAST\r\n"u8);
            foreach (var segment in body.GetSegments())
            {
                _output.Write(segment.Span);
                if (_output.UnflushedBytes >= 256 * 1024)
                    await FlushBoundedAsync().ConfigureAwait(false);
            }
            await FlushBoundedAsync().ConfigureAwait(false);
            final = await ReadReplyAsync(keepText: true).ConfigureAwait(false);
        }
        else
        {
            if (!pipelining)
            {
                _output.Write("DATA\r\n"u8);
                await FlushBoundedAsync().ConfigureAwait(false);
            }
            var dataReply = await ReadReplyAsync().ConfigureAwait(false);
            if (dataReply.Code != 354)
            {
                Replace(results, limit, dataReply);
                await ResetAfterRefusalAsync().ConfigureAwait(false);
                return dsn;
            }
            var state = DotStuffer.NewState();
            foreach (var segment in body.GetSegments())
            {
                DotStuffer.Write(segment.Span, _output, ref state);
                if (_output.UnflushedBytes >= 256 * 1024)
                    await FlushBoundedAsync().ConfigureAwait(false);
            }
            DotStuffer.WriteTerminator(_output, ref state);
            await FlushBoundedAsync().ConfigureAwait(false);
            final = await ReadReplyAsync(keepText: true).ConfigureAwait(false);
        }
        Replace(results, limit, final);
        _broken = false;
        TransactionsDone++;
        if (!final.IsPositive)
            await ResetAfterRefusalAsync().ConfigureAwait(false);
        return dsn;
    }

    // RFC 5321 4.5.3.1.10: 452 to a RCPT after others were accepted is the recipient limit; the
    // rest go in a new transaction. (452 4.2.2 "mailbox full" is a recipient's own failure.)
    private static bool IsRecipientLimit(SmtpReply reply, int acceptedSoFar)
    {
        if (reply.Code != 452 || acceptedSoFar == 0)
            return false;
        var text = reply.Text.AsSpan();
        return text.IsEmpty || !char.IsAsciiDigit(text[0]) || text.StartsWith("4.5.3", StringComparison.Ordinal);
    }

    private static void Fill(SmtpReply[] results, int count, SmtpReply reply)
    {
        for (int k = 0; k < count; k++)
            results[k] = reply;
    }

    // The final reply (or a refused DATA) applies to every recipient the RCPTs got through.
    private static void Replace(SmtpReply[] results, int count, SmtpReply reply)
    {
        for (int k = 0; k < count; k++)
            if (results[k].IsPositive)
                results[k] = reply;
    }

    /// <summary>
    /// RSET after a refused transaction. A server that refused with 421 closes the connection
    /// (RFC 5321 3.8): the refusal is the transaction's answer, so a failed RSET only marks the
    /// connection unusable instead of replacing the server's reply with "connection lost".
    /// </summary>
    private async ValueTask ResetAfterRefusalAsync()
    {
        try
        {
            await ResetAsync().ConfigureAwait(false);
        }
        catch (SmtpSessionException)
        {
            _broken = true;
        }
    }

    /// <summary>RSET: clears a half-done transaction so the connection can be reused.</summary>
    public async Task ResetAsync()
    {
        _output.Write("RSET\r\n"u8);
        await FlushBoundedAsync().ConfigureAwait(false);
        var reply = await ReadReplyAsync().ConfigureAwait(false);
        _broken = !reply.IsPositive;
    }

    /// <summary>
    /// How long <see cref="QuitAsync"/> waits for the reply to QUIT (at most the command timeout).
    /// The delivery holds its connection slot until the socket is closed, so a peer that sits on
    /// its goodbye must not keep a queued message waiting for the full command timeout; the reply
    /// decides nothing (RFC 5321 4.1.1.10 asks the client only to wait for it, not how long).
    /// </summary>
    internal static readonly TimeSpan QuitTimeout = TimeSpan.FromSeconds(10);

    public async Task QuitAsync()
    {
        try
        {
            _output.Write("QUIT\r\n"u8);
            await FlushBoundedAsync().ConfigureAwait(false);
            await ReadReplyAsync(timeout: QuitTimeout < _commandTimeout ? QuitTimeout : _commandTimeout).ConfigureAwait(false);
        }
        catch (Exception e) when (e is SmtpSessionException or IOException or OperationCanceledException
                                      or System.Net.Sockets.SocketException or ObjectDisposedException or InvalidOperationException)
        {
            // The transaction results are already known; a rude goodbye changes nothing.
        }
    }

    private void WriteMail(ReadOnlySpan<byte> sender, EnvelopeFlags flags, byte[]? envelopeId, long size, bool dsn)
    {
        _output.Write("MAIL FROM:<"u8);
        _output.Write(sender);
        _output.Write(">"u8);
        if ((Capabilities & SmtpCapabilities.Size) != 0)
        {
            _output.Write(" SIZE="u8);
            WriteNumber(size);
        }
        if ((flags & (EnvelopeFlags.EightBitMime | EnvelopeFlags.SmtpUtf8)) != 0 && (Capabilities & SmtpCapabilities.EightBitMime) != 0)
            _output.Write(" BODY=8BITMIME"u8);
        if ((flags & EnvelopeFlags.SmtpUtf8) != 0 && (Capabilities & SmtpCapabilities.SmtpUtf8) != 0)
            _output.Write(" SMTPUTF8"u8);
        if ((flags & EnvelopeFlags.RequireTls) != 0 && (Capabilities & SmtpCapabilities.RequireTls) != 0)
            _output.Write(" REQUIRETLS"u8);
        if (dsn)
        {
            if ((flags & EnvelopeFlags.ReturnFull) != 0)
                _output.Write(" RET=FULL"u8);
            else if ((flags & EnvelopeFlags.ReturnHeadersOnly) != 0)
                _output.Write(" RET=HDRS"u8);
            if (envelopeId is { Length: > 0 } envId)
            {
                _output.Write(" ENVID="u8);
                WriteXtext(envId);
            }
        }
        _output.Write("\r\n"u8);
    }

    private void WriteRcpt(IReadOnlyList<byte[]> addresses, DsnNotify[]? notifies, byte[]?[]? orcpts, int index, bool dsn)
    {
        _output.Write("RCPT TO:<"u8);
        _output.Write(addresses[index]);
        _output.Write(">"u8);
        if (dsn)
        {
            var notify = notifies is { } n && index < n.Length ? n[index] : DsnNotify.None;
            if (notify != DsnNotify.None)
            {
                _output.Write(" NOTIFY="u8);
                if ((notify & DsnNotify.Never) != 0)
                    _output.Write("NEVER"u8);
                else
                {
                    bool first = true;
                    if ((notify & DsnNotify.Success) != 0) { _output.Write("SUCCESS"u8); first = false; }
                    if ((notify & DsnNotify.Failure) != 0) { _output.Write(first ? "FAILURE"u8 : ",FAILURE"u8); first = false; }
                    if ((notify & DsnNotify.Delay) != 0) _output.Write(first ? "DELAY"u8 : ",DELAY"u8);
                }
            }
            if (orcpts is not null && index < orcpts.Length && orcpts[index] is { Length: > 0 } orcpt)
            {
                // Stored as "addr-type;address" with the address xtext-decoded: encode it again.
                int semicolon = orcpt.AsSpan().IndexOf((byte)';');
                if (semicolon > 0)
                {
                    _output.Write(" ORCPT="u8);
                    _output.Write(orcpt.AsSpan(0, semicolon + 1));
                    WriteXtext(orcpt.AsSpan(semicolon + 1));
                }
            }
        }
        _output.Write("\r\n"u8);
    }

    /// <summary>RFC 3461 4: xtext, "+" and "=" and anything outside '!'..'~' as "+HH".</summary>
    private void WriteXtext(ReadOnlySpan<byte> value)
    {
        const string hex = "0123456789ABCDEF";
        var span = _output.GetSpan(value.Length * 3);
        int n = 0;
        foreach (byte b in value)
        {
            if (b is >= 33 and <= 126 and not (byte)'+' and not (byte)'=')
                span[n++] = b;
            else
            {
                span[n++] = (byte)'+';
                span[n++] = (byte)hex[b >> 4];
                span[n++] = (byte)hex[b & 0xF];
            }
        }
        _output.Advance(n);
    }

    private void WriteNumber(long value)
    {
        var span = _output.GetSpan(20);
        Utf8Formatter.TryFormat(value, span, out int n);
        _output.Advance(n);
    }

    private void WriteAscii(string text)
    {
        var span = _output.GetSpan(text.Length);
        int n = Encoding.ASCII.GetBytes(text, span);
        _output.Advance(n);
    }

    /// <summary>Reads one (possibly multi-line) reply. Bounded by the command timeout, or by <paramref name="timeout"/>.</summary>
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    private async ValueTask<SmtpReply> ReadReplyAsync(bool parseCapabilities = false, bool keepText = false, TimeSpan? timeout = null)
    {
        if (parseCapabilities)
        {
            Capabilities = SmtpCapabilities.None;
            MaxSize = 0;
        }
        _deadline.Arm(timeout ?? _commandTimeout, DeadlineFor.Read);
        SmtpReply parsed;
        bool expired;
        try
        {
            while (true)
            {
                var result = await _input.ReadAsync().ConfigureAwait(false);
                // Only the deadline cancels this reader.
                if (result.IsCanceled)
                    throw TimedOut();
                var buffer = result.Buffer;
                if (TryParseReply(ref buffer, parseCapabilities, keepText, out parsed))
                {
                    _input.AdvanceTo(buffer.Start);
                    break;
                }
                _input.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted)
                {
                    _broken = true;
                    throw new SmtpSessionException(SmtpReply.Local(421, "4.4.2 connection closed by the remote server"), SmtpFailureStage.Transaction);
                }
                if (buffer.Length > 64 * 1024)
                {
                    _broken = true;
                    throw new SmtpSessionException(SmtpReply.Local(421, "4.5.0 remote reply too long"), SmtpFailureStage.Transaction);
                }
            }
        }
        catch (IOException e)
        {
            // TLS streams report a reset or a bad record this way.
            _broken = true;
            throw new SmtpSessionException(SmtpReply.Local(421, $"4.4.2 connection lost: {OneLine(e.Message)}"), SmtpFailureStage.Transaction);
        }
        finally
        {
            expired = _deadline.Disarm();
        }
        if (expired)
        {
            // The deadline passed even if a reply came with it: a cancel is on its way to this
            // reader and would end whichever read comes next (the next reply, a TLS handshake), so
            // the reply is dropped and the connection given up, as a timer that fired would have.
            throw TimedOut();
        }
        return parsed;
    }

    /// <summary>
    /// Sends what was written, bounded by the command timeout like every wait for a reply: a peer
    /// that stops reading (its window closed, our socket buffer full) must not hold the
    /// connection, and the message on it, forever (RFC 5321 4.5.3.2.5's DATA block timeout).
    /// </summary>
    private async ValueTask FlushBoundedAsync()
    {
        _deadline.Arm(_commandTimeout, DeadlineFor.Write);
        bool canceled;
        bool expired;
        try
        {
            canceled = (await _output.FlushAsync().ConfigureAwait(false)).IsCanceled;
        }
        catch (OperationCanceledException)
        {
            // Over TLS the flush writes to the SslStream, and the cancel ends that write this way.
            canceled = true;
        }
        finally
        {
            expired = _deadline.Disarm();
        }
        if (canceled || expired)
        {
            _broken = true;
            throw new SmtpSessionException(SmtpReply.Local(421, "4.4.2 timeout sending to the remote server (it stopped reading)"), SmtpFailureStage.Transaction);
        }
    }

    private SmtpSessionException TimedOut()
    {
        _broken = true;
        return new SmtpSessionException(SmtpReply.Local(421, "4.4.2 timeout waiting for the remote server"), SmtpFailureStage.Transaction);
    }

    // Consumes the lines of one complete reply. Each line is "ddd-text" (more follow) or
    // "ddd text" / "ddd" (last line). Text is kept for failures (and when asked), as one line.
    private bool TryParseReply(ref ReadOnlySequence<byte> buffer, bool parseCapabilities, bool keepText, out SmtpReply reply)
    {
        reply = default;
        var reader = new SequenceReader<byte>(buffer);
        StringBuilder? text = null;
        Span<byte> lineCopy = stackalloc byte[512];
        while (reader.TryReadTo(out ReadOnlySequence<byte> lineSequence, (byte)'\n'))
        {
            scoped ReadOnlySpan<byte> line;
            if (lineSequence.IsSingleSegment)
                line = lineSequence.FirstSpan;
            else
            {
                int n = (int)Math.Min(lineSequence.Length, lineCopy.Length);
                lineSequence.Slice(0, n).CopyTo(lineCopy);
                line = lineCopy[..n];
            }
            if (!line.IsEmpty && line[^1] == '\r')
                line = line[..^1];
            if (line.Length < 3 || !Utf8Parser.TryParse(line[..3], out int code, out int used) || used != 3 || code < 100)
            {
                _broken = true;
                throw new SmtpSessionException(SmtpReply.Local(421, "4.5.0 malformed reply from the remote server"), SmtpFailureStage.Transaction);
            }
            bool last = line.Length == 3 || line[3] == ' ';
            var lineText = line.Length > 4 ? line[4..] : default;
            if (parseCapabilities && code == 250)
                ParseCapability(lineText);
            if (code >= 400 || keepText)
            {
                if (last && text is null && lineText.IndexOfAnyExceptInRange((byte)0x20, (byte)0x7E) < 0)
                {
                    // The usual case, a one-line reply in plain ASCII: one string, no builder.
                    buffer = buffer.Slice(reader.Position);
                    reply = new SmtpReply(code, Encoding.ASCII.GetString(lineText));
                    return true;
                }
                text ??= new StringBuilder();
                if (text.Length > 0)
                    text.Append(' ');
                if (text.Length < 2048)
                    AppendPrintable(text, lineText);
            }
            if (last)
            {
                buffer = buffer.Slice(reader.Position);
                reply = new SmtpReply(code, text?.ToString());
                return true;
            }
        }
        return false;
    }

    // Reply text goes into logs and bounces: control characters never do.
    private static void AppendPrintable(StringBuilder text, ReadOnlySpan<byte> line)
    {
        foreach (char c in Encoding.UTF8.GetString(line))
            text.Append(char.IsControl(c) ? ' ' : c);
    }

    private void ParseCapability(ReadOnlySpan<byte> line)
    {
        int space = line.IndexOf((byte)' ');
        var keyword = space < 0 ? line : line[..space];
        if (Ascii.EqualsIgnoreCase(keyword, "PIPELINING"u8)) Capabilities |= SmtpCapabilities.Pipelining;
        else if (Ascii.EqualsIgnoreCase(keyword, "8BITMIME"u8)) Capabilities |= SmtpCapabilities.EightBitMime;
        else if (Ascii.EqualsIgnoreCase(keyword, "SMTPUTF8"u8)) Capabilities |= SmtpCapabilities.SmtpUtf8;
        else if (Ascii.EqualsIgnoreCase(keyword, "REQUIRETLS"u8)) Capabilities |= SmtpCapabilities.RequireTls;
        else if (Ascii.EqualsIgnoreCase(keyword, "CHUNKING"u8)) Capabilities |= SmtpCapabilities.Chunking;
        else if (Ascii.EqualsIgnoreCase(keyword, "STARTTLS"u8)) Capabilities |= SmtpCapabilities.StartTls;
        else if (Ascii.EqualsIgnoreCase(keyword, "ENHANCEDSTATUSCODES"u8)) Capabilities |= SmtpCapabilities.EnhancedStatusCodes;
        else if (Ascii.EqualsIgnoreCase(keyword, "DSN"u8)) Capabilities |= SmtpCapabilities.Dsn;
        else if (Ascii.EqualsIgnoreCase(keyword, "SIZE"u8))
        {
            Capabilities |= SmtpCapabilities.Size;
            if (space > 0 && Utf8Parser.TryParse(line[(space + 1)..], out long max, out _))
                MaxSize = max;
        }
        else if (Ascii.EqualsIgnoreCase(keyword, "LIMITS"u8) && space > 0)
        {
            // RFC 9422: "LIMITS RCPTMAX=n MAILMAX=m ..."
            foreach (var range in line[(space + 1)..].Split((byte)' '))
            {
                var item = line[(space + 1)..][range];
                int eq = item.IndexOf((byte)'=');
                if (eq <= 0 || !Utf8Parser.TryParse(item[(eq + 1)..], out int value, out _) || value <= 0)
                    continue;
                if (Ascii.EqualsIgnoreCase(item[..eq], "RCPTMAX"u8))
                    RecipientLimit = value;
                else if (Ascii.EqualsIgnoreCase(item[..eq], "MAILMAX"u8))
                    TransactionLimit = value;
            }
        }
    }

    private static string OneLine(string s) => s.ReplaceLineEndings(" ");

    public async ValueTask DisposeAsync()
    {
        _deadline.Dispose();
        if (_ssl is not null)
        {
            await _input.CompleteAsync().ConfigureAwait(false);
            await _output.CompleteAsync().ConfigureAwait(false);
            try
            {
                await _ssl.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception e) when (e is IOException or ObjectDisposedException or InvalidOperationException)
            {
            }
        }
        await _connection.DisposeAsync().ConfigureAwait(false);
    }
}

/// <summary>A session-level failure (connect, greeting, EHLO, TLS, connection loss) with the reply that explains it.</summary>
public sealed class SmtpSessionException(SmtpReply reply, SmtpFailureStage stage = SmtpFailureStage.Transaction) : Exception(reply.ToString())
{
    public SmtpReply Reply { get; } = reply;
    public SmtpFailureStage Stage { get; } = stage;
    /// <summary>Set when the verify policy refused the peer's certificate.</summary>
    public NativeRelay.TlsPolicies.CertificateProblem CertificateProblem { get; init; }
    /// <summary>Set when a policy that needs TLS refused the next hop: the RFC 8460 result type (<see cref="NativeRelay.TlsPolicies.TlsFailureType"/>).</summary>
    public string? TlsFailure { get; init; }
}
