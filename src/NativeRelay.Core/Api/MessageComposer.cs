using MimeKit;

namespace NativeRelay.Api;

/// <summary>
/// Builds one recipient's copy of an injected message with MimeKit: From, To (with the
/// recipient's display name), Subject, Date, Message-ID, the caller's extra headers, then a
/// text and/or HTML body and attachments. Headers are RFC 2047-encoded where they need it;
/// <see cref="MimeMessage.Prepare"/> with a 7-bit constraint picks quoted-printable or base64
/// per part, so no line is longer than 998 octets and the message crosses any hop unchanged.
/// </summary>
public static class MessageComposer
{
    public sealed record Attachment(string FileName, ContentType ContentType, byte[] Data);

    public sealed record Parts(
        MailboxAddress From,
        string? Subject,
        string? Text,
        string? Html,
        IReadOnlyList<KeyValuePair<string, string>> Headers,
        IReadOnlyList<Attachment> Attachments);

    private static readonly FormatOptions Format = CreateFormat();

    private static FormatOptions CreateFormat()
    {
        var format = FormatOptions.Default.Clone();
        format.NewLineFormat = NewLineFormat.Dos;
        format.International = false;
        return format;
    }

    /// <summary>The message's bytes (CRLF line ends), ready for the trace header and the spool.</summary>
    public static byte[] Build(Parts parts, MailboxAddress to, string messageId, DateTimeOffset date)
    {
        var message = new MimeMessage();
        message.From.Add(parts.From);
        message.To.Add(to);
        message.Subject = parts.Subject ?? "";
        message.Date = date;
        message.MessageId = messageId;
        foreach (var (name, value) in parts.Headers)
            message.Headers.Add(name, value);

        var body = new BodyBuilder { TextBody = parts.Text, HtmlBody = parts.Html };
        foreach (var a in parts.Attachments)
            body.Attachments.Add(a.FileName, a.Data, a.ContentType);
        message.Body = body.ToMessageBody();
        message.Prepare(EncodingConstraint.SevenBit, 78);

        using var stream = new MemoryStream(1024 + (parts.Text?.Length ?? 0) + (parts.Html?.Length ?? 0));
        message.WriteTo(Format, stream);
        return stream.ToArray();
    }
}
