using System.Text;

namespace NativeRelay.TlsPolicies.Reporting;

/// <summary>
/// The report as mail (RFC 8460 5.3): a multipart/report; report-type="tlsrpt" message with a
/// short text part and the gzip report as an application/tlsrpt+gzip attachment in base64, the
/// TLS-Report-Domain and TLS-Report-Submitter fields and the Subject the RFC gives. It also says
/// "TLS-Required: No" (RFC 8689 5): a report about broken TLS must reach a domain whose TLS is broken.
/// A small writer of exactly this structure; the attachment is the only variable body.
/// </summary>
public static class TlsRptMail
{
    public static byte[] Build(string from, string to, TlsRptDay day, string submitter, string reportId, byte[] gzip, DateTimeOffset now)
    {
        // From the kernel, not RandomNumberGenerator (OpenSSL's): mailed reports need no OpenSSL.
        string boundary = "tlsrpt-" + Convert.ToHexString(NativeRelay.Interop.KernelRandom.GetBytes(12)).ToLowerInvariant();
        var m = new StringBuilder();
        void Line(string text) => m.Append(text).Append("\r\n");
        Line($"From: {from}");
        Line($"To: {to}");
        Span<byte> date = stackalloc byte[NativeRelay.Message.Rfc5322Date.MaxLength];
        Line($"Date: {Encoding.ASCII.GetString(date[..NativeRelay.Message.Rfc5322Date.Write(now, date)])}");
        Line($"Subject: Report Domain: {day.Domain} Submitter: {submitter} Report-ID: <{reportId}>");
        Line($"Message-ID: <{Guid.NewGuid():N}@{submitter}>");
        Line($"TLS-Report-Domain: {day.Domain}");
        Line($"TLS-Report-Submitter: {submitter}");
        Line("TLS-Required: No");
        Line("MIME-Version: 1.0");
        Line($"Content-Type: multipart/report; report-type=\"tlsrpt\";\r\n\tboundary=\"{boundary}\"");
        Line("");
        Line("This is a multipart message in MIME format.");
        Line("");
        Line($"--{boundary}");
        Line("Content-Type: text/plain; charset=\"us-ascii\"");
        Line("Content-Transfer-Encoding: 7bit");
        Line("");
        Line($"This is an aggregate TLS report (RFC 8460) from {submitter} for {day.Domain}, {day.Date} (UTC).");
        Line("");
        Line($"--{boundary}");
        string name = TlsRptReport.FileName(day, submitter);
        Line("Content-Type: application/tlsrpt+gzip");
        Line("Content-Transfer-Encoding: base64");
        Line($"Content-Disposition: attachment;\r\n\tfilename=\"{name}\"");
        Line("");
        string base64 = Convert.ToBase64String(gzip);
        for (int i = 0; i < base64.Length; i += 76)
            Line(base64.Substring(i, Math.Min(76, base64.Length - i)));
        Line($"--{boundary}--");
        return Encoding.ASCII.GetBytes(m.ToString());
    }
}
