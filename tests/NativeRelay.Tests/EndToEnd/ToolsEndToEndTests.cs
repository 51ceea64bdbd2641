using System.Text.Json;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// The load tools of the published binary: `blast` into `serve` relaying into `sink`, `bench`,
/// and the sink's chosen reply codes showing up in blast's errors. Loopback only, small bounded
/// loads, no assertion on speed.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class ToolsEndToEndTests(ITestOutputHelper log)
{
    private static readonly TimeSpan RunLimit = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task Blast_through_the_relay_into_the_sink_delivers_every_message_and_reports_json()
    {
        using var dir = new TempDir();
        using var sink = RelayProcess.Start(["sink", "--listen", "127.0.0.1:0", "--exit-after", "200", "--json"], dir.Path, log);
        int sinkPort = await ListeningPortAsync(sink);
        int relayPort = FreePort.Get();
        using var relay = await RelayProcess.StartServeAsync(
            ["--listen", $"127.0.0.1:{relayPort}", "--spool", dir.Spool, "--relay-to", $"127.0.0.1:{sinkPort}", "--hostname", "relay.test"],
            relayPort, dir.Path, log);

        var blast = await RelayProcess.RunToExitAsync(
            ["blast", "--to", $"127.0.0.1:{relayPort}", "--messages", "200", "--sessions", "4", "--size", "2k", "--json"],
            dir.Path, log, RunLimit);

        Assert.True(blast.ExitCode == 0, $"blast exited with {blast.ExitCode}.\n{blast.Output}\n{relay.Describe()}");
        using (var json = LastJson(blast.StdoutLines, blast.Output))
        {
            var r = json.RootElement;
            Assert.Equal("blast", r.GetProperty("tool").GetString());
            Assert.Equal(200, r.GetProperty("messages_requested").GetInt64());
            Assert.Equal(200, r.GetProperty("messages_accepted").GetInt64());
            Assert.Equal(0, r.GetProperty("messages_failed").GetInt64());
            Assert.Equal(0, r.GetProperty("messages_not_sent").GetInt64());
            Assert.Equal(2048, r.GetProperty("message_size").GetInt64());
            Assert.Equal(4, r.GetProperty("sessions").GetInt64());
            Assert.Equal(4, r.GetProperty("connections").GetInt64());
            Assert.True(r.GetProperty("pipelining").GetBoolean());
            Assert.False(r.GetProperty("timed_out").GetBoolean());
            Assert.Empty(r.GetProperty("errors").EnumerateObject());
            Assert.True(r.GetProperty("msgs_per_s").GetDouble() > 0);
            Assert.True(r.GetProperty("mb_per_s").GetDouble() > 0);
            var accept = r.GetProperty("accept_latency_ms");
            Assert.Equal(200, accept.GetProperty("count").GetInt64());
            foreach (var p in new[] { "p50", "p90", "p99", "max" })
                Assert.True(accept.GetProperty(p).GetDouble() > 0, $"accept {p}");
            Assert.True(accept.GetProperty("p50").GetDouble() <= accept.GetProperty("p99").GetDouble());
            Assert.True(accept.GetProperty("p99").GetDouble() <= accept.GetProperty("max").GetDouble());
            Assert.Equal(4, r.GetProperty("connect_latency_ms").GetProperty("count").GetInt64());
        }

        // --exit-after 200: the sink stops by itself once the relay delivered everything.
        int sinkExit = await sink.WaitForExitAsync(Waits.Delivery);
        Assert.True(sinkExit == 0, $"sink exited with {sinkExit}.\n{sink.Describe()}\n{relay.Describe()}");
        using (var json = LastJson(sink.StdoutLines, sink.Output))
        {
            var s = json.RootElement;
            Assert.Equal("sink", s.GetProperty("tool").GetString());
            Assert.Equal(200, s.GetProperty("messages").GetInt64());
            Assert.Equal(200, s.GetProperty("accepted").GetInt64());
            Assert.Equal(200, s.GetProperty("recipients").GetInt64());
            Assert.Equal(0, s.GetProperty("bare_line_endings").GetInt64());
            // Each message arrives with the relay's Received header in front.
            Assert.True(s.GetProperty("bytes").GetInt64() > 200 * 2048, sink.Output);
        }
    }

    [Fact]
    public async Task Blast_with_tls_sends_over_starttls_into_the_relay()
    {
        using var dir = new TempDir();
        var (cert, key) = WriteSelfSignedPem(dir);
        using var sink = RelayProcess.Start(["sink", "--listen", "127.0.0.1:0", "--exit-after", "50"], dir.Path, log);
        int sinkPort = await ListeningPortAsync(sink);
        int relayPort = FreePort.Get();
        using var relay = await RelayProcess.StartServeAsync(
            ["--listen", $"127.0.0.1:{relayPort}", "--spool", dir.Spool, "--relay-to", $"127.0.0.1:{sinkPort}",
             "--hostname", "relay.test", "--tls-cert", cert, "--tls-key", key],
            relayPort, dir.Path, log);

        var blast = await RelayProcess.RunToExitAsync(
            ["blast", "--to", $"127.0.0.1:{relayPort}", "--messages", "50", "--sessions", "2", "--tls", "--json"],
            dir.Path, log, RunLimit);

        Assert.True(blast.ExitCode == 0, $"blast --tls exited with {blast.ExitCode}.\n{blast.Output}\n{relay.Describe()}");
        using var json = LastJson(blast.StdoutLines, blast.Output);
        Assert.Equal(50, json.RootElement.GetProperty("messages_accepted").GetInt64());
        Assert.Equal(2, json.RootElement.GetProperty("connections").GetInt64());
        Assert.Equal(0, await sink.WaitForExitAsync(Waits.Delivery));
        Assert.Contains(sink.StdoutLines, l => l.StartsWith("sink: 50 message(s)", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Bench_prints_its_figures_and_leaves_no_temporary_directory()
    {
        using var dir = new TempDir();
        string temp = dir.File("benchtmp");
        Directory.CreateDirectory(temp);

        var text = await RelayProcess.RunToExitAsync(
            ["bench", "--messages", "400", "--sessions", "4", "--temp-dir", temp], dir.Path, log, RunLimit);

        Assert.True(text.ExitCode == 0, $"bench exited with {text.ExitCode}.\n{text.Output}");
        string output = string.Join('\n', text.StdoutLines);
        Assert.Contains("accepted     400 in ", output);
        Assert.Contains("end to end   400 delivered in ", output);
        Assert.Matches(@"accept\s+p50 [0-9.]+ ms\s+p90 [0-9.]+ ms\s+p99 [0-9.]+ ms\s+max [0-9.]+ ms", output);
        Assert.Contains("group commit(s)", output);
        Assert.Empty(Directory.GetFileSystemEntries(temp));

        var json = await RelayProcess.RunToExitAsync(
            ["bench", "--messages", "300", "--sessions", "3", "--size", "4k", "--temp-dir", temp, "--json"], dir.Path, log, RunLimit);
        Assert.True(json.ExitCode == 0, $"bench --json exited with {json.ExitCode}.\n{json.Output}");
        using var doc = LastJson(json.StdoutLines, json.Output);
        var r = doc.RootElement;
        Assert.Equal("bench", r.GetProperty("tool").GetString());
        Assert.Equal(300, r.GetProperty("messages_accepted").GetInt64());
        Assert.Equal(300, r.GetProperty("messages_delivered").GetInt64());
        Assert.True(r.GetProperty("all_delivered").GetBoolean());
        Assert.Equal(4096, r.GetProperty("message_size").GetInt64());
        Assert.True(r.GetProperty("accept_msgs_per_s").GetDouble() > 0);
        Assert.True(r.GetProperty("e2e_msgs_per_s").GetDouble() > 0);
        Assert.True(r.GetProperty("spool_commits").GetInt64() > 0);
        Assert.Equal(300, r.GetProperty("accept_latency_ms").GetProperty("count").GetInt64());
        string workDir = r.GetProperty("work_dir").GetString()!;
        Assert.StartsWith(temp, workDir);
        Assert.False(Directory.Exists(workDir));
        Assert.Empty(Directory.GetFileSystemEntries(temp));
    }

    [Theory]
    [InlineData("--reply-code", "451")]
    [InlineData("--reply-code", "554")]
    [InlineData("--rcpt-reply", "550")]
    public async Task Sink_reply_codes_make_blast_report_errors_by_code(string flag, string code)
    {
        using var dir = new TempDir();
        using var sink = RelayProcess.Start(["sink", "--listen", "127.0.0.1:0", flag, code], dir.Path, log);
        int port = await ListeningPortAsync(sink);

        var blast = await RelayProcess.RunToExitAsync(
            ["blast", "--to", $"127.0.0.1:{port}", "--messages", "50", "--sessions", "2", "--json"], dir.Path, log, RunLimit);

        Assert.True(blast.ExitCode == 1, $"blast should fail (exit 1) when messages are refused, got {blast.ExitCode}.\n{blast.Output}");
        using (var json = LastJson(blast.StdoutLines, blast.Output))
        {
            var r = json.RootElement;
            Assert.Equal(0, r.GetProperty("messages_accepted").GetInt64());
            Assert.Equal(50, r.GetProperty("messages_failed").GetInt64());
            var errors = r.GetProperty("errors").EnumerateObject().ToList();
            var only = Assert.Single(errors);
            Assert.Equal(code, only.Name);
            Assert.Equal(50, only.Value.GetInt64());
            Assert.Contains("sink", r.GetProperty("error_texts").GetProperty(code).GetString());
            // One per session at most: a session that starts late may find every message taken (they fail fast).
            Assert.InRange(r.GetProperty("connections").GetInt64(), 1, 2);
        }

        // The text summary says the same to a person.
        var text = await RelayProcess.RunToExitAsync(
            ["blast", "--to", $"127.0.0.1:{port}", "--messages", "10", "--sessions", "1", "--quiet"], dir.Path, log, RunLimit);
        Assert.Equal(1, text.ExitCode);
        Assert.Contains(text.StdoutLines, l => l.Trim().StartsWith($"{code} ", StringComparison.Ordinal) && l.Contains(" 10 "));

        sink.Terminate();
        Assert.Equal(0, await sink.WaitForExitAsync(Waits.Exit));
        var summary = string.Join('\n', sink.StdoutLines);
        Assert.Contains(flag == "--rcpt-reply" ? "0 message(s)" : "60 message(s)", summary);
        Assert.Contains(flag == "--rcpt-reply" ? "60 refused" : "0 accepted, 60 refused", summary);
    }

    [Fact]
    public async Task Tool_verbs_print_help_and_refuse_bad_flags_with_one_line()
    {
        using var dir = new TempDir();
        foreach (var verb in new[] { "blast", "sink", "bench" })
        {
            var help = await RelayProcess.RunToExitAsync([verb, "--help"], dir.Path, log);
            Assert.Equal(0, help.ExitCode);
            Assert.Contains(help.StdoutLines, l => l.Trim() == $"nativerelay {verb} [options]");

            var bad = await RelayProcess.RunToExitAsync([verb, "--no-such-flag"], dir.Path, log);
            Assert.True(bad.ExitCode == 2, $"{verb} --no-such-flag exited with {bad.ExitCode}.\n{bad.Output}");
            var line = Assert.Single(bad.StderrLines);
            Assert.StartsWith($"nativerelay: {verb}: unknown flag '--no-such-flag'", line);
        }

        var top = await RelayProcess.RunToExitAsync(["--help"], dir.Path, log);
        foreach (var verb in new[] { "blast", "sink", "bench" })
            Assert.Contains(top.StdoutLines, l => l.TrimStart().StartsWith($"{verb} ", StringComparison.Ordinal));
    }

    // A throwaway ECDSA certificate for 127.0.0.1/localhost, as PEM files for serve --tls-cert/--tls-key.
    private static (string Cert, string Key) WriteSelfSignedPem(TempDir dir)
    {
        using var key = System.Security.Cryptography.ECDsa.Create(System.Security.Cryptography.ECCurve.NamedCurves.nistP256);
        var request = new System.Security.Cryptography.X509Certificates.CertificateRequest(
            "CN=localhost", key, System.Security.Cryptography.HashAlgorithmName.SHA256);
        using var cert = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(2));
        string certPath = dir.File("tools-tls.crt");
        string keyPath = dir.File("tools-tls.key");
        File.WriteAllText(certPath, cert.ExportCertificatePem());
        File.WriteAllText(keyPath, key.ExportPkcs8PrivateKeyPem());
        return (certPath, keyPath);
    }

    private static async Task<int> ListeningPortAsync(RelayProcess sink)
    {
        await sink.WaitForOutputAsync("sink listening on ", Waits.Exit);
        var line = sink.StdoutLines.First(l => l.StartsWith("sink listening on ", StringComparison.Ordinal));
        return int.Parse(line[(line.LastIndexOf(':') + 1)..]);
    }

    private static JsonDocument LastJson(IReadOnlyList<string> stdout, string output)
    {
        var line = stdout.LastOrDefault(l => l.StartsWith('{'));
        Assert.True(line is not null, $"no JSON line on standard output.\n{output}");
        return JsonDocument.Parse(line!);
    }
}
