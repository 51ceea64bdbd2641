using System.Net;
using NativeRelay.Config;
using NativeRelay.MailAuth;

namespace NativeRelay.Tests.Config;

/// <summary>The inboundAuth options: JSON, defaults, per-listener modes, validation.</summary>
public sealed class InboundAuthSettingsTests : IDisposable
{
    private readonly string _file = Path.Combine(Path.GetTempPath(), "nr-inbound-" + Guid.NewGuid().ToString("N") + ".json");
    private readonly string _psl = Path.Combine(Path.GetTempPath(), "nr-psl-" + Guid.NewGuid().ToString("N") + ".dat");

    public void Dispose()
    {
        File.Delete(_file);
        File.Delete(_psl);
    }

    private RelaySettings Load(string json)
    {
        File.WriteAllText(_file, json);
        return RelaySettings.Validate(RelaySettings.LoadFile(_file));
    }

    [Fact]
    public void Off_by_default_with_the_hostname_as_authserv_id()
    {
        var s = RelaySettings.Validate(new RelayOptions { Hostname = "mx.example.com" }).InboundAuth!;
        Assert.Equal(InboundAuthMode.Off, s.Mode);
        Assert.False(s.AnyOn);
        Assert.Equal("mx.example.com", s.AuthservId);
        Assert.False(s.SpfRejectFailAtMail);
        Assert.Equal(DmarcRejectAction.Reject, s.DmarcRejectAction);
        Assert.Equal(5, s.MaxDkimSignatures);
        Assert.Null(s.PublicSuffixListFromFile);
        Assert.Same(PublicSuffixList.Default, s.PublicSuffixList);
        Assert.Equal(TimeSpan.FromSeconds(20), s.Timeout);
        Assert.False(s.HoldQuarantined);
    }

    [Fact]
    public void Quarantine_hold_is_read_and_anything_else_refused()
    {
        Assert.True(Load("{ \"inboundAuth\": { \"mode\": \"enforce\", \"quarantine\": \"hold\" } }").InboundAuth!.HoldQuarantined);
        Assert.False(Load("{ \"inboundAuth\": { \"quarantine\": \"annotate\" } }").InboundAuth!.HoldQuarantined);
    }

    [Fact]
    public void Every_option_is_read_from_json_and_listeners_override_the_mode()
    {
        File.WriteAllText(_psl, "test\n");
        var s = Load($$"""
            {
              "hostname": "mx.example.com",
              "usersFile": "/dev/null",
              "listeners": [
                { "address": "127.0.0.1:2625", "kind": "smtp", "inboundAuth": "enforce" },
                { "address": "127.0.0.1:2626", "kind": "smtp", "inboundAuth": "off" },
                { "address": "127.0.0.1:2587", "kind": "submission" }
              ],
              "inboundAuth": {
                "mode": "annotate",
                "authservId": "auth.example.com",
                "spfRejectFailAtMail": true,
                "dmarcRejectAction": "quarantine",
                "maxDkimSignatures": 3,
                "publicSuffixListFile": "{{_psl}}",
                "timeoutSeconds": 7,
                "dnsCacheSize": 500
              }
            }
            """).InboundAuth!;
        Assert.Equal(InboundAuthMode.Annotate, s.Mode);
        Assert.Equal("auth.example.com", s.AuthservId);
        Assert.True(s.SpfRejectFailAtMail);
        Assert.Equal(DmarcRejectAction.Quarantine, s.DmarcRejectAction);
        Assert.Equal(3, s.MaxDkimSignatures);
        Assert.Equal(_psl, s.PublicSuffixListFile);
        Assert.Equal("example.test", s.PublicSuffixList.GetRegistrableDomain("www.example.test"));
        Assert.Equal(TimeSpan.FromSeconds(7), s.Timeout);
        Assert.Equal(500, s.DnsCacheSize);
        Assert.Equal(InboundAuthMode.Enforce, s.ModeFor(IPEndPoint.Parse("127.0.0.1:2625"), isSubmission: false));
        Assert.Equal(InboundAuthMode.Off, s.ModeFor(IPEndPoint.Parse("127.0.0.1:2626"), isSubmission: false));
        Assert.Equal(InboundAuthMode.Off, s.ModeFor(IPEndPoint.Parse("127.0.0.1:2587"), isSubmission: true));
        Assert.Equal(InboundAuthMode.Annotate, s.ModeFor(IPEndPoint.Parse("127.0.0.1:2525"), isSubmission: false));
        Assert.True(s.AnyOn);
    }

    [Fact]
    public void A_null_section_means_the_defaults()
    {
        var s = Load("{ \"inboundAuth\": null }").InboundAuth!;
        Assert.Equal(InboundAuthMode.Off, s.Mode);
    }

    [Theory]
    [InlineData("{ \"inboundAuth\": { \"mode\": \"strict\" } }", "inboundAuth.mode")]
    [InlineData("{ \"inboundAuth\": { \"authservId\": \"bad id;\" } }", "inboundAuth.authservId")]
    [InlineData("{ \"inboundAuth\": { \"dmarcRejectAction\": \"drop\" } }", "inboundAuth.dmarcRejectAction")]
    [InlineData("{ \"inboundAuth\": { \"maxDkimSignatures\": 0 } }", "inboundAuth.maxDkimSignatures")]
    [InlineData("{ \"inboundAuth\": { \"quarantine\": \"junk\" } }", "inboundAuth.quarantine")]
    [InlineData("{ \"inboundAuth\": { \"timeoutSeconds\": 0 } }", "inboundAuth.timeoutSeconds")]
    [InlineData("{ \"inboundAuth\": { \"publicSuffixListFile\": \"/nonexistent/psl.dat\" } }", "inboundAuth.publicSuffixListFile")]
    [InlineData("{ \"inboundAuth\": { \"spfRejectFail\": true } }", "spfRejectFail")]
    [InlineData("{ \"listeners\": [ { \"address\": \"127.0.0.1:2625\", \"inboundAuth\": \"on\" } ] }", "inboundAuth")]
    public void Bad_options_are_one_clear_error(string json, string mentioned)
    {
        var e = Assert.Throws<ConfigException>(() => Load(json));
        Assert.Contains(mentioned, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }
}
