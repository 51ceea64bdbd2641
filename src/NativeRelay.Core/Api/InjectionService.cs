using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using MimeKit;
using NativeRelay.Message;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Api;

/// <summary>
/// <c>POST /api/v1/messages</c>: the request is read and checked as a whole first (a bad request
/// changes nothing); then each recipient's copy is built (substitutions, MIME, the unsubscribe
/// headers, a Received header naming the HTTP injection and the token), signed, appended to the
/// spool, and after the one commit that covers them all the answer lists every recipient's queue
/// id or why it was refused.
/// </summary>
public sealed class InjectionService
{
    private const int MaxTags = 50;
    private const int MaxTagLength = 100;
    private const int MaxMetadataBytes = 16 * 1024;
    private const int MaxIdempotencyKey = 200;
    private static readonly TimeSpan MaxSchedule = TimeSpan.FromDays(365);

    // Fields the relay writes itself; a caller setting them would make two (or a forged one).
    private static readonly HashSet<string> ReservedHeaders = new(StringComparer.OrdinalIgnoreCase)
    {
        "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type", "Content-Transfer-Encoding",
        "Content-Disposition", "Received", "DKIM-Signature", "Bcc", "Return-Path", "List-Unsubscribe", "List-Unsubscribe-Post",
    };

    private readonly ApiHost _host;

    public InjectionService(ApiHost host) => _host = host;

    /// <summary>A status and a JSON body.</summary>
    public readonly record struct Answer(int Status, byte[] Body, bool Replayed = false);

    public async Task<Answer> InjectAsync(ApiToken token, ApiConfiguration config, byte[] body, string client, bool tls)
    {
        var request = Parse(body, out var parseFailure);
        if (request is null)
            return parseFailure;

        var now = DateTimeOffset.UtcNow;
        var checkedRequest = Check(request, token, config, now, _host.PoolExists, _host.MaxMessageSize, out var failure);
        if (checkedRequest is null)
            return failure;

        if (request.IdempotencyKey is { } key)
        {
            var kept = await _host.Idempotency.BeginAsync(token.Name, key, now).ConfigureAwait(false);
            if (kept is not null)
                return new Answer(kept.Status, Encoding.UTF8.GetBytes(kept.Body), Replayed: true);
            Answer answer = default;
            try
            {
                answer = await AcceptAsync(checkedRequest, token, config, client, tls, now).ConfigureAwait(false);
            }
            finally
            {
                // Server errors are not kept: the client may retry them with the same key.
                await _host.Idempotency.CompleteAsync(token.Name, key, answer.Status is >= 200 and < 500
                    ? new IdempotencyRecord { Token = token.Name, Key = key, AtUnixMs = now.ToUnixTimeMilliseconds(), Status = answer.Status, Body = Encoding.UTF8.GetString(answer.Body) }
                    : null);
            }
            return answer;
        }
        return await AcceptAsync(checkedRequest, token, config, client, tls, now).ConfigureAwait(false);
    }

