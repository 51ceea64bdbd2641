using System.Text;
using NativeRelay.Message;

namespace NativeRelay.Local;

/// <summary>
/// What <c>nativerelay sendmail</c> does to a message read from an application before it hands it
/// to the relay: line ends made CRLF (applications write bare LF), input ended by a lone "." line
/// unless -i, a leading mbox "From " line dropped, recipients read from To/Cc/Bcc with -t, Bcc
/// removed (it is never meant to be seen), and From:, Date: and Message-ID: added when missing.
/// </summary>
public static class SendmailMessage
{
    /// <summary>The bytes with CRLF line ends; reading stops at a line that is a lone "." unless <paramref name="ignoreDots"/>.</summary>
    public static byte[] NormalizeInput(ReadOnlySpan<byte> input, bool ignoreDots)
    {
        var output = new MemoryStream(input.Length + input.Length / 32 + 16);
        int start = 0;
        while (start < input.Length)
        {
            int end = input[start..].IndexOfAny((byte)'\r', (byte)'\n');
            ReadOnlySpan<byte> line;
            int next;
            if (end < 0)
            {
                line = input[start..];
                next = input.Length;
            }
            else
            {
                line = input.Slice(start, end);
                int at = start + end;
                next = at + 1;
                if (input[at] == '\r' && next < input.Length && input[next] == '\n')
                    next++;
            }
            if (!ignoreDots && line.Length == 1 && line[0] == '.')
                break;
            output.Write(line);
            output.Write("\r\n"u8);
            start = next;
        }
        return output.ToArray();
    }

    /// <summary>Splits a CRLF message into its header fields (each with its folded lines and final CRLF) and the body.</summary>
    public static (List<string> Fields, byte[] Body) Split(byte[] message)
    {
        var fields = new List<string>();
        int pos = 0;
        var current = new StringBuilder();
        while (pos < message.Length)
        {
            int eol = message.AsSpan(pos).IndexOf("\r\n"u8);
            int lineEnd = eol < 0 ? message.Length : pos + eol;
            var line = message.AsSpan(pos, lineEnd - pos);
            int next = eol < 0 ? message.Length : lineEnd + 2;
            if (line.IsEmpty)
            {
                Flush();
                return (fields, message[next..]);
            }
            if (line[0] is (byte)' ' or (byte)'\t')
            {
                if (current.Length == 0)
                    break; // a continuation with nothing before it: body from here
                current.Append(Encoding.Latin1.GetString(line)).Append("\r\n");
                pos = next;
                continue;
            }
            if (!IsFieldLine(line))
                break; // not a header: the message has no (more) header, the rest is body
            Flush();
            current.Append(Encoding.Latin1.GetString(line)).Append("\r\n");
            pos = next;
        }
        Flush();
        return (fields, message[pos..]);

        void Flush()
        {
            if (current.Length > 0)
                fields.Add(current.ToString());
            current.Clear();
        }
    }

    private static bool IsFieldLine(ReadOnlySpan<byte> line)
    {
        int colon = line.IndexOf((byte)':');
        if (colon <= 0)
            return false;
        foreach (byte b in line[..colon])
            if (b is < 33 or > 126)
                return false;
        return true;
    }

    public static string FieldName(string field) => field[..field.IndexOf(':')].Trim();

    public static string FieldValue(string field) =>
        field[(field.IndexOf(':') + 1)..].Replace("\r\n", "").Trim();

    /// <summary>The prepared message and the recipients read from its header (with -t).</summary>
    public sealed record Prepared(byte[] Message, List<string> HeaderRecipients, bool EightBit);

