using System.Buffers;
using System.Buffers.Text;
using NativeRelay.Message;
using NativeRelay.Smtp;

namespace NativeRelay.Local;

/// <summary>
/// An LMTP client (RFC 2033) over TCP or a Unix domain socket: LHLO, then per transaction MAIL,
/// one RCPT per recipient and DATA (in one write when the server offers PIPELINING), the body
/// dot-stuffed straight from the message's pooled blocks, and then one reply per accepted
/// recipient: LMTP's point is that each recipient's delivery succeeds or fails on its own.
/// </summary>
public sealed class LmtpClient : IAsyncDisposable
{
    private readonly MailConnection _connection;

    private LmtpClient(MailConnection connection) => _connection = connection;

    public MailEndpoint Endpoint { get; private init; } = null!;

    public bool Pipelining => _connection.Offers("PIPELINING");

    public bool IsUsable => !_connection.Broken;

    /// <summary>Connects, reads the 220 greeting and says LHLO. Failures throw <see cref="MailProtocolException"/> (always 4xx: the mail waits).</summary>
    public static async Task<LmtpClient> ConnectAsync(MailEndpoint endpoint, string lhloName, TimeSpan connectTimeout, TimeSpan replyTimeout, CancellationToken cancel = default)
    {
        var connection = await MailConnection.ConnectAsync(endpoint, connectTimeout, replyTimeout, cancel).ConfigureAwait(false);
        var client = new LmtpClient(connection) { Endpoint = endpoint };
        try
        {
            var greeting = await connection.ReadReplyAsync(cancel: cancel).ConfigureAwait(false);
            if (greeting.Code != 220)
                throw new MailProtocolException(SmtpReply.Local(421, $"4.4.0 LMTP server {endpoint} greeted with {greeting}"));
            connection.WriteLine("LHLO " + lhloName);
            await connection.FlushAsync(cancel).ConfigureAwait(false);
            var hello = await connection.ReadReplyAsync(capabilities: true, cancel).ConfigureAwait(false);
            if (hello.Code != 250)
                throw new MailProtocolException(SmtpReply.Local(421, $"4.4.0 LMTP server {endpoint} refused LHLO: {hello}"));
            return client;
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// One transaction. Returns one reply per recipient, in order: the RCPT refusal, or the
    /// server's own reply after the data for that recipient. A connection lost part way through
    /// throws <see cref="MailProtocolException"/>; the replies read before it are left in
    /// <paramref name="partial"/> (null where none came), so no answered recipient is tried again.
    /// </summary>
    public async Task<SmtpReply[]> SendAsync(ReadOnlyMemory<byte> sender, IReadOnlyList<string> recipients, MessageBuffer body,
        bool eightBit, SmtpReply?[]? partial = null, CancellationToken cancel = default)
    {
        var c = _connection;
        var results = partial ?? new SmtpReply?[recipients.Count];
        long maxSize = c.OfferedMaxSize();
        if (maxSize > 0 && body.ContentLength > maxSize)
            return Fill(results, SmtpReply.Local(552, $"5.3.4 message size {body.ContentLength} exceeds the LMTP server's limit {maxSize}"));

        WriteMail(sender.Span, body.ContentLength, eightBit);
        bool pipelining = Pipelining;
        SmtpReply mail;
        if (pipelining)
        {
            foreach (var r in recipients)
                c.WriteLine($"RCPT TO:<{r}>");
            c.WriteLine("DATA");
        }
        await c.FlushAsync(cancel).ConfigureAwait(false);
        mail = await c.ReadReplyAsync(cancel: cancel).ConfigureAwait(false);
        if (!pipelining && !mail.IsPositive)
        {
            await ResetAsync(cancel).ConfigureAwait(false);
            return Fill(results, mail);
        }

        var accepted = new List<int>(recipients.Count);
        var rcptReplies = new SmtpReply[recipients.Count];
        for (int i = 0; i < recipients.Count; i++)
        {
            if (!pipelining)
            {
                c.WriteLine($"RCPT TO:<{recipients[i]}>");
                await c.FlushAsync(cancel).ConfigureAwait(false);
            }
            rcptReplies[i] = await c.ReadReplyAsync(cancel: cancel).ConfigureAwait(false);
            if (rcptReplies[i].IsPositive && mail.IsPositive)
                accepted.Add(i);
        }
        if (!pipelining && accepted.Count > 0)
        {
            c.WriteLine("DATA");
            await c.FlushAsync(cancel).ConfigureAwait(false);
        }
        SmtpReply data = pipelining || accepted.Count > 0 ? await c.ReadReplyAsync(cancel: cancel).ConfigureAwait(false) : default;

        if (!mail.IsPositive)
        {
            if (data.Code == 354)
                await AbortDataAsync(cancel).ConfigureAwait(false);
            return Fill(results, mail);
        }
        for (int i = 0; i < recipients.Count; i++)
            if (!rcptReplies[i].IsPositive)
                results[i] = rcptReplies[i];
        if (accepted.Count == 0)
        {
            if (data.Code == 354)
                await AbortDataAsync(cancel).ConfigureAwait(false);
            else if (!pipelining)
                await ResetAsync(cancel).ConfigureAwait(false);
            return Fill(results, default);
        }
        if (data.Code != 354)
        {
            foreach (int i in accepted)
                results[i] = data;
            return Fill(results, default);
        }

        var output = c.Output;
        var state = DotStuffer.NewState();
        foreach (var segment in body.GetSegments())
        {
            DotStuffer.Write(segment.Span, output, ref state);
            if (output.UnflushedBytes >= 256 * 1024)
                await c.FlushAsync(cancel).ConfigureAwait(false);
        }
        DotStuffer.WriteTerminator(output, ref state);
        await c.FlushAsync(cancel).ConfigureAwait(false);
        // RFC 2033 4.2: one reply for every recipient that was accepted, in RCPT order.
        foreach (int i in accepted)
            results[i] = await c.ReadReplyAsync(cancel: cancel).ConfigureAwait(false);
        return Fill(results, default);
    }

    // An empty message ends a DATA we should not have been in; the server's reply to it is ignored.
    private async Task AbortDataAsync(CancellationToken cancel)
    {
        _connection.WriteLine(".");
        await _connection.FlushAsync(cancel).ConfigureAwait(false);
        await _connection.ReadReplyAsync(cancel: cancel).ConfigureAwait(false);
        await ResetAsync(cancel).ConfigureAwait(false);
    }

    public async Task ResetAsync(CancellationToken cancel = default)
    {
        _connection.WriteLine("RSET");
        await _connection.FlushAsync(cancel).ConfigureAwait(false);
        await _connection.ReadReplyAsync(cancel: cancel).ConfigureAwait(false);
    }

    private static SmtpReply[] Fill(SmtpReply?[] results, SmtpReply fallback)
    {
        var done = new SmtpReply[results.Length];
        for (int i = 0; i < results.Length; i++)
        {
            results[i] ??= fallback.Code == 0 ? SmtpReply.Local(451, "4.4.0 no reply from the LMTP server") : fallback;
            done[i] = results[i]!.Value;
        }
        return done;
    }

    private void WriteMail(ReadOnlySpan<byte> sender, long size, bool eightBit)
    {
        var output = _connection.Output;
        output.Write("MAIL FROM:<"u8);
        output.Write(sender);
        output.Write(">"u8);
        if (_connection.Offers("SIZE"))
        {
            output.Write(" SIZE="u8);
            var span = output.GetSpan(20);
            Utf8Formatter.TryFormat(size, span, out int n);
            output.Advance(n);
        }
        if (eightBit && _connection.Offers("8BITMIME"))
            output.Write(" BODY=8BITMIME"u8);
        output.Write("\r\n"u8);
    }

    public Task QuitAsync() => _connection.QuitAsync();

    public ValueTask DisposeAsync() => _connection.DisposeAsync();
}
