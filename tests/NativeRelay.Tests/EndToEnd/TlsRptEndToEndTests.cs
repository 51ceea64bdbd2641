using System.IO.Compression;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// TLS-RPT (RFC 8460) end to end: a day with a refused MX (MTA-STS enforce) and a delivery is
/// counted by the published relay for a domain that publishes "_smtp._tls", and
/// 'nativerelay tls-rpt send' sends the report to both its rua: mailto: through the relay's own
/// queue to the reporting domain's MX (the gzip JSON attachment parsed and checked) and https: by
/// POST to a server the test runs.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class TlsRptEndToEndTests(ITestOutputHelper log)
{
    [Fact]
    public async Task A_day_with_failures_is_reported_to_a_mailto_and_an_https_rua()
    {
        using var pki = new TestPki();
        using var caDir = new TempDir("nativerelay-rpt-ca");
        string caFile = pki.WriteRoot(caDir.Path);
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2", "127.0.0.3");
        peers[0].StartTls = true;
        peers[0].ServerCertificate = pki.Issue(["mx.rpt.test"]);
        await using var policy = new TestHttpsServer("127.0.0.5", pki.Issue(["mta-sts.rpt.test"]))
        {
            Body = "version: STSv1\r\nmode: enforce\r\nmx: mx.rpt.test\r\nmax_age: 86400\r\n",
        };
        await using var upload = new TestHttpsServer("127.0.0.6", pki.Issue(["tlsrpt.reports.test"])) { Body = "", ContentType = "" };
        dns.Mx("rpt.test", (10, "mx.evil.rpt.test"), (20, "mx.rpt.test"))
           .A("mx.evil.rpt.test", "127.0.0.4").A("mx.rpt.test", "127.0.0.2")
           .Txt("_mta-sts.rpt.test", "v=STSv1; id=1").A("mta-sts.rpt.test", "127.0.0.5")
           .Txt("_smtp._tls.rpt.test", $"v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,https://tlsrpt.reports.test:{upload.Port}/v1/report")
           .Mx("reports.test", (10, "mx.reports.test")).A("mx.reports.test", "127.0.0.3")
           .A("tlsrpt.reports.test", "127.0.0.6");
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port,
            config => config["outboundTls"] = new JsonObject { ["caFile"] = caFile, ["mtaStsPort"] = policy.Port });

        string id = await relay.SendAsync("sender@origin.test", ["rcpt@rpt.test"], MessageText.Simple("rpt@test"));
        await relay.WaitForEventAsync(id, "delivered");

        // The counts reach the spool within seconds (written when changed, every 5 s).
        string today = DateTime.UtcNow.ToString("yyyy-MM-dd");
        string counts = Path.Combine(relay.Dir.Spool, "tls-rpt", today, "rpt.test.json");
        var deadline = DateTime.UtcNow + Waits.Delivery;
        while (!(File.Exists(counts) && File.ReadAllText(counts).Contains("validation-failure") && File.ReadAllText(counts).Contains("\"successes\": 1")))
        {
            Assert.True(DateTime.UtcNow < deadline, $"no counts in {counts}\n{relay.Describe()}");
            await Task.Delay(200);
        }

        var result = await CliRun.RunAsync(["tls-rpt", "send", "--config", relay.Dir.File("relay.json"), "--include-today",
            "--dns", dns.Address, "--ca-file", caFile], null, relay.Dir.Path, log);
        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("1 sent", result.Stdout);
        Assert.True(File.Exists(counts + ".sent"));

        // https: one POST of the gzip report.
        var post = Assert.Single(upload.Requests);
        Assert.Equal("POST", post.Method);
        Assert.Equal("/v1/report", post.Path);
        Assert.Equal("application/tlsrpt+gzip", post.Headers["Content-Type"]);
        CheckReport(Gunzip(post.Body));

        // mailto: queued by the relay, delivered to reports.test's MX as the RFC's MIME report.
        var mail = await peers[1].WaitForMessageAsync(m => m.Header("TLS-Report-Domain") == "rpt.test", "the mailed report");
        Assert.Contains("tlsrpt@reports.test", mail.Recipients);
        Assert.StartsWith("multipart/report; report-type=\"tlsrpt\";", mail.Header("Content-Type"));
        Assert.Equal("No", mail.Header("TLS-Required"));
        CheckReport(NativeRelay.Tests.Unit.TlsRptMailTestParts.Attachment(Encoding.ASCII.GetString(mail.Data)));
    }

    [Fact]
    public async Task With_send_daily_the_relay_mails_the_counts_of_a_finished_day_itself_and_they_survived_its_restart()
    {
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.3");
        dns.Mx("reports.test", (10, "mx.reports.test")).A("mx.reports.test", "127.0.0.3");
        // Yesterday's counts, as a relay that ran then (and was restarted since) left them in the spool.
        string yesterday = DateTime.UtcNow.AddDays(-1).ToString("yyyy-MM-dd");
        var day = new NativeRelay.TlsPolicies.Reporting.TlsRptDay { Date = yesterday, Domain = "daily.test", Record = "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test" };
        var counts = new NativeRelay.TlsPolicies.Reporting.TlsRptPolicyCounts { PolicyType = "no-policy-found", Successes = 3 };
        counts.Failures[new("starttls-not-supported", "mx.daily.test", "192.0.2.7")] = 2;
        day.Policies["no-policy-found"] = counts;
        await using var relay = await MxRelay.StartAsync(log, dns, peers.Port, config =>
        {
            config["tlsRpt"] = new JsonObject { ["sendDaily"] = true, ["contactInfo"] = "tls-reports@relay.test" };
            string file = Path.Combine((string)config["spool"]!, "tls-rpt", yesterday, "daily.test.json");
            Directory.CreateDirectory(Path.GetDirectoryName(file)!);
            File.WriteAllBytes(file, day.ToJson());
        });

        var mail = await peers[0].WaitForMessageAsync(m => m.Header("TLS-Report-Domain") == "daily.test", TimeSpan.FromSeconds(120), "the daily report");
        Assert.Equal("tls-reports@relay.test", mail.MailFrom);
        using var doc = JsonDocument.Parse(NativeRelay.Tests.Unit.TlsRptMailTestParts.Attachment(Encoding.ASCII.GetString(mail.Data)));
        var root = doc.RootElement;
        Assert.Equal($"{yesterday}T00:00:00Z", root.GetProperty("date-range").GetProperty("start-datetime").GetString());
        var policy = Assert.Single(root.GetProperty("policies").EnumerateArray());
        Assert.Equal("no-policy-found", policy.GetProperty("policy").GetProperty("policy-type").GetString());
        Assert.Equal(3, policy.GetProperty("summary").GetProperty("total-successful-session-count").GetInt64());
        Assert.Equal(2, policy.GetProperty("summary").GetProperty("total-failure-session-count").GetInt64());
        var failure = Assert.Single(policy.GetProperty("failure-details").EnumerateArray());
        Assert.Equal("starttls-not-supported", failure.GetProperty("result-type").GetString());
        Assert.Equal("192.0.2.7", failure.GetProperty("receiving-ip").GetString());
    }

    private static byte[] Gunzip(byte[] gzip)
    {
        using var unzip = new GZipStream(new MemoryStream(gzip), CompressionMode.Decompress);
        var output = new MemoryStream();
        unzip.CopyTo(output);
        return output.ToArray();
    }

    private static void CheckReport(byte[] json)
    {
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        Assert.Equal(MxRelay.Hostname, root.GetProperty("organization-name").GetString());
        Assert.Equal($"postmaster@{MxRelay.Hostname}", root.GetProperty("contact-info").GetString());
        Assert.EndsWith($"_rpt.test@{MxRelay.Hostname}", root.GetProperty("report-id").GetString());
        Assert.EndsWith("T00:00:00Z", root.GetProperty("date-range").GetProperty("start-datetime").GetString());
        Assert.EndsWith("T23:59:59Z", root.GetProperty("date-range").GetProperty("end-datetime").GetString());
        var sts = Assert.Single(root.GetProperty("policies").EnumerateArray());
        var p = sts.GetProperty("policy");
        Assert.Equal("sts", p.GetProperty("policy-type").GetString());
        Assert.Equal("rpt.test", p.GetProperty("policy-domain").GetString());
        Assert.Contains("mode: enforce", p.GetProperty("policy-string").EnumerateArray().Select(e => e.GetString()));
        Assert.Equal(["mx.rpt.test"], p.GetProperty("mx-host").EnumerateArray().Select(e => e.GetString()!));
        Assert.True(sts.GetProperty("summary").GetProperty("total-successful-session-count").GetInt64() >= 1);
        Assert.True(sts.GetProperty("summary").GetProperty("total-failure-session-count").GetInt64() >= 1);
        var failure = sts.GetProperty("failure-details").EnumerateArray().First(f => f.GetProperty("result-type").GetString() == "validation-failure");
        Assert.Equal("mx.evil.rpt.test", failure.GetProperty("receiving-mx-hostname").GetString());
        Assert.Equal("127.0.0.4", failure.GetProperty("receiving-ip").GetString());
        Assert.True(failure.GetProperty("failed-session-count").GetInt64() >= 1);
    }
}
