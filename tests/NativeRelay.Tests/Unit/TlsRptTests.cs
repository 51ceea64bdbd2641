using System.IO.Compression;
using System.Text;
using System.Text.Json;
using NativeRelay.TlsPolicies;
using NativeRelay.TlsPolicies.Reporting;
using NativeRelay.Tests.Support;
using Xunit;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// TLS-RPT (RFC 8460): the "_smtp._tls" record parser (strict), the day's counts and their file
/// (kept across a restart), and the aggregate report checked field by field against the RFC's
/// schema (section 4.4), gzip and file name (5.3) and the mail form (5.3).
/// </summary>
public sealed class TlsRptTests
{
    [Theory]
    [InlineData("v=TLSRPTv1; rua=mailto:reports@example.com", "mailto:reports@example.com")]
    [InlineData("v=TLSRPTv1;rua=mailto:a@example.com,https://reports.example.com/v1", "mailto:a@example.com https://reports.example.com/v1")]
    [InlineData("v=TLSRPTv1; rua=https://r.example/x ; ext=1;", "https://r.example/x")]
    public void Records_that_follow_the_grammar_parse(string text, string rua)
    {
        var record = TlsRptRecord.TryParse(text, out string? error);
        Assert.True(record is not null, error);
        Assert.Equal(rua, string.Join(' ', record!.Rua.Select(u => u.OriginalString)));
    }

    [Theory]
    [InlineData("v=TLSRPTv1")]
    [InlineData("v=TLSRPTv1;")]
    [InlineData("v=TLSRPTv2; rua=mailto:a@example.com")]
    [InlineData("v=TLSRPTv1; rua=http://insecure.example/")]
    [InlineData("v=TLSRPTv1; rua=ftp://x.example/")]
    [InlineData("v=TLSRPTv1; rua=mailto:nobody")]
    [InlineData("v=TLSRPTv1; rua=mailto:a@example.com; rua=mailto:b@example.com")]
    [InlineData("v=TLSRPTv1 rua=mailto:a@example.com")]
    [InlineData("v=TLSRPTv1; rua=mailto:a@example.com;; x=1")]
    public void Records_off_the_grammar_are_refused(string text)
    {
        Assert.Null(TlsRptRecord.TryParse(text, out string? error));
        Assert.False(string.IsNullOrEmpty(error));
    }

    [Fact]
    public void Two_records_mean_no_reports()
    {
        Assert.Null(TlsRptRecord.FromTxt(["v=TLSRPTv1; rua=mailto:a@example.com", "v=TLSRPTv1; rua=mailto:b@example.com"]));
        Assert.NotNull(TlsRptRecord.FromTxt(["v=spf1 -all", "v=TLSRPTv1; rua=mailto:a@example.com"]));
    }

    private static TlsRptRecorder MixedDay(string directory, DateTimeOffset now)
    {
        var recorder = new TlsRptRecorder(directory, () => now, flushEvery: TimeSpan.Zero);
        string[] policy = ["version: STSv1", "mode: enforce", "mx: mx.example.com", "max_age: 86400"];
        const string Record = "v=TLSRPTv1; rua=mailto:tlsrpt@example.com";
        for (int i = 0; i < 5; i++)
            recorder.Record("example.com", Record, "sts", policy, ["mx.example.com"], null, "mx.example.com", "192.0.2.1");
        recorder.Record("example.com", Record, "sts", policy, ["mx.example.com"], TlsFailureType.CertificateExpired, "mx.example.com", "192.0.2.1");
        recorder.Record("example.com", Record, "sts", policy, ["mx.example.com"], TlsFailureType.CertificateExpired, "mx.example.com", "192.0.2.1");
        recorder.Record("example.com", Record, "sts", policy, ["mx.example.com"], TlsFailureType.StarttlsNotSupported, "mx2.example.com", "192.0.2.2");
        recorder.Record("example.com", Record, "no-policy-found", [], [], null, "mx.example.com", "192.0.2.1");
        return recorder;
    }

