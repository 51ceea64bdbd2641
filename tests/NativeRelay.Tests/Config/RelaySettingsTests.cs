using NativeRelay.Config;

namespace NativeRelay.Tests.Config;

public sealed class RelaySettingsTests : IDisposable
{
    private readonly string _file = Path.Combine(Path.GetTempPath(), "nr-config-" + Guid.NewGuid().ToString("N") + ".json");

    public void Dispose() => File.Delete(_file);

    [Fact]
    public void Defaults_listen_on_loopback_2525_and_relay_for_loopback_only()
    {
        var s = RelaySettings.Validate(new RelayOptions());
        Assert.Equal("127.0.0.1:2525", Assert.Single(s.Listen).ToString());
        Assert.Null(s.RelayTo);
        Assert.EndsWith(Path.Combine("var", "spool"), s.SpoolDirectory);
        Assert.Contains(s.RelayNetworks, n => n.Contains(System.Net.IPAddress.Loopback));
        Assert.DoesNotContain(s.RelayNetworks, n => n.Contains(System.Net.IPAddress.Parse("192.0.2.1")));
    }

    [Fact]
    public void A_config_file_sets_nested_options()
    {
        File.WriteAllText(_file, """
            {
              // comments are allowed
              "hostname": "mx.example.com",
              "listen": ["127.0.0.1:2600", "[::1]:2600"],
              "relayTo": "127.0.0.1:2601",
              "delivery": { "retryInitialSeconds": 1, "retryMaxSeconds": 2 },
            }
            """);
        var s = RelaySettings.Validate(RelaySettings.LoadFile(_file));
        Assert.Equal("mx.example.com", s.Hostname);
        Assert.Equal(2, s.Listen.Count);
        Assert.Equal(new NextHop("127.0.0.1", 2601), s.RelayTo);
        Assert.Equal(1, s.Delivery.RetryInitialSeconds);
    }

    [Theory]
    [InlineData("{ \"lisen\": [] }", "lisen")]
    [InlineData("{ \"listen\": \"127.0.0.1:25\" }", "listen")]
    [InlineData("not json", "config file")]
    [InlineData("{ \"delivery\": { \"retryInitialSeconds\": 0 } }", "retryInitialSeconds")]
    [InlineData("{ \"relayNetworks\": [\"10.0.0.0/33\"] }", "relayNetworks")]
    [InlineData("{ \"listen\": [\"localhost\"] }", "listen")]
    [InlineData("{ \"relayTo\": \"nohost\" }", "relayTo")]
    [InlineData("{ \"hostname\": \"bad host\" }", "hostname")]
    public void Bad_configuration_is_one_clear_error(string json, string mentioned)
    {
        File.WriteAllText(_file, json);
        var e = Assert.Throws<ConfigException>(() => RelaySettings.Validate(RelaySettings.LoadFile(_file)));
        Assert.Contains(mentioned, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void A_missing_config_file_is_a_clear_error()
    {
        var e = Assert.Throws<ConfigException>(() => RelaySettings.LoadFile(_file + ".missing"));
        Assert.Contains("cannot read", e.Message);
    }

    [Theory]
    [InlineData("127.0.0.1:25", true)]
    [InlineData("[::1]:2525", true)]
    [InlineData("127.0.0.1", false)]
    [InlineData("127.0.0.1:0", false)]
    [InlineData("127.0.0.1:70000", false)]
    [InlineData("::1", false)]
    public void Listen_endpoints_need_an_address_and_a_port(string text, bool valid)
    {
        if (valid)
            Assert.NotNull(RelaySettings.ParseEndPoint(text, "listen"));
        else
            Assert.Throws<ConfigException>(() => RelaySettings.ParseEndPoint(text, "listen"));
    }
}
