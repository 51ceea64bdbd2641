using System.Buffers;
using System.Buffers.Text;
using System.IO.Pipelines;
using System.Net;
using System.Text;
using NativeRelay.Message;
using NativeRelay.Net;

namespace NativeRelay.Smtp;

/// <summary>
/// The sending side of SMTP over one connection: greeting, EHLO (HELO fallback), then any number
/// of transactions. With PIPELINING the MAIL, every RCPT and DATA go out in one write and their
/// replies are read together (RFC 2920); the body is dot-stuffed straight from the message's
/// pooled blocks into the output pipe.
/// </summary>
public sealed class SmtpClientSession : IAsyncDisposable
{
    private readonly SocketConnection _connection;
    private readonly PipeReader _input;
    private readonly PipeWriter _output;
    private readonly TimeSpan _commandTimeout;
    private CancellationTokenSource _timeout = new();
    private bool _broken;

    private SmtpClientSession(SocketConnection connection, TimeSpan commandTimeout)
    {
        _connection = connection;
        _input = connection.Transport.Input;
        _output = connection.Transport.Output;
        _commandTimeout = commandTimeout;
    }

    public SmtpCapabilities Capabilities { get; private set; }
    public long MaxSize { get; private set; }
    public IPEndPoint RemoteEndPoint => _connection.RemoteEndPoint;
    public int TransactionsDone { get; private set; }

    /// <summary>False once the connection can no longer be trusted for another transaction.</summary>
    public bool IsUsable => !_broken;

    /// <summary>
    /// Connects and greets. A non-2xx greeting or EHLO/HELO failure throws
    /// <see cref="SmtpSessionException"/> carrying the reply, so the caller can try the next host.
    /// </summary>
    public static async Task<SmtpClientSession> ConnectAsync(IPEndPoint remote, string heloName,
        TimeSpan connectTimeout, TimeSpan commandTimeout, CancellationToken cancel)
    {
        SocketConnection connection;
        using (var connectCancel = CancellationTokenSource.CreateLinkedTokenSource(cancel))
        {
            connectCancel.CancelAfter(connectTimeout);
            try
            {
                connection = await SocketConnection.ConnectAsync(remote, null, connectCancel.Token);
            }
            catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
            {
                throw new SmtpSessionException(SmtpReply.Local(421, $"4.4.1 connect to {remote} timed out"));
            }
            catch (System.Net.Sockets.SocketException e)
            {
                throw new SmtpSessionException(SmtpReply.Local(421, $"4.4.1 connect to {remote} failed: {e.SocketErrorCode}"));
            }
        }

        var session = new SmtpClientSession(connection, commandTimeout);
        try
        {
            var greeting = await session.ReadReplyAsync();
            if (greeting.Code != 220)
                throw new SmtpSessionException(greeting);
            await session.HelloAsync(heloName);
            return session;
        }
        catch
        {
            await session.DisposeAsync();
            throw;
        }
    }

    private async Task HelloAsync(string heloName)
    {
        _output.Write("EHLO "u8);
        WriteAscii(heloName);
        _output.Write("\r\n"u8);
        await _output.FlushAsync();
        var reply = await ReadReplyAsync(parseCapabilities: true);
        if (reply.IsPositive)
            return;
        if (!reply.IsPermanent)
            throw new SmtpSessionException(reply);
        // A server that does not know EHLO: plain SMTP (RFC 5321 3.2).
        Capabilities = SmtpCapabilities.None;
        _output.Write("HELO "u8);
        WriteAscii(heloName);
        _output.Write("\r\n"u8);
        await _output.FlushAsync();
        reply = await ReadReplyAsync();
        if (!reply.IsPositive)
            throw new SmtpSessionException(reply);
    }