    /// <summary>
    /// Prepares a normalized message: with <paramref name="readRecipients"/> collects To, Cc and
    /// Bcc; always drops Bcc; adds From (the sender, with <paramref name="fullName"/>), Date and
    /// Message-ID when missing. Addresses without a domain get <paramref name="hostname"/>.
    /// </summary>
    public static Prepared Prepare(byte[] normalized, string sender, string? fullName, string hostname, bool readRecipients, DateTimeOffset now)
    {
        var (fields, body) = Split(DropMboxFromLine(normalized));
        var recipients = new List<string>();
        var kept = new List<string>(fields.Count + 3);
        bool hasFrom = false, hasDate = false, hasMessageId = false;
        foreach (var field in fields)
        {
            var name = FieldName(field);
            if (readRecipients && (name.Equals("To", StringComparison.OrdinalIgnoreCase) || name.Equals("Cc", StringComparison.OrdinalIgnoreCase)
                                   || name.Equals("Bcc", StringComparison.OrdinalIgnoreCase)))
            {
                foreach (var a in AddressList.Parse(FieldValue(field)))
                    recipients.Add(Qualify(a, hostname));
            }
            if (name.Equals("Bcc", StringComparison.OrdinalIgnoreCase))
                continue;
            hasFrom |= name.Equals("From", StringComparison.OrdinalIgnoreCase);
            hasDate |= name.Equals("Date", StringComparison.OrdinalIgnoreCase);
            hasMessageId |= name.Equals("Message-ID", StringComparison.OrdinalIgnoreCase);
            kept.Add(field);
        }
        var added = new StringBuilder();
        if (!hasFrom)
        {
            string address = sender.Length == 0 ? "MAILER-DAEMON@" + hostname : sender;
            added.Append("From: ");
            if (!string.IsNullOrWhiteSpace(fullName))
                added.Append(QuoteDisplayName(fullName.Trim())).Append(" <").Append(address).Append(">\r\n");
            else
                added.Append(address).Append("\r\n");
        }
        if (!hasDate)
        {
            Span<byte> date = stackalloc byte[Rfc5322Date.MaxLength];
            int n = Rfc5322Date.Write(now, date);
            added.Append("Date: ").Append(Encoding.ASCII.GetString(date[..n])).Append("\r\n");
        }
        // The random part from the kernel, not RandomNumberGenerator (OpenSSL's): sendmail runs without OpenSSL.
        if (!hasMessageId)
            added.Append("Message-ID: <").Append(now.ToUnixTimeMilliseconds()).Append('.')
                .Append(Convert.ToHexStringLower(NativeRelay.Interop.KernelRandom.GetBytes(8))).Append('@').Append(hostname).Append(">\r\n");

        var output = new MemoryStream(normalized.Length + added.Length + 2);
        foreach (var field in kept)
            output.Write(Encoding.Latin1.GetBytes(field));
        output.Write(Encoding.Latin1.GetBytes(added.ToString()));
        output.Write("\r\n"u8);
        output.Write(body);
        var message = output.ToArray();
        return new Prepared(message, recipients, message.AsSpan().IndexOfAnyInRange((byte)0x80, (byte)0xff) >= 0);
    }

    /// <summary>"bob" becomes "bob@hostname"; a full address is kept as it is.</summary>
    public static string Qualify(string address, string hostname) =>
        address.Contains('@') ? address : address + "@" + hostname;

    private static byte[] DropMboxFromLine(byte[] message)
    {
        if (!message.AsSpan().StartsWith("From "u8))
            return message;
        int eol = message.AsSpan().IndexOf("\r\n"u8);
        return eol < 0 ? [] : message[(eol + 2)..];
    }

    private static string QuoteDisplayName(string name)
    {
        foreach (char c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c is ' ' or '!' or '#' or '$' or '%' or '&' or '\'' or '*' or '+' or '-' or '/' or '=' or '?' or '^' or '_' or '`' or '{' or '|' or '}' or '~'))
                return "\"" + name.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\"";
        return name;
    }
}

/// <summary>
/// The addresses of an RFC 5322 address list (3.4): "Name &lt;a@b&gt;", bare a@b, quoted display
/// names and local parts, (comments), and groups ("team: a@b, c@d;" and "undisclosed-recipients:;").
/// </summary>
public static class AddressList
{
    public static List<string> Parse(string value)
    {
        var result = new List<string>();
        var word = new StringBuilder();   // the current mailbox text outside angle brackets, comments removed
        string? angle = null;
        int i = 0;
        while (i < value.Length)
        {
            char c = value[i];
            switch (c)
            {
                case '(':
                    SkipComment(value, ref i);
                    continue;
                case '"':
                    {
                        int start = i++;
                        while (i < value.Length && value[i] != '"')
                            i += value[i] == '\\' ? 2 : 1;
                        i = Math.Min(i + 1, value.Length);
                        word.Append(value, start, i - start);
                        continue;
                    }
                case '<':
                    {
                        int close = value.IndexOf('>', i + 1);
                        if (close < 0)
                            close = value.Length;
                        angle = value[(i + 1)..close].Trim();
                        // A source route "@a,@b:user@c" keeps only the address.
                        int routeEnd = angle.StartsWith('@') ? angle.IndexOf(':') : -1;
                        if (routeEnd >= 0)
                            angle = angle[(routeEnd + 1)..];
                        i = close + 1;
                        continue;
                    }
                case ':':
                    // "group-name:" starts a group; what was before it is the group's name.
                    word.Clear();
                    i++;
                    continue;
                case ',':
                case ';':
                    Finish();
                    i++;
                    continue;
                default:
                    word.Append(c);
                    i++;
                    continue;
            }
        }
        Finish();
        return result;

        void Finish()
        {
            string? address = angle;
            if (address is null)
            {
                var w = word.ToString().Trim();
                if (w.Length > 0 && (!w.Contains(' ') || w.StartsWith('"')))
                    address = w;
                else if (w.Length > 0)
                    address = w.Split(' ', StringSplitOptions.RemoveEmptyEntries)[^1]; // "a@b (x)" after comment removal
            }
            if (!string.IsNullOrWhiteSpace(address))
                result.Add(address.Trim());
            word.Clear();
            angle = null;
        }
    }

    private static void SkipComment(string value, ref int i)
    {
        int depth = 0;
        while (i < value.Length)
        {
            char c = value[i];
            if (c == '\\') { i += 2; continue; }
            if (c == '(') depth++;
            else if (c == ')' && --depth == 0) { i++; return; }
            i++;
        }
    }
}
