using System.Text;
using NativeRelay.Message;
using NativeRelay.Smtp;
using NativeRelay.Spool;

namespace NativeRelay.Local;

/// <summary>
/// The local delivery agent: expands each recipient through the aliases and the catch-all, then
/// writes one Maildir file per mailbox (with "Return-Path:" and "Delivered-To:" on top), or hands
/// the message to the domain's LMTP server (one transaction per server, one reply per recipient),
/// or passes addresses outside the local domains to the <see cref="ILocalForwarder"/>. The
/// results are folded back onto the envelope recipients: any 4xx makes the recipient wait and be
/// tried again (at least once, never lost), else any 2xx delivers it, else it fails.
/// </summary>
public sealed class LocalDeliveryAgent : ILocalDeliveryAgent
{
    private readonly LocalRecipientResolver _resolver;
    private readonly MaildirWriter _maildir;
    private readonly string _hostname;
    private readonly TimeSpan _connectTimeout;
    private readonly TimeSpan _replyTimeout;
    private readonly ILocalForwarder? _forwarder;

    public LocalDeliveryAgent(LocalRecipientResolver resolver, string hostname, TimeSpan connectTimeout, TimeSpan replyTimeout, ILocalForwarder? forwarder = null)
    {
        _resolver = resolver;
        _hostname = hostname;
        _maildir = new MaildirWriter(hostname);
        _connectTimeout = connectTimeout;
        _replyTimeout = replyTimeout;
        _forwarder = forwarder;
    }

    /// <summary>Validates and loads everything (aliases files included); a problem is a one-line ConfigException.</summary>
    public static LocalDeliveryAgent Create(LocalDeliverySettings settings, string hostname, TimeSpan connectTimeout, TimeSpan replyTimeout, ILocalForwarder? forwarder = null) =>
        new(LocalRecipientResolver.Load(settings), hostname, connectTimeout, replyTimeout, forwarder);

    /// <summary>The same agent with other aliases (a reload of the aliases files).</summary>
    public LocalDeliveryAgent WithResolver(LocalRecipientResolver resolver) =>
        new(resolver, _hostname, _connectTimeout, _replyTimeout, _forwarder);

    public LocalDeliverySettings Settings => _resolver.Settings;

    public LocalRecipientResolver Resolver => _resolver;

    public bool IsLocal(ReadOnlySpan<byte> domain) => _resolver.Settings.IsLocal(domain);

