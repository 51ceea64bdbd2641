using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using NativeRelay.Config;
using NativeRelay.Routing;
using NativeRelay.TlsPolicies;
using NativeRelay.Tests.Support;
using Xunit;

namespace NativeRelay.Tests.Unit;

/// <summary>The verify policy's pieces: RFC 6125 name matching, the chain against a CA bundle, the options.</summary>
public sealed class TlsVerifyTests
{
    [Theory]
    [InlineData("mx.example.com", "mx.example.com", true)]
    [InlineData("MX.Example.COM", "mx.example.com", true)]
    [InlineData("mx.example.com.", "mx.example.com", true)]
    [InlineData("mx.example.com", "mx.example.com.", true)]
    [InlineData("*.example.com", "mx.example.com", true)]
    [InlineData("*.example.com", "MX.EXAMPLE.com", true)]
    [InlineData("*.example.com", "example.com", false)]          // the wildcard stands for exactly one label
    [InlineData("*.example.com", "a.mx.example.com", false)]
    [InlineData("*.example.com", ".example.com", false)]
    [InlineData("f*.example.com", "foo.example.com", false)]      // only a whole left-most label may be a wildcard
    [InlineData("*oo.example.com", "foo.example.com", false)]
    [InlineData("mx.*.com", "mx.example.com", false)]
    [InlineData("*.*.example.com", "a.b.example.com", false)]
    [InlineData("*.com", "example.com", false)]                   // not directly under a top-level domain
    [InlineData("*", "localhost", false)]
    [InlineData("mx.example.com", "mx.example.org", false)]
    [InlineData("mx.example.com", "xmx.example.com", false)]
    [InlineData("xn--bcher-kva.example", "xn--bcher-kva.example", true)] // IDN compared as A-labels
    [InlineData("*.xn--bcher-kva.example", "mx.xn--bcher-kva.example", true)]
    [InlineData("bücher.example", "bücher.example", false)]          // U-labels are not valid presented identifiers
    [InlineData("", "mx.example.com", false)]
    public void Presented_identifiers_match_by_rfc_6125(string presented, string host, bool expected) =>
        Assert.Equal(expected, CertificateNames.PatternMatches(presented, host.TrimEnd('.')));

    [Fact]
    public void The_subject_cn_counts_only_when_there_is_no_dns_name()
    {
        using var pki = new TestPki();
        using var cnOnly = pki.Issue([], commonName: "mx.cn.test");
        using var sanAndCn = pki.Issue(["other.test"], commonName: "mx.cn.test");

        Assert.True(CertificateNames.Matches(cnOnly, "mx.cn.test"));
        Assert.False(CertificateNames.Matches(sanAndCn, "mx.cn.test"));
        Assert.True(CertificateNames.Matches(sanAndCn, "other.test"));
        Assert.False(CertificateNames.Matches(sanAndCn, "127.0.0.1"));
    }

    [Fact]
    public void A_certificate_from_the_ca_bundle_for_the_mx_name_is_verified()
    {
        using var pki = new TestPki();
        using var dir = new TempDir("nativerelay-pki");
        var verifier = new CertificateVerifier(TrustAnchors.Load(pki.WriteRoot(dir.Path), "test"));
        using var good = pki.Issue(["mx.good.test"]);
        using var wildcard = pki.Issue(["*.good.test"]);

        Assert.Equal(CertificateProblem.None, verifier.Check(good, null, SslPolicyErrors.RemoteCertificateChainErrors, "mx.good.test"));
        Assert.Equal(CertificateProblem.None, verifier.Check(wildcard, null, SslPolicyErrors.RemoteCertificateChainErrors, "mx.good.test"));
        Assert.Equal(CertificateProblem.NameMismatch, verifier.Check(good, null, SslPolicyErrors.RemoteCertificateChainErrors, "mx.other.test"));
        Assert.Equal(CertificateProblem.NameMismatch, verifier.Check(good, null, SslPolicyErrors.RemoteCertificateChainErrors, null));
    }