    /// <summary>
    /// One mail transaction for the given recipients. Returns the reply for each recipient (a
    /// RCPT refusal, or the final DATA reply for every accepted one). A failure of the connection
    /// itself throws; the caller treats it as transient for every recipient not yet answered.
    /// </summary>
    public async Task<SmtpReply[]> SendAsync(ReadOnlyMemory<byte> sender, IReadOnlyList<byte[]> recipients,
        MessageBuffer body, bool eightBit)
    {
        var results = new SmtpReply[recipients.Count];
        bool pipelining = (Capabilities & SmtpCapabilities.Pipelining) != 0;
        _broken = true; // until the transaction ends cleanly

        WriteMail(sender.Span, body.ContentLength, eightBit);
        if (!pipelining)
        {
            await _output.FlushAsync();
            var mailReply = await ReadReplyAsync();
            if (!mailReply.IsPositive)
                return await AbortTransactionAsync(results, mailReply);
        }

        int accepted = 0;
        SmtpReply mail = default;
        if (pipelining)
        {
            foreach (var r in recipients)
                WriteRcpt(r);
            _output.Write("DATA\r\n"u8);
            await _output.FlushAsync();
            mail = await ReadReplyAsync();
            for (int i = 0; i < recipients.Count; i++)
            {
                results[i] = await ReadReplyAsync();
                if (results[i].IsPositive)
                    accepted++;
            }
        }
        else
        {
            for (int i = 0; i < recipients.Count; i++)
            {
                WriteRcpt(recipients[i]);
                await _output.FlushAsync();
                results[i] = await ReadReplyAsync();
                if (results[i].IsPositive)
                    accepted++;
            }
            if (accepted == 0)
                return await ResetAfterRefusalAsync(results);
            _output.Write("DATA\r\n"u8);
            await _output.FlushAsync();
        }

        var dataReply = await ReadReplyAsync();
        if (pipelining && !mail.IsPositive)
        {
            // Every RCPT and the DATA were answered (with 503s); the MAIL refusal is the cause.
            if (dataReply.Code == 354)
                return results; // broken server: leave the connection marked broken
            for (int i = 0; i < results.Length; i++)
                results[i] = mail;
            _broken = false;
            return results;
        }
        if (accepted == 0)
        {
            if (dataReply.Code == 354)
                return results; // should not happen; the connection stays marked broken
            _broken = false;
            return results;
        }
        if (dataReply.Code != 354)
        {
            for (int i = 0; i < results.Length; i++)
                if (results[i].IsPositive)
                    results[i] = dataReply;
            _broken = false;
            return results;
        }

        var state = DotStuffer.NewState();
        foreach (var segment in body.GetSegments())
        {
            DotStuffer.Write(segment.Span, _output, ref state);
            if (_output.UnflushedBytes >= 256 * 1024)
                await _output.FlushAsync();
        }
        DotStuffer.WriteTerminator(_output, ref state);
        await _output.FlushAsync();
        var final = await ReadReplyAsync();
        for (int i = 0; i < results.Length; i++)
            if (results[i].IsPositive)
                results[i] = final;
        _broken = false;
        TransactionsDone++;
        return results;
    }

    private async Task<SmtpReply[]> AbortTransactionAsync(SmtpReply[] results, SmtpReply cause)
    {
        for (int i = 0; i < results.Length; i++)
            results[i] = cause;
        await ResetAsync();
        return results;
    }

    private async Task<SmtpReply[]> ResetAfterRefusalAsync(SmtpReply[] results)
    {
        await ResetAsync();
        return results;
    }

    /// <summary>RSET: clears a half-done transaction so the connection can be reused.</summary>
    public async Task ResetAsync()
    {
        _output.Write("RSET\r\n"u8);
        await _output.FlushAsync();
        var reply = await ReadReplyAsync();
        _broken = !reply.IsPositive;
    }

    public async Task QuitAsync()
    {
        try
        {
            _output.Write("QUIT\r\n"u8);
            await _output.FlushAsync();
            await ReadReplyAsync();
        }
        catch (Exception e) when (e is SmtpSessionException or IOException or OperationCanceledException or System.Net.Sockets.SocketException)
        {
            // The transaction results are already known; a rude goodbye changes nothing.
        }
    }