    public async Task<LocalResult[]> DeliverAsync(Envelope envelope, MessageBuffer body, IReadOnlyList<int> recipientIndexes, CancellationToken cancel = default)
    {
        var delivered = DeliveredToValues(body);
        // One outcome per final address: a mailbox reached through two recipients gets one copy.
        var outcomes = new Dictionary<string, SmtpReply>(StringComparer.Ordinal);
        var resolutions = new Resolution[recipientIndexes.Count];
        var lmtp = new Dictionary<MailEndpoint, List<string>>();
        var remote = new List<string>();
        var maildir = new List<FinalTarget>();

        for (int k = 0; k < recipientIndexes.Count; k++)
        {
            var address = LocalAddress.Normalize(envelope.Recipients[recipientIndexes[k]]);
            var resolution = _resolver.Resolve(address);
            resolutions[k] = resolution;
            if (resolution.Refusal is not null)
                continue;
            if (delivered.Contains(address))
            {
                // Already delivered here once under this name: the message came back (RFC 5321 6.3).
                resolution.Refusal = SmtpReply.Local(554, $"5.4.6 mail forwarding loop for <{address}> (Delivered-To: already present)");
                continue;
            }
            foreach (var target in resolution.Targets)
            {
                if (outcomes.ContainsKey(target.Address))
                    continue;
                if (delivered.Contains(target.Address))
                {
                    outcomes[target.Address] = SmtpReply.Local(554, $"5.4.6 mail forwarding loop for <{target.Address}> (Delivered-To: already present)");
                    continue;
                }
                outcomes[target.Address] = default; // to be filled
                if (!target.IsLocal)
                    remote.Add(target.Address);
                else if (target.Domain!.Transport == LocalTransport.Lmtp)
                {
                    if (!lmtp.TryGetValue(target.Domain.Lmtp!, out var list))
                        lmtp[target.Domain.Lmtp!] = list = [];
                    list.Add(target.Address);
                }
                else
                    maildir.Add(target);
            }
        }

        if (maildir.Count > 0)
        {
            // File writes and fsyncs block: keep them off the caller's thread (a delivery loop).
            var written = await Task.Run(() => maildir.Select(t => DeliverToMaildir(envelope, body, t)).ToArray(), cancel).ConfigureAwait(false);
            for (int i = 0; i < maildir.Count; i++)
                outcomes[maildir[i].Address] = written[i];
        }

        foreach (var (endpoint, recipients) in lmtp)
        {
            var replies = await DeliverLmtpAsync(endpoint, envelope, body, recipients, cancel).ConfigureAwait(false);
            for (int i = 0; i < recipients.Count; i++)
                outcomes[recipients[i]] = replies[i];
        }

        if (remote.Count > 0)
        {
            // Forwarded mail carries the alias it was addressed to, so a loop back here is seen.
            var forwardedFor = new List<string>();
            for (int k = 0; k < recipientIndexes.Count; k++)
                if (resolutions[k].Refusal is null && resolutions[k].Targets.Any(t => !t.IsLocal))
                    forwardedFor.Add(LocalAddress.Normalize(envelope.Recipients[recipientIndexes[k]]));
            SmtpReply reply;
            if (_forwarder is null)
                reply = SmtpReply.Local(550, "5.7.1 alias points outside the local domains and forwarding is not enabled");
            else
            {
                var prefix = new StringBuilder();
                foreach (var a in forwardedFor)
                    prefix.Append("Delivered-To: ").Append(a).Append("\r\n");
                try
                {
                    reply = await _forwarder.ForwardAsync(envelope.Sender, remote, Encoding.UTF8.GetBytes(prefix.ToString()), body,
                        (envelope.Flags & EnvelopeFlags.EightBitMime) != 0, cancel).ConfigureAwait(false);
                }
                catch (MailProtocolException e)
                {
                    reply = e.Reply.IsPositive ? SmtpReply.Local(451, "4.4.2 forwarding failed") : e.Reply;
                }
            }
            foreach (var r in remote)
                outcomes[r] = reply;
        }

        var results = new LocalResult[recipientIndexes.Count];
        for (int k = 0; k < recipientIndexes.Count; k++)
            results[k] = Fold(recipientIndexes[k], envelope, resolutions[k], outcomes);
        return results;
    }