    /// <summary>
    /// The body as a request, or the 400 that says where it is wrong: not JSON at all (line and
    /// byte), a field of the wrong type, or a field this API does not have. The messages are the
    /// relay's own: the native binary carries resource keys instead of the runtime's texts.
    /// </summary>
    private static InjectionRequest? Parse(byte[] body, out Answer failure)
    {
        failure = default;
        try
        {
            using var document = JsonDocument.Parse(body);
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                failure = Error(400, $"the body is a JSON {document.RootElement.ValueKind.ToString().ToLowerInvariant()}; an object was expected", "$");
                return null;
            }
        }
        catch (JsonException e)
        {
            failure = Error(400, $"the body is not JSON (line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1})");
            return null;
        }
        try
        {
            return JsonSerializer.Deserialize(body, ApiJsonContext.Default.InjectionRequest);
        }
        catch (JsonException e)
        {
            var path = e.Path ?? "$";
            bool unknown = e.Message.Contains("Unmapped", StringComparison.Ordinal) || e.Message.Contains("could not be mapped", StringComparison.Ordinal);
            failure = unknown
                ? Error(400, $"unknown field {path} (the fields are in docs/CONFIG.md, HTTP API)", path)
                : Error(400, $"wrong type at {path}: expected {ExpectedType(path)}", path);
            return null;
        }
    }

    private static string ExpectedType(string path)
    {
        int dot = path.LastIndexOf('.');
        var name = (dot >= 0 ? path[(dot + 1)..] : path).Split('[')[0].Split('\'')[0];
        bool element = path.EndsWith(']');
        return name switch
        {
            "recipients" => element ? "an object with email, name, substitutions" : "an array of recipient objects",
            "attachments" => element ? "an object with filename, content_type, data" : "an array of attachment objects",
            "tags" => element ? "a string" : "an array of strings",
            "headers" => "an object of string values",
            "substitutions" => "an object of string values",
            "metadata" => "a JSON object",
            _ => "a string",
        };
    }

    /// <summary>A request that passed the checks that refuse it as a whole.</summary>
    private sealed record Checked(
        InjectionRequest Request,
        string From,
        string FromDomain,
        string Pool,
        MessageComposer.Parts? Parts,
        byte[]? Raw,
        long NotBeforeUnixMs,
        byte[] Metadata,
        InjectionMetadata MetadataObject);

    private static Checked? Check(InjectionRequest r, ApiToken token, ApiConfiguration config, DateTimeOffset now,
        Func<string, bool>? poolExists, long maxMessageSize, out Answer failure)
    {
        failure = default;
        if (string.IsNullOrEmpty(r.From))
            return Fail(out failure, 422, "from is required: the envelope sender (news@example.com)", "$.from");
        if (!TryCheckAddress(r.From, out var fromDomain, out var why))
            return Fail(out failure, 422, $"from: {why}", "$.from");
        if (!token.MaySendAs(fromDomain))
            return Fail(out failure, 403, $"token '{token.Name}' may not send as {fromDomain}", "$.from");
        var pool = string.IsNullOrEmpty(r.Pool) ? "default" : r.Pool;
        if (pool.Length > 64 || pool.Any(c => !(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')))
            return Fail(out failure, 422, "pool: letters, digits, '-', '_' and '.', at most 64", "$.pool");
        if (!token.MayUsePool(pool))
            return Fail(out failure, 403, $"token '{token.Name}' may not use pool '{pool}'", "$.pool");
        if (poolExists is { } exists && !exists(pool))
            return Fail(out failure, 422, $"pool '{pool}' is not configured (traffic.pools)", "$.pool");

        if (r.Recipients is null || r.Recipients.Count == 0)
            return Fail(out failure, 422, "recipients is required and may not be empty", "$.recipients");
        if (r.Recipients.Count > config.Settings.MaxRecipients)
            return Fail(out failure, 422, $"{r.Recipients.Count} recipients; at most {config.Settings.MaxRecipients} per request (http.maxRecipients)", "$.recipients");
        for (int i = 0; i < r.Recipients.Count; i++)
        {
            if (r.Recipients[i] is null)
                return Fail(out failure, 422, "a recipient is null; an object with email was expected", $"$.recipients[{i}]");
            if (r.Recipients[i].Name is { } n && HasLineBreak(n))
                return Fail(out failure, 422, "a display name may not contain CR, LF or NUL", $"$.recipients[{i}].name");
        }

        long notBefore = 0;
        if (r.DeliverAfter is { } after)
        {
            if (!DateTimeOffset.TryParse(after, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var when) || !after.Contains('T'))
                return Fail(out failure, 422, $"deliver_after: '{after}' is not an RFC 3339 time such as 2026-12-08T10:00:00Z", "$.deliver_after");
            if (when - now > MaxSchedule)
                return Fail(out failure, 422, "deliver_after: at most 365 days ahead", "$.deliver_after");
            notBefore = when > now ? when.ToUnixTimeMilliseconds() : 0;
        }
        if (r.IdempotencyKey is { } key && (key.Length is 0 or > MaxIdempotencyKey || HasLineBreak(key)))
            return Fail(out failure, 422, $"idempotency_key: 1 to {MaxIdempotencyKey} characters, no line breaks", "$.idempotency_key");
        if (r.Tags is { } tags && (tags.Count > MaxTags || tags.Any(t => t is null || t.Length > MaxTagLength)))
            return Fail(out failure, 422, $"tags: at most {MaxTags} strings of at most {MaxTagLength} characters", "$.tags");
        if (r.Metadata is { } meta && meta.ValueKind != JsonValueKind.Object && meta.ValueKind != JsonValueKind.Null)
            return Fail(out failure, 422, "metadata must be a JSON object", "$.metadata");

        MessageComposer.Parts? parts = null;
        byte[]? raw = null;
        if (r.Raw is not null)
        {
            if (r.Subject is not null || r.Text is not null || r.Html is not null || r.Headers is not null || r.Attachments is not null)
                return Fail(out failure, 422, "raw is a whole message: it cannot be combined with subject, text, html, headers or attachments", "$.raw");
            raw = CheckRaw(r.Raw, token, maxMessageSize, out failure);
            if (raw is null)
                return null;
        }
        else
        {
            parts = CheckParts(r, out failure);
            if (parts is null)
                return null;
        }

        var metadataObject = new InjectionMetadata
        {
            Token = token.Name,
            Pool = pool,
            Tags = r.Tags,
            Metadata = r.Metadata is { ValueKind: JsonValueKind.Object } m ? m : null,
        };
        var metadata = JsonSerializer.SerializeToUtf8Bytes(metadataObject, ApiJsonContext.Default.InjectionMetadata);
        if (metadata.Length > MaxMetadataBytes)
            return Fail(out failure, 422, $"tags and metadata together: at most {MaxMetadataBytes} bytes of JSON", "$.metadata");
        return new Checked(r, r.From, fromDomain, pool, parts, raw, notBefore, metadata, metadataObject);
    }

    private static MessageComposer.Parts? CheckParts(InjectionRequest r, out Answer failure)
    {
        failure = default;
        if (r.Text is null && r.Html is null)
            return FailParts(out failure, 422, "the message needs text or html (or raw: a whole RFC 5322 message)", "$.text");
        if (r.Subject is { } subject && HasLineBreak(subject))
            return FailParts(out failure, 422, "subject may not contain CR, LF or NUL (header injection)", "$.subject");
        var headers = new List<KeyValuePair<string, string>>();
        if (r.Headers is not null)
        {
            foreach (var (name, value) in r.Headers)
            {
                var field = $"$.headers['{name}']";
                if (name.Length is 0 or > 76 || name.Any(c => c is < '!' or > '~' or ':'))
                    return FailParts(out failure, 422, "a header name is printable ASCII without ':' or spaces, at most 76 characters", field);
                if (value is null || HasLineBreak(value) || value.Length > 4000)
                    return FailParts(out failure, 422, $"header {name}: the value may not contain CR, LF or NUL (header injection) and is at most 4000 characters", field);
                if (ReservedHeaders.Contains(name))
                    return FailParts(out failure, 422, $"header {name} is written by the relay (use from, recipients, subject, text, html)", field);
                headers.Add(new(name, value));
            }
        }
        var attachments = new List<MessageComposer.Attachment>();
        if (r.Attachments is not null)
        {
            for (int i = 0; i < r.Attachments.Count; i++)
            {
                var a = r.Attachments[i];
                var field = $"$.attachments[{i}]";
                if (a is null || string.IsNullOrEmpty(a.Filename) || HasLineBreak(a.Filename))
                    return FailParts(out failure, 422, "an attachment needs a filename without line breaks", field + ".filename");
                if (!ContentType.TryParse(a.ContentType ?? "application/octet-stream", out var type) || HasLineBreak(a.ContentType ?? ""))
                    return FailParts(out failure, 422, $"content_type '{a.ContentType}' is not a MIME type such as application/pdf", field + ".content_type");
                byte[] data;
                try
                {
                    data = Convert.FromBase64String(a.Data ?? "");
                }
                catch (FormatException)
                {
                    return FailParts(out failure, 422, "data is not base64", field + ".data");
                }
                attachments.Add(new MessageComposer.Attachment(a.Filename, type, data));
            }
        }
        return new MessageComposer.Parts(new MailboxAddress("", r.From!), r.Subject, r.Text, r.Html, headers, attachments);
    }

    /// <summary>A raw message: CRLF line ends, a header section with one From whose domain the token may use, no line over 998.</summary>
    private static byte[]? CheckRaw(string raw, ApiToken token, long maxMessageSize, out Answer failure)
    {
        failure = default;
        var text = raw.ReplaceLineEndings("\r\n");
        if (!text.EndsWith("\r\n", StringComparison.Ordinal))
            text += "\r\n";
        var bytes = Encoding.UTF8.GetBytes(text);
        if (bytes.Length > maxMessageSize)
            return FailRaw(out failure, 413, $"raw: {bytes.Length} bytes; limits.maxMessageSize is {maxMessageSize}");
        int lineStart = 0;
        for (int i = 0; i < bytes.Length; i++)
        {
            if (bytes[i] == 0)
                return FailRaw(out failure, 422, "raw: a NUL byte");
            if (bytes[i] == '\n')
            {
                if (i - 1 - lineStart > 998)
                    return FailRaw(out failure, 422, $"raw: a line is longer than 998 octets (RFC 5322 2.1.1), at byte {lineStart}");
                lineStart = i + 1;
            }
        }
        var scanner = new HeaderScanner(bytes);
        int fields = 0;
        while (scanner.TryReadNext(out _))
            fields++;
        if (fields == 0 || scanner.Status != HeaderScanStatus.EndOfHeaders)
            return FailRaw(out failure, 422, "raw: not an RFC 5322 message (header fields, an empty line, the body)");
        var from = NativeRelay.MailAuth.Dmarc.FromDomain.Find(bytes);
        if (from.Domain is null)
            return FailRaw(out failure, 422, $"raw: {from.Problem}");
        if (!token.MaySendAs(from.Domain))
            return FailRaw(out failure, 403, $"token '{token.Name}' may not send as {from.Domain} (the From field of raw)");
        return bytes;
    }

    private async Task<Answer> AcceptAsync(Checked c, ApiToken token, ApiConfiguration config, string client, bool tls, DateTimeOffset now)
    {
        var response = new InjectionResponse();
        var recipients = c.Request.Recipients!;
        // Everything that can refuse a recipient is decided before the first append.
        var copies = new List<(string Email, byte[] Message, ulong Id)>(recipients.Count);
        var signer = _host.Signer();
        bool unsubscribe = config.Unsubscribe is not null && config.Unsubscribe.Settings.AppliesTo(c.Pool);
        byte[]? shared = null;
        foreach (var rcpt in recipients)
        {
            var email = rcpt.Email ?? "";
            if (!TryCheckAddress(email, out _, out var why))
            {
                response.Rejected.Add(new RejectedRecipient { Email = email, Error = $"invalid address: {why}" });
                continue;
            }
            // The message's pool counts: a pool-scoped entry refuses here, not only at delivery.
            if (_host.Unsubscribes.IsSuppressed(email, c.Pool == "default" ? null : c.Pool, c.FromDomain))
            {
                response.Rejected.Add(new RejectedRecipient { Email = email, Error = $"suppressed: {email} is on this relay's suppression list for mail from {c.FromDomain}" });
                continue;
            }
            ulong id = _host.Ids.Next();
            var message = ComposeFor(c, rcpt, email, MessageId(id), now, _host.MaxMessageSize, ref shared, out var refusal);
            if (message is null)
            {
                response.Rejected.Add(new RejectedRecipient { Email = email, Error = refusal! });
                continue;
            }
            copies.Add((email, message, id));
        }

        var spooled = new List<SpooledMessage>(copies.Count);
        try
        {
            foreach (var (email, mime, id) in copies)
            {
                var buffer = MessageBuffer.Rent();
                int front = Math.Min(MessageBuffer.MaxReserve, signer?.MaxHeaderLength ?? 0);
                buffer.Reserve(front);
                buffer.TrimReservedFront(front);
                buffer.Write(Encoding.ASCII.GetBytes(ReceivedField(client, token.Name, tls, id, email, now)));
                if (unsubscribe)
                    buffer.Write(Encoding.UTF8.GetBytes(config.Unsubscribe!.HeaderFields(email, c.FromDomain, c.Pool, now)));
                buffer.Write(mime);
                var signed = buffer;
                if (signer is not null)
                {
                    try
                    {
                        signed = await signer.SignAsync(buffer, Encoding.UTF8.GetBytes(c.From), null).ConfigureAwait(false);
                    }
                    catch (Exception e) when (e is not OutOfMemoryException)
                    {
                        _host.Log.Error($"{new QueueIdText(id)}: DKIM signing failed, sent unsigned: {ExceptionText.Of(e)}");
                    }
                }
                var envelope = new Envelope
                {
                    Sender = Encoding.UTF8.GetBytes(c.From),
                    Recipients = [Encoding.UTF8.GetBytes(email)],
                    ClientAddress = client,
                    HeloName = "http",
                    ArrivalUnixMs = now.ToUnixTimeMilliseconds(),
                    Flags = IsAscii(mime) ? EnvelopeFlags.None : EnvelopeFlags.EightBitMime,
                    NotBeforeUnixMs = c.NotBeforeUnixMs,
                    Metadata = c.Metadata,
                    // The egress pool traffic control sends it from (the default pool is stored as none).
                    Pool = c.Pool == "default" ? null : c.Pool,
                };
                try
                {
                    spooled.Add(await _host.Intake.AppendAsync(id, envelope, signed).ConfigureAwait(false));
                }
                catch (SpoolFullException e)
                {
                    signed.Release();
                    response.Rejected.Add(new RejectedRecipient { Email = email, Error = $"over a limit: {e.Message}; try again later" });
                }
                catch
                {
                    signed.Release(); // not in the spool: the buffer goes back to its pool; the copies before it are abandoned below
                    throw;
                }
            }
            if (spooled.Count > 0)
                await _host.Intake.WaitForCommitAsync(spooled.Max(s => s.Head)).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Not durable, so not acknowledged: nothing of this request is handed to delivery.
            foreach (var s in spooled)
            {
                _host.Intake.Abandon(s);
                s.Body.Release();
            }
            _host.Log.Error($"http: spool append failed, request from {client} (token {token.Name}) not accepted: {ExceptionText.Of(e)}");
            return Error(503, "the spool could not take the messages; nothing was queued, try again");
        }

        foreach (var s in spooled)
        {
            var email = Encoding.UTF8.GetString(s.Envelope.Recipients[0]);
            response.Accepted.Add(new AcceptedRecipient { Email = email, QueueId = QueueIdGenerator.ToString(s.Id) });
            RelayMetrics.MessagesReceived.Increment();
            RelayMetrics.BytesReceived.Add(s.Body.ContentLength);
            RelayMetrics.RecipientsReceived.Add(1);
            _host.Log.Info($"{new QueueIdText(s.Id)}: queued from={s.Envelope.SenderForLog} rcpts=1 size={s.Body.ContentLength} client={client} http token={token.Name}{(c.NotBeforeUnixMs == 0 ? "" : " deliver_after=")}{(c.NotBeforeUnixMs == 0 ? "" : c.Request.DeliverAfter)}");
            await _host.Intake.HandOverAsync(s).ConfigureAwait(false);
            _host.Events.Received(s.Id, c.From, email, c.MetadataObject);
        }
        int status = response.Accepted.Count > 0 ? 202 : 422;
        if (status == 422)
            response.Error = $"no recipient was accepted: {response.Rejected[0].Error}{(response.Rejected.Count > 1 ? $" (and {response.Rejected.Count - 1} more)" : "")}";
        return new Answer(status, JsonSerializer.SerializeToUtf8Bytes(response, ApiJsonContext.Default.InjectionResponse));
    }

    /// <summary>
    /// One recipient's copy of a checked request: the raw message (one copy for all, with the
    /// fields it lacks), or the composed one with the recipient's substitutions; null and why when
    /// a placeholder has no value or the copy is over the size limit.
    /// </summary>
    private static byte[]? ComposeFor(Checked c, InjectionRecipient rcpt, string email, string messageId, DateTimeOffset now,
        long maxMessageSize, ref byte[]? shared, out string? refusal)
    {
        refusal = null;
        if (c.Raw is not null)
            return shared ??= WithMissingHeaders(c.Raw, messageId, now);
        var values = rcpt.Substitutions;
        var subject = Substitutions.Apply(c.Parts!.Subject, values, html: false, out var unknown);
        var text = unknown is null ? Substitutions.Apply(c.Parts.Text, values, html: false, out unknown) : null;
        var html = unknown is null ? Substitutions.Apply(c.Parts.Html, values, html: true, out unknown) : null;
        if (unknown is not null)
        {
            refusal = $"no substitution for the placeholder {{{{ {unknown} }}}}";
            return null;
        }
        var parts = c.Parts with { Subject = subject, Text = text, Html = html };
        var message = MessageComposer.Build(parts, new MailboxAddress(rcpt.Name ?? "", email), messageId, now);
        if (message.Length > maxMessageSize)
        {
            refusal = $"over a limit: the message is {message.Length} bytes, limits.maxMessageSize is {maxMessageSize}";
            return null;
        }
        return message;
    }

    /// <summary>
    /// For the fuzz target ("api" in tests/NativeRelay.Fuzz): a body through the parse and every
    /// check a request meets, then the copies of its first recipients composed, as
    /// <see cref="InjectAsync"/> does before it queues anything; no host (no pool list), nothing
    /// queued. The documented outcomes: an answer (a status and a JSON error), or null when the
    /// request would be taken.
    /// </summary>
    internal static Answer? CheckForFuzzing(byte[] body, ApiToken token, ApiConfiguration config, long maxMessageSize, DateTimeOffset now)
    {
        var request = Parse(body, out var failure);
        if (request is null)
            return failure;
        var c = Check(request, token, config, now, null, maxMessageSize, out failure);
        if (c is null)
            return failure;
        byte[]? shared = null;
        foreach (var rcpt in c.Request.Recipients!.Take(3))
            if (TryCheckAddress(rcpt.Email ?? "", out _, out _))
                ComposeFor(c, rcpt, rcpt.Email!, "fuzz.1@relay.test", now, maxMessageSize, ref shared, out _);
        return null;
    }

    private string MessageId(ulong id) => $"{QueueIdGenerator.ToString(id)}.{Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(6))}@{_host.Hostname}";

    /// <summary>A raw message without Message-ID or Date gets them (RFC 5322 3.6 requires Date; RFC 6409 8 lets a submission server add both).</summary>
    private static byte[] WithMissingHeaders(byte[] raw, string messageId, DateTimeOffset now)
    {
        bool hasId = HeaderScanner.TryFindFirst(raw, "Message-ID"u8, out _);
        bool hasDate = HeaderScanner.TryFindFirst(raw, "Date"u8, out _);
        if (hasId && hasDate)
            return raw;
        var extra = new StringBuilder();
        if (!hasId)
            extra.Append("Message-ID: <").Append(messageId).Append(">\r\n");
        if (!hasDate)
            extra.Append("Date: ").Append(now.ToString("ddd, d MMM yyyy HH:mm:ss +0000", CultureInfo.InvariantCulture)).Append("\r\n");
        return [.. Encoding.ASCII.GetBytes(extra.ToString()), .. raw];
    }

    /// <summary>RFC 5321 4.4 trace field for an HTTP injection: the client, the token's name (never the token), the relay, the queue id.</summary>
    private string ReceivedField(string client, string tokenName, bool tls, ulong id, string recipient, DateTimeOffset now) =>
        $"Received: from [{client}] (token {tokenName})\r\n\tby {_host.Hostname} (NativeRelay) with {(tls ? "HTTPS" : "HTTP")} id {QueueIdGenerator.ToString(id)}\r\n\tfor <{recipient}>; {now.ToString("ddd, d MMM yyyy HH:mm:ss +0000", CultureInfo.InvariantCulture)}\r\n";

    /// <summary>An SMTP mailbox the relay can put in RCPT TO / MAIL FROM (ASCII; the API does not speak SMTPUTF8 yet).</summary>
    internal static bool TryCheckAddress(string address, out string domain, out string why)
    {
        domain = "";
        if (address.Length is 0 or > 254 || HasLineBreak(address))
        {
            why = $"'{Clip(address)}' is empty, too long or has a line break";
            return false;
        }
        var argument = Encoding.UTF8.GetBytes("TO:<" + address + ">");
        var error = NativeRelay.Smtp.MailboxPath.Parse(argument, NativeRelay.Smtp.MailboxPath.RcptToPrefix, allowUtf8: false, allowBareAddress: false,
            out var path, out var parameters);
        if (error != NativeRelay.Smtp.PathError.None || !parameters.IsEmpty || path.IsEmpty
            || !NativeRelay.Smtp.MailboxPath.TrySplit(path, out _, out var d) || d.IsEmpty || d[0] == (byte)'[')
        {
            why = $"'{Clip(address)}' is not a mailbox such as ann@example.org ({(error == NativeRelay.Smtp.PathError.None ? "syntax" : error.ToString())})";
            return false;
        }
        domain = Encoding.ASCII.GetString(d).ToLowerInvariant();
        why = "";
        return true;
    }

    private static string Clip(string s) => s.Length > 80 ? s[..80] + "..." : s.Replace("\r", "\\r").Replace("\n", "\\n");

    private static bool HasLineBreak(string s) => s.AsSpan().IndexOfAny('\r', '\n', '\0') >= 0;

    private static bool IsAscii(byte[] b) => System.Text.Ascii.IsValid(b);

    internal static Answer Error(int status, string error, string? field = null) =>
        new(status, JsonSerializer.SerializeToUtf8Bytes(new ApiError { Error = error, Field = field }, ApiJsonContext.Default.ApiError));

    private static Checked? Fail(out Answer failure, int status, string error, string? field = null)
    {
        failure = Error(status, error, field);
        return null;
    }

    private static MessageComposer.Parts? FailParts(out Answer failure, int status, string error, string? field = null)
    {
        failure = Error(status, error, field);
        return null;
    }

    private static byte[]? FailRaw(out Answer failure, int status, string error)
    {
        failure = Error(status, error, "$.raw");
        return null;
    }
}