    private void WriteMail(ReadOnlySpan<byte> sender, long size, bool eightBit)
    {
        _output.Write("MAIL FROM:<"u8);
        _output.Write(sender);
        _output.Write(">"u8);
        if ((Capabilities & SmtpCapabilities.Size) != 0)
        {
            _output.Write(" SIZE="u8);
            var span = _output.GetSpan(20);
            Utf8Formatter.TryFormat(size, span, out int n);
            _output.Advance(n);
        }
        if (eightBit && (Capabilities & SmtpCapabilities.EightBitMime) != 0)
            _output.Write(" BODY=8BITMIME"u8);
        _output.Write("\r\n"u8);
    }

    private void WriteRcpt(ReadOnlySpan<byte> recipient)
    {
        _output.Write("RCPT TO:<"u8);
        _output.Write(recipient);
        _output.Write(">\r\n"u8);
    }

    private void WriteAscii(string text)
    {
        var span = _output.GetSpan(text.Length);
        int n = Encoding.ASCII.GetBytes(text, span);
        _output.Advance(n);
    }

    /// <summary>Reads one (possibly multi-line) reply. Bounded by the command timeout.</summary>
    private async ValueTask<SmtpReply> ReadReplyAsync(bool parseCapabilities = false)
    {
        if (parseCapabilities)
        {
            Capabilities = SmtpCapabilities.None;
            MaxSize = 0;
        }
        _timeout.CancelAfter(_commandTimeout);
        try
        {
            while (true)
            {
                var result = await _input.ReadAsync(_timeout.Token);
                var buffer = result.Buffer;
                if (TryParseReply(ref buffer, parseCapabilities, out var reply))
                {
                    _input.AdvanceTo(buffer.Start);
                    if (!_timeout.TryReset())
                    {
                        _timeout.Dispose();
                        _timeout = new CancellationTokenSource();
                    }
                    return reply;
                }
                _input.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted)
                {
                    _broken = true;
                    throw new SmtpSessionException(SmtpReply.Local(421, "4.4.2 connection closed by the remote server"));
                }
                if (buffer.Length > 64 * 1024)
                {
                    _broken = true;
                    throw new SmtpSessionException(SmtpReply.Local(421, "4.5.0 remote reply too long"));
                }
            }
        }
        catch (OperationCanceledException)
        {
            _broken = true;
            throw new SmtpSessionException(SmtpReply.Local(421, "4.4.2 timeout waiting for the remote server"));
        }
    }

    // Consumes the lines of one complete reply. Each line is "ddd-text" (more follow) or
    // "ddd text" / "ddd" (last line).
    private bool TryParseReply(ref ReadOnlySequence<byte> buffer, bool parseCapabilities, out SmtpReply reply)
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
            if (line.Length < 3 || !Utf8Parser.TryParse(line[..3], out int code, out int used) || used != 3)
            {
                _broken = true;
                throw new SmtpSessionException(SmtpReply.Local(421, "4.5.0 malformed reply from the remote server"));
            }
            bool last = line.Length == 3 || line[3] == ' ';
            var lineText = line.Length > 4 ? line[4..] : default;
            if (parseCapabilities && code == 250)
                ParseCapability(lineText);
            if (code >= 400)
            {
                text ??= new StringBuilder();
                if (text.Length > 0)
                    text.Append(' ');
                text.Append(Encoding.UTF8.GetString(lineText));
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

    private void ParseCapability(ReadOnlySpan<byte> line)
    {
        int space = line.IndexOf((byte)' ');
        var keyword = space < 0 ? line : line[..space];
        if (Ascii.EqualsIgnoreCase(keyword, "PIPELINING"u8)) Capabilities |= SmtpCapabilities.Pipelining;
        else if (Ascii.EqualsIgnoreCase(keyword, "8BITMIME"u8)) Capabilities |= SmtpCapabilities.EightBitMime;
        else if (Ascii.EqualsIgnoreCase(keyword, "SMTPUTF8"u8)) Capabilities |= SmtpCapabilities.SmtpUtf8;
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
    }

    public async ValueTask DisposeAsync()
    {
        _timeout.Dispose();
        await _connection.DisposeAsync();
    }
}

/// <summary>A session-level failure (greeting, EHLO, connection loss) with the reply that explains it.</summary>
public sealed class SmtpSessionException(SmtpReply reply) : Exception(reply.ToString())
{
    public SmtpReply Reply { get; } = reply;
}