    private SmtpReply DeliverToMaildir(Envelope envelope, MessageBuffer body, FinalTarget target)
    {
        var maildir = Path.Combine(target.Domain!.MaildirRoot!, target.Mailbox!);
        try
        {
            var file = _maildir.Deliver(maildir, TraceHeaders(envelope.Sender, target.Address), body);
            return SmtpReply.Local(250, $"2.0.0 delivered to maildir {file}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Disk full, permissions, a missing mount: the operator can fix it, so the mail waits.
            return SmtpReply.Local(451, $"4.3.0 cannot write to maildir {maildir}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
    }

    private async Task<SmtpReply[]> DeliverLmtpAsync(MailEndpoint endpoint, Envelope envelope, MessageBuffer body, List<string> recipients, CancellationToken cancel)
    {
        var partial = new SmtpReply?[recipients.Count];
        try
        {
            await using var client = await LmtpClient.ConnectAsync(endpoint, _hostname, _connectTimeout, _replyTimeout, cancel).ConfigureAwait(false);
            var replies = await client.SendAsync(envelope.Sender, recipients, body, (envelope.Flags & EnvelopeFlags.EightBitMime) != 0, partial, cancel).ConfigureAwait(false);
            await client.QuitAsync().ConfigureAwait(false);
            for (int i = 0; i < replies.Length; i++)
                if (replies[i].Text is { } text && replies[i].IsPositive)
                    replies[i] = SmtpReply.Local(replies[i].Code, $"{text} (lmtp {endpoint})");
            return replies;
        }
        catch (MailProtocolException e)
        {
            // Replies read before the failure stand; the rest wait for another attempt.
            var reply = e.Reply.IsPositive ? SmtpReply.Local(451, "4.4.2 LMTP connection lost") : e.Reply;
            if (!reply.IsTransient)
                reply = SmtpReply.Local(451, $"4.4.0 {reply}");
            var results = new SmtpReply[recipients.Count];
            for (int i = 0; i < results.Length; i++)
                results[i] = partial[i] ?? reply;
            return results;
        }
    }

    private static LocalResult Fold(int index, Envelope envelope, Resolution resolution, Dictionary<string, SmtpReply> outcomes)
    {
        if (resolution.Refusal is { } refusal)
            return new LocalResult(index, refusal, refusal.Text ?? "refused");
        SmtpReply? transient = null, positive = null, permanent = null;
        var detail = new StringBuilder();
        foreach (var t in resolution.Targets)
        {
            var r = outcomes[t.Address];
            Note(detail, t.Address, r);
            if (r.IsPositive) positive ??= r;
            else if (r.IsTransient) transient ??= r;
            else permanent ??= r;
        }
        foreach (var (address, r) in resolution.Failures)
        {
            Note(detail, address, r);
            permanent ??= r;
        }
        var reply = transient ?? positive ?? permanent ?? SmtpReply.Local(550, $"5.1.1 <{envelope.RecipientText(index)}>: nowhere to deliver");
        if (resolution.Targets.Count + resolution.Failures.Count == 1)
            return new LocalResult(index, reply, reply.Text ?? reply.Code.ToString());
        return new LocalResult(index, reply, detail.ToString());
    }

    private static void Note(StringBuilder detail, string address, SmtpReply reply)
    {
        if (detail.Length > 0)
            detail.Append("; ");
        detail.Append('<').Append(address).Append("> ").Append(reply.ToString());
    }

    /// <summary>"Return-Path: &lt;sender&gt;" and "Delivered-To: recipient", as final delivery adds them (RFC 5321 4.4).</summary>
    public static byte[] TraceHeaders(ReadOnlySpan<byte> sender, string recipient)
    {
        var bytes = new byte[14 + sender.Length + 3 + 14 + Encoding.UTF8.GetByteCount(recipient) + 2];
        int n = 0;
        n += Copy("Return-Path: <"u8, bytes, n);
        n += Copy(sender, bytes, n);
        n += Copy(">\r\n"u8, bytes, n);
        n += Copy("Delivered-To: "u8, bytes, n);
        n += Encoding.UTF8.GetBytes(recipient, bytes.AsSpan(n));
        n += Copy("\r\n"u8, bytes, n);
        return bytes;

        static int Copy(ReadOnlySpan<byte> s, byte[] d, int at)
        {
            s.CopyTo(d.AsSpan(at));
            return s.Length;
        }
    }

    /// <summary>The addresses of the message's "Delivered-To:" fields, lower-case.</summary>
    public static HashSet<string> DeliveredToValues(MessageBuffer body)
    {
        var set = new HashSet<string>(StringComparer.Ordinal);
        var content = body.FirstBlockContent();
        var scanner = new HeaderScanner(content);
        while (scanner.TryReadNext(out var field))
        {
            if (!field.NameEquals(content, "Delivered-To"u8))
                continue;
            var value = Encoding.UTF8.GetString(field.RawValue(content)).Replace("\r\n", "").Trim().Trim('<', '>').Trim();
            if (value.Length > 0)
                set.Add(value.ToLowerInvariant());
        }
        return set;
    }
}
