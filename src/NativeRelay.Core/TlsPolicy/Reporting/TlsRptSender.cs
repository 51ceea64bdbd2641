using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using NativeRelay.Routing;

namespace NativeRelay.TlsPolicies.Reporting;

/// <summary>What one run of the sender did.</summary>
public sealed record TlsRptSendResult(int Reports, int Sent, int Failed, int Skipped, IReadOnlyList<string> Lines);

/// <summary>
/// Sends the reports of finished days (RFC 8460 5): for each SPOOL/tls-rpt/DATE/DOMAIN.json of a
/// day before today (today too when asked), the domain's "_smtp._tls" record as last seen gives
/// the rua; the report is built, gzip-compressed, and sent to every rua: mailto: as the RFC's MIME
/// report through the relay's own queue (the caller's <c>mail</c> hands it to the relay), https:
/// by POST with Content-Type application/tlsrpt+gzip (certificate checked as for MTA-STS, no
/// redirects). A day sent to at least one rua is renamed DOMAIN.json.sent; one that failed
/// everywhere stays for the next run; a day without a valid record is renamed .json.unreported.
/// </summary>
public sealed class TlsRptSender
{
    public delegate Task<string?> MailSubmitter(string from, string to, byte[] message, CancellationToken cancel);

    private readonly string _directory;
    private readonly string _submitter;
    private readonly string _organization;
    private readonly string _contact;
    private readonly string _from;
    private readonly MailSubmitter _mail;
    private readonly IDnsResolver _dns;
    private readonly CertificateVerifier _verifier;

    public TlsRptSender(string directory, string submitter, string? organization, string? contact, MailSubmitter mail,
        IDnsResolver dns, CertificateVerifier verifier)
    {
        _directory = directory;
        _submitter = submitter;
        _organization = string.IsNullOrEmpty(organization) ? submitter : organization;
        _contact = string.IsNullOrEmpty(contact) ? $"postmaster@{submitter}" : contact;
        _from = _contact.Contains('@') && !_contact.Contains(' ') ? _contact : $"postmaster@{submitter}";
        _mail = mail;
        _dns = dns;
        _verifier = verifier;
    }

    public async Task<TlsRptSendResult> SendAsync(DateTimeOffset now, bool includeToday, CancellationToken cancel)
    {
        string today = TlsRptRecorder.DayName(now);
        int reports = 0, sent = 0, failed = 0, skipped = 0;
        var lines = new List<string>();
        if (!Directory.Exists(_directory))
            return new TlsRptSendResult(0, 0, 0, 0, lines);
        foreach (var dayDirectory in Directory.GetDirectories(_directory).Order(StringComparer.Ordinal))
        {
            string date = Path.GetFileName(dayDirectory);
            int order = string.CompareOrdinal(date, today);
            if (order > 0 || order == 0 && !includeToday)
                continue;
            foreach (var file in Directory.GetFiles(dayDirectory, "*.json").Order(StringComparer.Ordinal))
            {
                var day = TlsRptRecorder.Load(file);
                if (day is null)
                {
                    lines.Add($"{file}: damaged, left as it is");
                    failed++;
                    continue;
                }
                var record = day.Record is null ? null : TlsRptRecord.TryParse(day.Record, out _);
                if (record is null)
                {
                    File.Move(file, file + ".unreported", overwrite: true);
                    skipped++;
                    continue;
                }
                reports++;
                string reportId = TlsRptReport.ReportId(day, _submitter);
                byte[] gzip = TlsRptReport.Gzip(TlsRptReport.Json(day, _organization, _contact, reportId));
                int ok = 0;
                foreach (var uri in record.Rua)
                {
                    string? error = uri.Scheme == "mailto"
                        ? await MailAsync(uri, day, reportId, gzip, now, cancel).ConfigureAwait(false)
                        : await PostAsync(uri, gzip, cancel).ConfigureAwait(false);
                    lines.Add(error is null ? $"{day.Domain} {day.Date}: report {reportId} sent to {uri}" : $"{day.Domain} {day.Date}: {uri}: {error}");
                    if (error is null)
                        ok++;
                }
                if (ok > 0)
                {
                    File.Move(file, file + ".sent", overwrite: true);
                    sent++;
                }
                else
                    failed++;
            }
        }
        return new TlsRptSendResult(reports, sent, failed, skipped, lines);
    }

    private async Task<string?> MailAsync(Uri uri, TlsRptDay day, string reportId, byte[] gzip, DateTimeOffset now, CancellationToken cancel)
    {
        string to = Uri.UnescapeDataString(uri.OriginalString["mailto:".Length..].Split('?')[0]);
        if (to.Length == 0 || to.Contains(','))
            return "a mailto: URI must name one address";
        var message = TlsRptMail.Build(_from, to, day, _submitter, reportId, gzip, now);
        try
        {
            return await _mail(_from, to, message, cancel).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or System.Net.Sockets.SocketException or TimeoutException
                                      or NativeRelay.Local.MailProtocolException or OperationCanceledException)
        {
            return e.Message;
        }
    }

    private async Task<string?> PostAsync(Uri uri, byte[] gzip, CancellationToken cancel)
    {
        // An https: rua is the recipient domain's choice: without OpenSSL the handshake would
        // abort the process, so the report is not sent there (start-up says so once).
        if (NativeRelay.Net.OpenSslLibrary.Problem is { } noSsl)
            return $"not sent: OpenSSL 3 cannot be loaded ({noSsl})";
        CertificateProblem problem = CertificateProblem.None;
        using var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            UseCookies = false,
            UseProxy = false,
            ConnectTimeout = TimeSpan.FromSeconds(30),
            ConnectCallback = (context, token) => MtaSts.MtaStsFetcher.ConnectThroughAsync(_dns, context.DnsEndPoint, token),
            SslOptions = new SslClientAuthenticationOptions
            {
                RemoteCertificateValidationCallback = (_, certificate, chain, errors) =>
                {
                    problem = _verifier.Check(certificate, chain, errors, uri.IdnHost);
                    return problem == CertificateProblem.None;
                },
            },
        };
        using var http = new HttpClient(handler) { Timeout = TimeSpan.FromSeconds(60) };
        try
        {
            using var content = new ByteArrayContent(gzip);
            content.Headers.ContentType = new MediaTypeHeaderValue("application/tlsrpt+gzip");
            using var response = await http.PostAsync(uri, content, cancel).ConfigureAwait(false);
            return response.IsSuccessStatusCode ? null : $"answered {(int)response.StatusCode}";
        }
        catch (HttpRequestException) when (problem != CertificateProblem.None)
        {
            return $"the certificate of {uri.Host}: {CertificateVerifier.Describe(problem)}";
        }
        catch (Exception e) when (e is HttpRequestException or IOException or TaskCanceledException)
        {
            return e.InnerException?.Message ?? e.Message;
        }
    }
}
