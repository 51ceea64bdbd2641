using System.Text;

namespace NativeRelay.Maildrop;

/// <summary>One message waiting in the maildrop: its envelope and its bytes (CRLF line ends, not dot-stuffed).</summary>
public sealed record MaildropEntry(string Sender, IReadOnlyList<string> Recipients, bool EightBit, ReadOnlyMemory<byte> Message);

/// <summary>
/// The format of a maildrop file: a few text lines of envelope, an empty line, then the message
/// exactly as <c>sendmail</c> would have sent it over SMTP.
/// <code>
/// NativeRelay-Maildrop: 1
/// Sender: app@example.com          (empty for the null sender)
/// Recipient: bob@example.org       (one line each, at least one)
/// Eight-Bit: yes | no
///
/// From: ...                        (the message)
/// </code>
/// Who submitted it is not in the file: the relay takes that from the file's owner, which the
/// submitting user cannot forge. Everything the file says is checked before it is queued.
/// </summary>
public static class MaildropFile
{
    public const string Magic = "NativeRelay-Maildrop: 1";

    /// <summary>An address line longer than this is not an address (RFC 5321 4.5.3.1.3: 256 octets for a path).</summary>
    private const int MaxAddressLength = 1024;

    public const int MaxRecipients = 10_000;

    public static byte[] Encode(string sender, IReadOnlyList<string> recipients, bool eightBit, ReadOnlySpan<byte> message)
    {
        var head = new StringBuilder();
        head.Append(Magic).Append("\r\n");
        head.Append("Sender: ").Append(CheckLine(sender)).Append("\r\n");
        foreach (var r in recipients)
            head.Append("Recipient: ").Append(CheckLine(r)).Append("\r\n");
        head.Append("Eight-Bit: ").Append(eightBit ? "yes" : "no").Append("\r\n\r\n");
        var headBytes = Encoding.UTF8.GetBytes(head.ToString());
        var file = new byte[headBytes.Length + message.Length];
        headBytes.CopyTo(file, 0);
        message.CopyTo(file.AsSpan(headBytes.Length));
        return file;

        static string CheckLine(string value) =>
            value.AsSpan().IndexOfAny('\r', '\n') >= 0 ? throw new ArgumentException("an address cannot contain a line break") : value;
    }

    /// <summary>Reads a maildrop file; false with a reason when it is not one this relay wrote.</summary>
    public static bool TryParse(ReadOnlyMemory<byte> file, out MaildropEntry? entry, out string error)
    {
        entry = null;
        var span = file.Span;
        if (span.IsEmpty)
        {
            error = "the file is empty";
            return false;
        }
        string? sender = null;
        bool? eightBit = null;
        var recipients = new List<string>();
        int offset = 0;
        bool first = true;
        while (true)
        {
            int end = span[offset..].IndexOf("\r\n"u8);
            if (end < 0)
            {
                error = "the envelope does not end with an empty line";
                return false;
            }
            var line = span.Slice(offset, end);
            offset += end + 2;
            if (line.IsEmpty)
                break;
            if (line.Length > MaxAddressLength + 16)
            {
                error = "an envelope line is too long";
                return false;
            }
            string text;
            try
            {
                text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(line);
            }
            catch (DecoderFallbackException)
            {
                error = "the envelope is not UTF-8";
                return false;
            }
            if (first)
            {
                if (text != Magic)
                {
                    error = "not a NativeRelay maildrop file (no 'NativeRelay-Maildrop: 1' line first)";
                    return false;
                }
                first = false;
                continue;
            }
            int colon = text.IndexOf(": ", StringComparison.Ordinal);
            string name = colon < 0 ? text : text[..colon];
            string value = colon < 0 ? "" : text[(colon + 2)..];
            switch (name)
            {
                case "Sender" when sender is null && (value.Length == 0 || LooksLikeAddress(value)):
                    sender = value;
                    break;
                case "Recipient" when LooksLikeAddress(value) && recipients.Count < MaxRecipients:
                    recipients.Add(value);
                    break;
                case "Eight-Bit" when eightBit is null && value is "yes" or "no":
                    eightBit = value == "yes";
                    break;
                default:
                    error = $"bad envelope line '{(text.Length > 80 ? text[..80] + "..." : text)}'";
                    return false;
            }
        }
        if (first)
        {
            error = "not a NativeRelay maildrop file (it starts with an empty line)";
            return false;
        }
        if (sender is null || recipients.Count == 0 || eightBit is null)
        {
            error = "the envelope lacks a Sender, a Recipient or the Eight-Bit line";
            return false;
        }
        entry = new MaildropEntry(sender, recipients, eightBit.Value, file[offset..]);
        error = "";
        return true;
    }

    // The relay's own parser checks each address again when it queues the message; this only
    // keeps out what could never be one (no '@', spaces, angle brackets, control characters).
    private static bool LooksLikeAddress(string value) =>
        value.Length is > 2 and <= MaxAddressLength && value.IndexOf('@') > 0 && value[^1] != '@'
        && !value.Any(c => c <= ' ' || c is '<' or '>' || c == 0x7F);
}