    [Fact]
    public void The_counts_survive_a_restart()
    {
        using var dir = new TempDir("nativerelay-tlsrpt");
        var now = new DateTimeOffset(2026, 12, 6, 10, 0, 0, TimeSpan.Zero);
        MixedDay(dir.Path, now).Dispose();
        var again = new TlsRptRecorder(dir.Path, () => now, flushEvery: TimeSpan.Zero);
        again.Record("example.com", null, "sts", [], [], null, "mx.example.com", "192.0.2.1");
        again.Dispose();
        var day = TlsRptRecorder.Load(Path.Combine(dir.Path, "2026-12-06", "example.com.json"))!;
        Assert.Equal(6, day.Policies["sts"].Successes);
        Assert.Equal(3, day.Policies["sts"].FailureTotal);
        Assert.Equal("v=TLSRPTv1; rua=mailto:tlsrpt@example.com", day.Record);
        Assert.Equal(["version: STSv1", "mode: enforce", "mx: mx.example.com", "max_age: 86400"], day.Policies["sts"].PolicyString);
    }

    [Fact]
    public void The_report_of_a_mixed_day_has_every_field_of_rfc_8460()
    {
        using var dir = new TempDir("nativerelay-tlsrpt");
        var now = new DateTimeOffset(2026, 12, 6, 10, 0, 0, TimeSpan.Zero);
        MixedDay(dir.Path, now).Dispose();
        var day = TlsRptRecorder.Load(Path.Combine(dir.Path, "2026-12-06", "example.com.json"))!;
        string id = TlsRptReport.ReportId(day, "relay.example.net");
        byte[] gzip = TlsRptReport.Gzip(TlsRptReport.Json(day, "Example Relay", "postmaster@relay.example.net", id));

        using var unzip = new GZipStream(new MemoryStream(gzip), CompressionMode.Decompress);
        using var doc = JsonDocument.Parse(unzip);
        AssertReport(doc.RootElement, "example.com");
        Assert.Equal("Example Relay", doc.RootElement.GetProperty("organization-name").GetString());
        Assert.Equal("2026-12-06T00:00:00Z", doc.RootElement.GetProperty("date-range").GetProperty("start-datetime").GetString());
        Assert.Equal("2026-12-06T23:59:59Z", doc.RootElement.GetProperty("date-range").GetProperty("end-datetime").GetString());
        Assert.Equal("postmaster@relay.example.net", doc.RootElement.GetProperty("contact-info").GetString());
        Assert.Equal(id, doc.RootElement.GetProperty("report-id").GetString());
        Assert.Equal("relay.example.net!example.com!1796515200!1796601599.json.gz", TlsRptReport.FileName(day, "relay.example.net"));
    }