    [Fact]
    public void Expired_self_signed_and_foreign_ca_certificates_are_not_verified()
    {
        using var pki = new TestPki();
        using var other = new TestPki("Another CA");
        using var dir = new TempDir("nativerelay-pki");
        var verifier = new CertificateVerifier(TrustAnchors.Load(pki.WriteRoot(dir.Path), "test"));
        using var expired = pki.Issue(["mx.good.test"], DateTimeOffset.UtcNow.AddDays(-20), DateTimeOffset.UtcNow.AddDays(-1));
        using var notYet = pki.Issue(["mx.good.test"], DateTimeOffset.UtcNow.AddDays(2), DateTimeOffset.UtcNow.AddDays(30));
        using var selfSigned = TestPki.SelfSigned("mx.good.test");
        using var foreign = other.Issue(["mx.good.test"]);
        const SslPolicyErrors Untrusted = SslPolicyErrors.RemoteCertificateChainErrors;

        Assert.Equal(CertificateProblem.Expired, verifier.Check(expired, null, Untrusted, "mx.good.test"));
        Assert.Equal(CertificateProblem.Expired, verifier.Check(notYet, null, Untrusted, "mx.good.test"));
        Assert.Equal(CertificateProblem.Untrusted, verifier.Check(selfSigned, null, Untrusted, "mx.good.test"));
        Assert.Equal(CertificateProblem.Untrusted, verifier.Check(foreign, null, Untrusted, "mx.good.test"));
        Assert.Equal(CertificateProblem.NoCertificate, verifier.Check(null, null, SslPolicyErrors.RemoteCertificateNotAvailable, "mx.good.test"));
        // Without the bundle the private CA is just another unknown issuer.
        using var good = pki.Issue(["mx.good.test"]);
        Assert.Equal(CertificateProblem.Untrusted, CertificateVerifier.SystemOnly.Check(good, null, Untrusted, "mx.good.test"));
    }

    [Fact]
    public void A_peer_check_fails_the_handshake_only_under_the_verify_policy()
    {
        using var selfSigned = TestPki.SelfSigned("mx.good.test");
        var verify = new PeerCertificateCheck(TlsPolicy.Verify, "mx.good.test", CertificateVerifier.SystemOnly);
        var required = new PeerCertificateCheck(TlsPolicy.Required, "mx.good.test", CertificateVerifier.SystemOnly);

        Assert.False(verify.Validate(this, selfSigned, null, SslPolicyErrors.RemoteCertificateChainErrors));
        Assert.True(required.Validate(this, selfSigned, null, SslPolicyErrors.RemoteCertificateChainErrors));
        Assert.False(verify.Verified);
        Assert.False(required.Verified);
        Assert.Equal("untrusted certificate chain mx.good.test", verify.Failure);
    }

    [Fact]
    public void Verify_is_a_policy_word_and_the_ca_file_is_checked_at_start()
    {
        using var dir = new TempDir("nativerelay-pki");
        Assert.Equal(TlsPolicy.Verify, RoutingSettings.ParseTls("verify", "x"));
        var error = Assert.Throws<ConfigException>(() => RoutingSettings.ParseTls("dane-only", "delivery.tlsPolicy"));
        Assert.Contains("none, opportunistic, required, verify", error.Message);

        var options = new RelayOptions { Spool = dir.Path };
        options.Delivery.TlsPolicy = "verify";
        options.OutboundTls.CaFile = dir.File("missing.pem");
        Assert.Contains("outboundTls.caFile", Assert.Throws<ConfigException>(() => RoutingSettings.Validate(options, dir.Path)).Message);
        File.WriteAllText(dir.File("empty.pem"), "not a certificate\n");
        options.OutboundTls.CaFile = dir.File("empty.pem");
        Assert.Contains("no PEM certificate", Assert.Throws<ConfigException>(() => RoutingSettings.Validate(options, dir.Path)).Message);

        using var pki = new TestPki();
        options.OutboundTls.CaFile = pki.WriteRoot(dir.Path);
        var settings = RoutingSettings.Validate(options, dir.Path);
        Assert.Equal(TlsPolicy.Verify, settings.DefaultTls);
        Assert.Single(settings.TrustAnchors!.Certificates);
    }
}
