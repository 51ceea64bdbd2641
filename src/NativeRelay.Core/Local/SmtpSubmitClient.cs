using NativeRelay.Message;
using NativeRelay.Smtp;

namespace NativeRelay.Local;

/// <summary>What happened to a submission: queued for every recipient, or not at all, with the reply that says why.</summary>
public sealed record SubmitResult(bool Queued, SmtpReply Reply, IReadOnlyList<(string Recipient, SmtpReply Reply)> Refused);

/// <summary>
/// Hands a message to an SMTP server (the relay's own listener) in one all-or-nothing
/// transaction: if any recipient is refused the transaction is reset, so the caller can report
/// the failure and try again later without sending a copy twice. Used by <c>nativerelay sendmail</c>
/// and by <see cref="SmtpResubmitForwarder"/>.
/// </summary>
public static class SmtpSubmitClient
{
    public static async Task<SubmitResult> SubmitAsync(MailEndpoint server, string heloName, ReadOnlyMemory<byte> sender,
        IReadOnlyList<string> recipients, ReadOnlyMemory<byte> prefix, MessageBuffer body, bool eightBit,
        TimeSpan connectTimeout, TimeSpan replyTimeout, CancellationToken cancel = default)
    {
        await using var c = await MailConnection.ConnectAsync(server, connectTimeout, replyTimeout, cancel).ConfigureAwait(false);
        var greeting = await c.ReadReplyAsync(cancel: cancel).ConfigureAwait(false);
        if (greeting.Code != 220)
            return Fail(greeting);
        c.WriteLine("EHLO " + heloName);
        await c.FlushAsync(cancel).ConfigureAwait(false);
        var hello = await c.ReadReplyAsync(capabilities: true, cancel).ConfigureAwait(false);
        if (!hello.IsPositive)
        {
            c.WriteLine("HELO " + heloName);
            await c.FlushAsync(cancel).ConfigureAwait(false);
            hello = await c.ReadReplyAsync(cancel: cancel).ConfigureAwait(false);
            if (!hello.IsPositive)
                return Fail(hello);
        }

        long size = prefix.Length + body.ContentLength;
        long max = c.OfferedMaxSize();
        if (max > 0 && size > max)
            return Fail(SmtpReply.Local(552, $"5.3.4 message size {size} exceeds the server's limit {max}"));
        var mail = "MAIL FROM:<" + System.Text.Encoding.UTF8.GetString(sender.Span) + ">";
        if (c.Offers("SIZE"))
            mail += " SIZE=" + size;
        if (eightBit && c.Offers("8BITMIME"))
            mail += " BODY=8BITMIME";
        c.WriteLine(mail);
        await c.FlushAsync(cancel).ConfigureAwait(false);
        var mailReply = await c.ReadReplyAsync(cancel: cancel).ConfigureAwait(false);
        if (!mailReply.IsPositive)
            return await ResetAsync(c, mailReply, []).ConfigureAwait(false);

        var refused = new List<(string, SmtpReply)>();
        foreach (var r in recipients)
        {
            c.WriteLine("RCPT TO:<" + r + ">");
            await c.FlushAsync(cancel).ConfigureAwait(false);
            var reply = await c.ReadReplyAsync(cancel: cancel).ConfigureAwait(false);
            if (!reply.IsPositive)
                refused.Add((r, reply));
        }
        if (refused.Count > 0)
        {
            // Worst first: one temporary refusal makes the whole submission worth retrying.
            var cause = refused.FirstOrDefault(x => x.Item2.IsTransient).Item2;
            return await ResetAsync(c, cause.Code != 0 ? cause : refused[0].Item2, refused).ConfigureAwait(false);
        }

        c.WriteLine("DATA");
        await c.FlushAsync(cancel).ConfigureAwait(false);
        var data = await c.ReadReplyAsync(cancel: cancel).ConfigureAwait(false);
        if (data.Code != 354)
            return await ResetAsync(c, data, []).ConfigureAwait(false);
        var state = DotStuffer.NewState();
        DotStuffer.Write(prefix.Span, c.Output, ref state);
        foreach (var segment in body.GetSegments())
        {
            DotStuffer.Write(segment.Span, c.Output, ref state);
            if (c.Output.UnflushedBytes >= 256 * 1024)
                await c.FlushAsync(cancel).ConfigureAwait(false);
        }
        DotStuffer.WriteTerminator(c.Output, ref state);
        await c.FlushAsync(cancel).ConfigureAwait(false);
        var final = await c.ReadReplyAsync(cancel: cancel).ConfigureAwait(false);
        await c.QuitAsync().ConfigureAwait(false);
        return new SubmitResult(final.IsPositive, final, []);
    }

    private static SubmitResult Fail(SmtpReply reply) => new(false, reply, []);

    private static async Task<SubmitResult> ResetAsync(MailConnection c, SmtpReply cause, List<(string, SmtpReply)> refused)
    {
        try
        {
            c.WriteLine("RSET");
            await c.FlushAsync().ConfigureAwait(false);
            await c.ReadReplyAsync().ConfigureAwait(false);
            await c.QuitAsync().ConfigureAwait(false);
        }
        catch (MailProtocolException)
        {
        }
        return new SubmitResult(false, cause, refused);
    }
}

/// <summary>
/// An <see cref="ILocalForwarder"/> that submits forwarded mail to an SMTP server, normally the
/// relay's own loopback listener, so it is queued and routed like any other message.
/// </summary>
public sealed class SmtpResubmitForwarder(MailEndpoint server, string heloName, TimeSpan connectTimeout, TimeSpan replyTimeout) : ILocalForwarder
{
    public async Task<SmtpReply> ForwardAsync(ReadOnlyMemory<byte> sender, IReadOnlyList<string> recipients, ReadOnlyMemory<byte> prefix,
        MessageBuffer body, bool eightBit, CancellationToken cancel)
    {
        try
        {
            var result = await SmtpSubmitClient.SubmitAsync(server, heloName, sender, recipients, prefix, body, eightBit, connectTimeout, replyTimeout, cancel).ConfigureAwait(false);
            if (result.Queued)
                return SmtpReply.Local(250, $"2.0.0 forwarded through {server}: {result.Reply}");
            return result.Reply;
        }
        catch (MailProtocolException e)
        {
            return e.Reply;
        }
    }
}
