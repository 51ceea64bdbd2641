using System.Text;
using BenchmarkDotNet.Attributes;
using NativeRelay.MailAuth;
using NativeRelay.MailAuth.Dmarc;
using NativeRelay.MailAuth.Spf;

namespace NativeRelay.Benchmarks;

/// <summary>
/// The per-message CPU work of inbound mail authentication that does not wait for DNS: the
/// organizational domain (Public Suffix List), the From domain, the forged-header scan, the
/// Authentication-Results field, and parsing an SPF record (done at every evaluation: the cache
/// holds DNS answers, not parsed records).
/// </summary>
[MemoryDiagnoser]
public class MailAuthBenchmarks
{
    private readonly PublicSuffixList _psl = PublicSuffixList.Default;
    private byte[] _header = [];
    private readonly SpfVerdict _spf = new(SpfResult.Pass, "mailfrom", "example.com", "bounce@example.com", "ip4:192.0.2.0/24");
    private readonly List<DkimVerdict> _dkim = [new(DkimResult.Pass, "example.com", "s1", "rsa-sha256", null, "abcdefgh")];
    private readonly DmarcVerdict _dmarc = new(DmarcResult.Pass, "example.com", "example.com",
        new DmarcRecord(DmarcPolicy.Reject, null, null, false, false, 100, [], [], "0", 86400), DmarcPolicy.Reject, DmarcPolicy.None, true, true);

    [GlobalSetup]
    public void Setup()
    {
        _header = Encoding.ASCII.GetBytes(
            "Received: from mail.example.org (mail.example.org [192.0.2.25]) by mx1.example.com with ESMTPS id 4Fq2Xk1Zz9\r\n" +
            "Authentication-Results: upstream.example.net; spf=pass smtp.mailfrom=bounce@example.com\r\n" +
            "DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1; h=from:to:subject:date;\r\n bh=abcdefghijklmnop; b=abcdefghijklmnopqrstuvwxyz\r\n" +
            "From: \"Example News\" <news@mail.example.com>\r\n" +
            "To: someone@example.net\r\n" +
            "Subject: The monthly letter\r\n" +
            "Date: Mon, 7 Dec 2026 03:00:00 +0000\r\n" +
            "Message-ID: <abc@mail.example.com>\r\n" +
            "\r\n");
    }

    [Benchmark]
    public string? OrganizationalDomain() => _psl.GetOrganizationalDomain("news.mail.example.co.uk");

    [Benchmark]
    public string? FromDomainOfHeader() => FromDomain.Find(_header).Domain;

    [Benchmark]
    public int FindForgedAuthenticationResults() => AuthenticationResults.FindOurs(_header, "mx1.example.com").Count;

    [Benchmark]
    public int BuildAuthenticationResults() => AuthenticationResults.Build("mx1.example.com", _spf, _dkim, _dmarc).Length;

    [Benchmark]
    public int ParseSpfRecord() => SpfRecord.TryParse("v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.example.net mx a:mail.%{d}/28 -all", out var record, out _) ? record.Mechanisms.Count : 0;
}