    /// <summary>The shape RFC 8460 4.4 gives, and the counts of <see cref="MixedDay"/>.</summary>
    internal static void AssertReport(JsonElement root, string domain)
    {
        foreach (var member in new[] { "organization-name", "date-range", "contact-info", "report-id", "policies" })
            Assert.True(root.TryGetProperty(member, out _), member);
        var policies = root.GetProperty("policies").EnumerateArray().ToList();
        var sts = policies.Single(p => p.GetProperty("policy").GetProperty("policy-type").GetString() == "sts");
        Assert.Equal(domain, sts.GetProperty("policy").GetProperty("policy-domain").GetString());
        Assert.Contains("mode: enforce", sts.GetProperty("policy").GetProperty("policy-string").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(["mx.example.com"], sts.GetProperty("policy").GetProperty("mx-host").EnumerateArray().Select(e => e.GetString()!));
        Assert.Equal(5, sts.GetProperty("summary").GetProperty("total-successful-session-count").GetInt64());
        Assert.Equal(3, sts.GetProperty("summary").GetProperty("total-failure-session-count").GetInt64());
        var details = sts.GetProperty("failure-details").EnumerateArray().ToList();
        var expired = details.Single(d => d.GetProperty("result-type").GetString() == "certificate-expired");
        Assert.Equal("mx.example.com", expired.GetProperty("receiving-mx-hostname").GetString());
        Assert.Equal("192.0.2.1", expired.GetProperty("receiving-ip").GetString());
        Assert.Equal(2, expired.GetProperty("failed-session-count").GetInt64());
        var starttls = details.Single(d => d.GetProperty("result-type").GetString() == "starttls-not-supported");
        Assert.Equal(1, starttls.GetProperty("failed-session-count").GetInt64());
        var none = policies.Single(p => p.GetProperty("policy").GetProperty("policy-type").GetString() == "no-policy-found");
        Assert.Equal(1, none.GetProperty("summary").GetProperty("total-successful-session-count").GetInt64());
        Assert.Equal(0, none.GetProperty("summary").GetProperty("total-failure-session-count").GetInt64());
        Assert.False(none.TryGetProperty("failure-details", out _));
    }

    [Fact]
    public async Task The_sender_mails_finished_days_as_multipart_report_and_marks_them_sent()
    {
        using var dir = new TempDir("nativerelay-tlsrpt");
        var yesterday = new DateTimeOffset(2026, 12, 6, 10, 0, 0, TimeSpan.Zero);
        MixedDay(dir.Path, yesterday).Dispose();
        MixedDay(dir.Path, yesterday.AddDays(1)).Dispose(); // today: not yet
        var mailed = new List<(string From, string To, byte[] Message)>();
        var sender = new TlsRptSender(dir.Path, "relay.example.net", null, null,
            (from, to, message, _) => { mailed.Add((from, to, message)); return Task.FromResult<string?>(null); },
            new NativeRelay.Routing.DnsClientResolver([], TimeSpan.FromSeconds(1)), CertificateVerifier.SystemOnly);

        var result = await sender.SendAsync(yesterday.AddDays(1), includeToday: false, CancellationToken.None);

        Assert.Equal(1, result.Sent);
        var (from, to, bytes) = Assert.Single(mailed);
        Assert.Equal("postmaster@relay.example.net", from);
        Assert.Equal("tlsrpt@example.com", to);
        string text = Encoding.ASCII.GetString(bytes);
        Assert.Contains("Content-Type: multipart/report; report-type=\"tlsrpt\";", text);
        Assert.Contains("TLS-Report-Domain: example.com\r\n", text);
        Assert.Contains("TLS-Report-Submitter: relay.example.net\r\n", text);
        Assert.Contains("Subject: Report Domain: example.com Submitter: relay.example.net Report-ID: <", text);
        Assert.Contains("Content-Type: application/tlsrpt+gzip", text);
        var json = TlsRptMailTestParts.Attachment(text);
        using var doc = JsonDocument.Parse(json);
        AssertReport(doc.RootElement, "example.com");
        Assert.True(File.Exists(Path.Combine(dir.Path, "2026-12-06", "example.com.json.sent")));
        Assert.True(File.Exists(Path.Combine(dir.Path, "2026-12-07", "example.com.json")));

        var again = await sender.SendAsync(yesterday.AddDays(1), includeToday: false, CancellationToken.None);
        Assert.Equal(0, again.Reports);
        Assert.Single(mailed);
    }
}

/// <summary>Takes the report out of a TLS-RPT mail (the tests' own, deliberately simple, MIME reading).</summary>
public static class TlsRptMailTestParts
{
    public static byte[] Attachment(string message)
    {
        string unfolded = message.Replace("\r\n\t", " ");
        var boundary = System.Text.RegularExpressions.Regex.Match(unfolded, "boundary=\"([^\"]+)\"").Groups[1].Value;
        var parts = unfolded.Split("--" + boundary);
        var part = parts.Single(p => p.Contains("Content-Type: application/tlsrpt+gzip"));
        Assert.Matches("filename=\"[^!\"]+![^!\"]+![0-9]+![0-9]+\\.json\\.gz\"", part);
        string base64 = part[(part.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..].Replace("\r\n", "").Trim();
        using var unzip = new GZipStream(new MemoryStream(Convert.FromBase64String(base64)), CompressionMode.Decompress);
        var output = new MemoryStream();
        unzip.CopyTo(output);
        return output.ToArray();
    }
}
