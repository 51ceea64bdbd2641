using System.Buffers;
using System.Text;
using NativeRelay.Spool;

namespace NativeRelay.Message;

/// <summary>
/// Builds a delivery status notification (RFC 3464) as a complete RFC 5322 message: a
/// multipart/report (RFC 6522) with a human-readable text/plain part, a message/delivery-status
/// part (Reporting-MTA, Original-Envelope-Id, Arrival-Date, then per recipient Final-Recipient,
/// Original-Recipient, Action, Status, Remote-MTA, Diagnostic-Code, Last-Attempt-Date,
/// Will-Retry-Until) and the returned message: whole (message/rfc822) or its header section
/// (text/rfc822-headers). For an SMTPUTF8 message the international types of RFC 6533 are used.
/// The original is copied block by block from its pooled buffer into the DSN's pooled buffer.
/// </summary>
public static class DsnBuilder
{
    private const int FoldAt = 76;

    /// <summary>Builds the DSN. <paramref name="eightBit"/> says whether it must be sent with BODY=8BITMIME.</summary>
    public static MessageBuffer Build(DsnReport report, MessageBuffer original, out bool eightBit)
    {
        long headerEnd = FindHeaderEnd(original);
        long returned = report.ReturnFullMessage ? original.ContentLength : headerEnd;
        bool originalEightBit = HasEightBit(original, returned);
        eightBit = originalEightBit || report.International || !Ascii.IsValid(report.ReturnPath);
        foreach (var r in report.Recipients)
            eightBit |= !Ascii.IsValid(r.FinalRecipient) || (r.Diagnostic is { } d && !Ascii.IsValid(d));

        var b = MessageBuffer.Rent();
        try
        {
            string host = report.ReportingMta;
            string dsnId = QueueIdGenerator.ToString(report.DsnQueueId);
            string boundary = $"{dsnId}.{Random.Shared.NextInt64():X16}/{host}";
            var (subject, intro) = Describe(report);

            // The header section.
            Line(b, $"From: Mail Delivery System <MAILER-DAEMON@{host}>");
            b.Write("To: <"u8);
            b.Write(report.ReturnPath);
            b.Write(">\r\n"u8);
            Line(b, $"Subject: {subject}");
            WriteDate(b, "Date: "u8, report.Date);
            Line(b, $"Message-ID: <{dsnId}.dsn@{host}>");
            Line(b, "Auto-Submitted: auto-replied");
            Line(b, "MIME-Version: 1.0");
            Line(b, "Content-Type: multipart/report; report-type=delivery-status;");
            Line(b, $"\tboundary=\"{boundary}\"");
            Line(b, eightBit ? "Content-Transfer-Encoding: 8bit" : "Content-Transfer-Encoding: 7bit");
            Line(b, "");
            Line(b, "This is a MIME-encapsulated message.");
            Line(b, "");

            // 1: for people.
            Line(b, $"--{boundary}");
            Line(b, "Content-Description: Notification");
            Line(b, "Content-Type: text/plain; charset=utf-8");
            Line(b, eightBit ? "Content-Transfer-Encoding: 8bit" : "Content-Transfer-Encoding: 7bit");
            Line(b, "");
            Line(b, $"This is the mail system at host {host}.");
            Line(b, "");
            foreach (var line in intro)
                Line(b, line);
            Line(b, "");
            if (report.ReturnNote is not null)
            {
                Line(b, report.ReturnNote);
                Line(b, "");
            }
            foreach (var r in report.Recipients)
            {
                var text = new StringBuilder();
                text.Append('<').Append(Encoding.UTF8.GetString(r.FinalRecipient)).Append(">: ");
                text.Append(r.Action switch
                {
                    DsnAction.Failed => "delivery failed",
                    DsnAction.Delayed => "delivery delayed",
                    DsnAction.Relayed => "relayed",
                    DsnAction.Delivered => "delivered",
                    _ => "expanded",
                });
                if (r.RemoteMta is not null)
                    text.Append(r.Action is DsnAction.Relayed or DsnAction.Delivered ? " to host " : ": host ").Append(r.RemoteMta).Append(" said");
                if (r.Diagnostic is not null)
                    text.Append(": ").Append(r.Diagnostic);
                if (r.BounceClass is not null)
                    text.Append(" (class: ").Append(r.BounceClass).Append(')');
                Folded(b, text.ToString());
                Line(b, "");
            }

            // 2: for programs (RFC 3464 2.2 and 2.3).
            Line(b, $"--{boundary}");
            Line(b, "Content-Description: Delivery report");
            Line(b, report.International ? "Content-Type: message/global-delivery-status" : "Content-Type: message/delivery-status");
            if (eightBit)
                Line(b, "Content-Transfer-Encoding: 8bit");
            Line(b, "");
            Line(b, $"Reporting-MTA: dns; {host}");
            Line(b, $"X-NativeRelay-Queue-ID: {QueueIdGenerator.ToString(report.OriginalQueueId)}");
            if (report.EnvelopeId is { Length: > 0 } envId)
                Folded(b, "Original-Envelope-Id: " + Printable(envId));
            WriteDate(b, "Arrival-Date: "u8, report.ArrivalDate);
            foreach (var r in report.Recipients)
            {
                Line(b, "");
                bool utf8 = !Ascii.IsValid(r.FinalRecipient);
                b.Write(utf8 ? "Final-Recipient: utf-8; "u8 : "Final-Recipient: rfc822; "u8);
                b.Write(r.FinalRecipient);
                b.Write("\r\n"u8);
                if (r.OriginalRecipient is { Length: > 0 } orcpt && orcpt.AsSpan().IndexOf((byte)';') > 0)
                    Folded(b, "Original-Recipient: " + Printable(orcpt));
                Line(b, "Action: " + r.Action switch
                {
                    DsnAction.Failed => "failed",
                    DsnAction.Delayed => "delayed",
                    DsnAction.Delivered => "delivered",
                    DsnAction.Relayed => "relayed",
                    _ => "expanded",
                });
                Line(b, "Status: " + r.Status);
                if (r.RemoteMta is not null)
                    Line(b, "Remote-MTA: dns; " + r.RemoteMta);
                if (r.Diagnostic is not null)
                    Folded(b, (r.DiagnosticFromRemote ? "Diagnostic-Code: smtp; " : "Diagnostic-Code: X-NativeRelay; ") + r.Diagnostic);
                // An extension field (RFC 3464 2.4): the diagnostic's class, for programs that act on bounces.
                if (r.BounceClass is not null)
                    Line(b, "X-NativeRelay-Bounce-Class: " + r.BounceClass);
                if (r.LastAttempt is { } last)
                    WriteDate(b, "Last-Attempt-Date: "u8, last);
                if (r.WillRetryUntil is { } until)
                    WriteDate(b, "Will-Retry-Until: "u8, until);
            }
            Line(b, "");

            // 3: the message, or its headers.
            Line(b, $"--{boundary}");
            if (report.ReturnFullMessage)
            {
                Line(b, "Content-Description: Undelivered Message");
                Line(b, report.International ? "Content-Type: message/global" : "Content-Type: message/rfc822");
            }
            else
            {
                Line(b, "Content-Description: Undelivered Message Headers");
                Line(b, report.International ? "Content-Type: message/global-headers" : "Content-Type: text/rfc822-headers");
            }
            Line(b, originalEightBit ? "Content-Transfer-Encoding: 8bit" : "Content-Transfer-Encoding: 7bit");
            Line(b, "");
            long left = returned;
            byte last2 = 0, last1 = 0;
            foreach (var segment in original.GetSegments())
            {
                if (left <= 0)
                    break;
                var span = segment.Span;
                if (span.Length > left)
                    span = span[..(int)left];
                b.Write(span);
                left -= span.Length;
                if (span.Length >= 2)
                {
                    last2 = span[^2];
                    last1 = span[^1];
                }
                else if (span.Length == 1)
                {
                    last2 = last1;
                    last1 = span[0];
                }
            }
            if (returned > 0 && !(last2 == '\r' && last1 == '\n'))
                b.Write("\r\n"u8);
            Line(b, $"--{boundary}--");
            return b;
        }
        catch
        {
            b.Release();
            throw;
        }
    }

