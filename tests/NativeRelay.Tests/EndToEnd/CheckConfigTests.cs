using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>`nativerelay check-config FILE` on the shipped examples and on broken files.</summary>
[Trait("Category", "EndToEnd")]
public sealed class CheckConfigTests(ITestOutputHelper log)
{
    private static string Example(string name) => Path.Combine(CliRun.RepoRoot, "docs", "deploy", name);

    [Fact]
    public async Task The_outbound_gateway_example_is_valid_and_described()
    {
        using var dir = new TempDir();
        var result = await CliRun.RunAsync(["check-config", Example("outbound-gateway.json")], null, dir.Path, log);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("outbound-gateway.json: valid", result.Stdout);
        Assert.Contains("10.20.0.5:25 (smtp)", result.Stdout);
        Assert.Contains("10.20.0.0/16", result.Stdout);
        Assert.Contains("MX lookup", result.Stdout);
        Assert.Contains("local domains     none", result.Stdout);
        Assert.Contains("http://127.0.0.1:9464/metrics", result.Stdout);
        Assert.Empty(result.Stderr);
    }

    [Fact]
    public async Task The_edge_relay_example_is_valid_once_its_files_exist()
    {
        using var dir = new TempDir();
        // The example names files under /etc/nativerelay; put them in a temp dir instead.
        string etc = dir.File("etc") + "/";
        Directory.CreateDirectory(Path.Combine(etc, "tls"));
        File.Copy(Example("aliases.example"), Path.Combine(etc, "aliases"));
        File.WriteAllText(Path.Combine(etc, "users"), "");
        File.WriteAllText(Path.Combine(etc, "tls", "fullchain.pem"), "");
        File.WriteAllText(Path.Combine(etc, "tls", "privkey.pem"), "");
        string config = dir.File("edge.json");
        File.WriteAllText(config, File.ReadAllText(Example("edge-relay.json")).Replace("/etc/nativerelay/", etc));

        var result = await CliRun.RunAsync(["check-config", config], null, dir.Path, log);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("0.0.0.0:25 (smtp)", result.Stdout);
        Assert.Contains("0.0.0.0:587 (submission, AUTH required)", result.Stdout);
        Assert.Contains("local domain      example.com -> maildir /var/mail/vhosts/example.com/<user>/", result.Stdout);
        Assert.Contains("catch-all postmaster@example.com", result.Stdout);
        Assert.Contains("(6 aliases)", result.Stdout);
        Assert.Contains("local domain      lists.example.com -> lmtp unix:/run/dovecot/lmtp", result.Stdout);
    }

    [Fact]
    public async Task The_edge_relay_example_without_its_files_names_the_missing_one()
    {
        using var dir = new TempDir();
        var result = await CliRun.RunAsync(["check-config", Example("edge-relay.json")], null, dir.Path, log);
        Assert.Equal(2, result.ExitCode);
        var line = Assert.Single(result.Stderr.TrimEnd('\n').Split('\n'));
        Assert.StartsWith("nativerelay: ", line);
        Assert.Contains("does not exist", line);
    }

    [Theory]
    [InlineData("{ \"listen\": [\"127.0.0.1:2525\"], \"noSuchKey\": 1 }", "noSuchKey")]
    [InlineData("{ \"listen\": [\"nonsense\"] }", "listen")]
    [InlineData("{ \"localDomains\": [ { \"domain\": \"a.test\" } ] }", "maildirRoot")]
    [InlineData("{ \"metrics\": { \"listen\": \"127.0.0.1\" } }", "metrics.listen")]
    public async Task A_broken_file_is_one_line_and_exit_2(string json, string expected)
    {
        using var dir = new TempDir();
        string config = dir.File("bad.json");
        File.WriteAllText(config, json);

        var result = await CliRun.RunAsync(["check-config", config], null, dir.Path, log);

        Assert.Equal(2, result.ExitCode);
        var line = Assert.Single(result.Stderr.TrimEnd('\n').Split('\n'));
        Assert.StartsWith("nativerelay: ", line);
        Assert.Contains(expected, line);
        Assert.Empty(result.Stdout);
    }

    [Fact]
    public async Task A_bad_aliases_file_is_refused_with_its_line()
    {
        using var dir = new TempDir();
        File.WriteAllText(dir.File("aliases"), "ok: alice\nbad: |/bin/sh\n");
        string config = dir.File("c.json");
        File.WriteAllText(config, $$"""
            { "listen": ["127.0.0.1:2525"], "localDomains": [ { "domain": "a.test", "maildirRoot": "{{dir.File("mail")}}", "aliases": "{{dir.File("aliases")}}" } ] }
            """);

        var result = await CliRun.RunAsync(["check-config", config], null, dir.Path, log);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains("line 2", result.Stderr);
        Assert.Contains("only addresses", result.Stderr);
    }

    [Theory]
    [InlineData("--maildir-root", "/tmp/x", "--maildir-root needs at least one --local-domain")]
    [InlineData("--local-domain", "a.test", "give --maildir-root DIR")]
    [InlineData("--metrics", "nonsense", "metrics.listen")]
    public async Task Serve_validates_the_local_delivery_and_metrics_flags_the_same_way(string flag, string value, string expected)
    {
        using var dir = new TempDir();
        var result = await CliRun.RunAsync(["serve", "--spool", dir.Spool, "--listen", $"127.0.0.1:{FreePort.Get()}", flag, value], null, dir.Path, log);
        Assert.Equal(2, result.ExitCode);
        var line = Assert.Single(result.Stderr.TrimEnd('\n').Split('\n'));
        Assert.Contains(expected, line);
    }

    [Fact]
    public async Task Missing_argument_is_a_usage_error()
    {
        using var dir = new TempDir();
        var result = await CliRun.RunAsync(["check-config"], null, dir.Path, log);
        Assert.Equal(2, result.ExitCode);
        Assert.Contains("usage: nativerelay check-config FILE", result.Stderr);
    }
}