    private static (string Subject, string[] Intro) Describe(DsnReport report)
    {
        bool failed = false, delayed = false;
        foreach (var r in report.Recipients)
        {
            failed |= r.Action == DsnAction.Failed;
            delayed |= r.Action == DsnAction.Delayed;
        }
        string attached = report.ReturnFullMessage ? "The message is attached below." : "The headers of the message are attached below.";
        if (failed)
            return ("Undelivered Mail Returned to Sender",
            [
                "I'm sorry to have to inform you that your message could not",
                "be delivered to one or more recipients. " + attached,
                "",
                "For further assistance, please send mail to postmaster.",
            ]);
        if (delayed)
            return ("Delayed Mail (still being retried)",
            [
                "Your message could not be delivered to one or more recipients yet.",
                "The mail system will keep trying; you do not need to send it again.",
                attached,
            ]);
        return ("Successful Mail Delivery Report",
        [
            "Your message was passed on to the recipients below. The next mail",
            "system does not offer delivery notifications, so you will not be told",
            "when it reaches the mailbox. " + attached,
        ]);
    }

    /// <summary>The offset just after the blank line that ends the header section (the whole message if there is none).</summary>
    public static long FindHeaderEnd(MessageBuffer message)
    {
        // State: how much of "\r\n\r\n" has been matched; a message that starts with "\r\n" has no headers.
        int matched = 2;
        long offset = 0;
        foreach (var segment in message.GetSegments())
        {
            var span = segment.Span;
            for (int i = 0; i < span.Length; i++)
            {
                byte c = span[i];
                matched = c switch
                {
                    (byte)'\r' => matched is 0 or 2 ? matched + 1 : 1,
                    (byte)'\n' => matched is 1 or 3 ? matched + 1 : 0,
                    _ => 0,
                };
                if (matched == 4)
                    return offset + i + 1;
            }
            offset += span.Length;
        }
        return message.ContentLength;
    }

    private static bool HasEightBit(MessageBuffer message, long length)
    {
        foreach (var segment in message.GetSegments())
        {
            if (length <= 0)
                break;
            var span = segment.Span;
            if (span.Length > length)
                span = span[..(int)length];
            if (!Ascii.IsValid(span))
                return true;
            length -= span.Length;
        }
        return false;
    }

    private static string Printable(byte[] value)
    {
        var text = Encoding.UTF8.GetString(value);
        var sb = new StringBuilder(text.Length);
        foreach (char c in text)
            sb.Append(char.IsControl(c) ? '?' : c);
        return sb.ToString();
    }

    private static void Line(MessageBuffer b, string text)
    {
        Encoding.UTF8.GetBytes(text, b);
        b.Write("\r\n"u8);
    }

    /// <summary>Writes a field, folded at spaces so that no line is much longer than 76 characters.</summary>
    private static void Folded(MessageBuffer b, string text)
    {
        int start = 0;
        while (text.Length - start > FoldAt)
        {
            int cut = text.LastIndexOf(' ', start + FoldAt, FoldAt - 10);
            if (cut <= start)
            {
                cut = text.IndexOf(' ', start + FoldAt);
                // No space for a long way: cut anyway, well below the 998-octet line limit.
                if (cut < 0 || cut - start > 900)
                    cut = text.Length - start > 900 ? start + 900 : -1;
                if (cut < 0)
                    break;
            }
            Encoding.UTF8.GetBytes(text.AsSpan(start, cut - start), b);
            b.Write("\r\n"u8);
            if (text[cut] != ' ')
                b.Write(" "u8); // a hard cut: the continuation line still has to start with white space
            start = cut; // a space starts the continuation line
        }
        Encoding.UTF8.GetBytes(text.AsSpan(start), b);
        b.Write("\r\n"u8);
    }

    private static void WriteDate(MessageBuffer b, ReadOnlySpan<byte> name, DateTimeOffset date)
    {
        b.Write(name);
        Span<byte> text = stackalloc byte[Rfc5322Date.MaxLength];
        int n = Rfc5322Date.Write(date, text);
        b.Write(text[..n]);
        b.Write("\r\n"u8);
    }
}
