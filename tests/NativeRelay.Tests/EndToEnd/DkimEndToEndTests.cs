using System.Text;
using System.Text.Json.Nodes;
using NativeRelay.Tests.Support;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

/// <summary>
/// DKIM signing by the published binary, checked by independent verifiers: dkimpy (RSA and
/// Ed25519) and Mail::DKIM (RSA: Debian 12's version has no Ed25519), with the keys made by
/// `nativerelay dkim keygen` and published by the tests' own DNS responder. Also: the signature
/// lives with the message across kill -9, a broken key is refused by check-config and by a
/// reload (which keeps the running keys), and `dkim verify` reads what the relay delivered.
/// </summary>
[Trait("Category", "EndToEnd")]
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
// IAsyncLifetime: xUnit 2 runs an async dispose of a test class only through it.
public sealed class DkimEndToEndTests(ITestOutputHelper log) : IAsyncLifetime
{
    private const int SIGHUP = 1;
    private readonly TempDir _dir = new("nativerelay-dkim-e2e");
    private readonly TestDnsServer _dns = new();
    private readonly Dictionary<string, string> _records = new(StringComparer.OrdinalIgnoreCase);

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await _dns.DisposeAsync();
        _dir.Dispose();
    }

    /// <summary>Runs `dkim keygen` and publishes the record it prints; returns the key file.</summary>
    private async Task<string> KeygenAsync(string domain, string selector, string algorithm)
    {
        var run = await RelayProcess.RunToExitAsync(["dkim", "keygen", "--domain", domain, "--selector", selector, "--algorithm", algorithm, "--out", _dir.File("keys")], _dir.Path, log);
        Assert.True(run.ExitCode == 0, run.Output);
        var line = Assert.Single(run.StdoutLines, l => l.Contains("IN TXT"));
        Assert.StartsWith($"{selector}._domainkey.{domain} IN TXT \"v=DKIM1; k={algorithm}; p=", line);
        var strings = line[line.IndexOf('"')..].Split('"').Where((_, i) => i % 2 == 1).ToList();
        Assert.All(strings, s => Assert.True(s.Length <= 255));
        var record = string.Concat(strings);
        _dns.Txt($"{selector}._domainkey.{domain}", record);
        _records[$"{selector}._domainkey.{domain}"] = record;
        var file = _dir.File($"keys/{selector}.{domain}.pem");
        Assert.True(File.Exists(file), run.Output);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        Assert.DoesNotContain(File.ReadAllText(file).Split('\n')[1], run.Output); // no key material printed
        return file;
    }

    private string WriteConfig(int port, string sink, string canonicalization, params (string Domain, string Selector, string File)[] keys)
    {
        var config = new JsonObject
        {
            ["hostname"] = "relay.test",
            ["listen"] = new JsonArray($"127.0.0.1:{port}"),
            ["spool"] = _dir.Spool,
            ["relayTo"] = sink,
            ["delivery"] = new JsonObject { ["retryInitialSeconds"] = 1, ["retryMaxSeconds"] = 2 },
            ["log"] = new JsonObject { ["level"] = "debug" },
            ["dkim"] = new JsonObject
            {
                ["canonicalization"] = canonicalization,
                ["keys"] = new JsonArray(keys.Select(k => (JsonNode)new JsonObject { ["domain"] = k.Domain, ["selector"] = k.Selector, ["keyFile"] = k.File }).ToArray()),
            },
        };
        var path = _dir.File("relay.json");
        File.WriteAllText(path, config.ToJsonString());
        return path;
    }

    private static readonly string LongSubject = "Subject: " + string.Join(" ", Enumerable.Repeat("a long subject folded", 8)).Replace("folded a", "folded\r\n a");

    /// <summary>An 8-bit body, long folded headers, white space to canonicalize and trailing empty lines.</summary>
    private static byte[] EightBitMessage(string id) => Encoding.UTF8.GetBytes(
        "From: Älice <alice@example.test>\r\n" +
        "To: bob@elsewhere.test,\r\n    carol@elsewhere.test\r\n" +
        LongSubject + "\r\n" +
        "Date: Mon, 7 Dec 2026 02:00:00 +0000\r\n" +
        $"Message-ID: <{id}>\r\n" +
        "MIME-Version: 1.0\r\n" +
        "Content-Type: text/plain; charset=utf-8\r\n" +
        "Content-Transfer-Encoding: 8bit\r\n" +
        "\r\n" +
        "Grüße aus Köln  \t mit Leerzeichen\r\n\r\n" +
        "Zweite Zeile\t\r\n\r\n\r\n\r\n");

    private static byte[] EmptyBodyMessage(string id) => Encoding.ASCII.GetBytes(
        $"From: alice@example.test\r\nTo: bob@elsewhere.test\r\nSubject: empty\r\nMessage-ID: <{id}>\r\n\r\n");

    [Theory]
    [InlineData("relaxed/relaxed")]
    [InlineData("simple/simple")]
    public async Task Mail_signed_by_the_relay_verifies_with_dkimpy_and_Mail_DKIM(string canonicalization)
    {
        var rsa = await KeygenAsync("example.test", "rsa2048", "rsa");
        var ed = await KeygenAsync("example.test", "ed1", "ed25519");
        await using var sink = new TestSmtpSink();
        int port = FreePort.Get();
        // The config names the canonicalization; the keys come from --dkim flags (two for one domain: dual signing).
        using var relay = await RelayProcess.StartServeAsync(
            ["--config", WriteConfig(port, sink.Endpoint, canonicalization), "--dkim", $"example.test:rsa2048:{rsa}", "--dkim", $"example.test:ed1:{ed}"],
            port, _dir.Path, log);

        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
        {
            await client.EhloAsync();
            await client.SendAcceptedAsync("alice@example.test", ["bob@elsewhere.test"], EightBitMessage("8bit@dkim.test"), "BODY=8BITMIME");
            await client.SendAcceptedAsync("alice@example.test", ["bob@elsewhere.test"], EmptyBodyMessage("empty@dkim.test"));
            // CHUNKING (RFC 3030): the message arrives in BDAT chunks and is signed the same way.
            var chunked = Encoding.ASCII.GetBytes("From: alice@example.test\r\nTo: bob@elsewhere.test\r\nSubject: in chunks\r\nMessage-ID: <bdat@dkim.test>\r\n\r\nsent with BDAT  \r\n\r\n");
            int half = chunked.Length / 2;
            await client.SendRawAsync([.. Encoding.ASCII.GetBytes($"MAIL FROM:<alice@example.test>\r\nRCPT TO:<bob@elsewhere.test>\r\nBDAT {half}\r\n"), .. chunked[..half],
                .. Encoding.ASCII.GetBytes($"BDAT {chunked.Length - half} LAST\r\n"), .. chunked[half..]]);
            Assert.All(await client.ReadRepliesAsync(4), r => Assert.Equal(250, r.Code));
        }

        foreach (var id in new[] { "8bit@dkim.test", "empty@dkim.test", "bdat@dkim.test" })
        {
            var delivered = await sink.WaitForMessageAsync(m => m.Header("Message-ID") == $"<{id}>", Waits.Delivery, id);
            var text = delivered.DataText;
            Assert.StartsWith("DKIM-Signature: v=1; a=rsa-sha256; c=" + canonicalization, text);
            Assert.Contains("a=ed25519-sha256", text);
            Assert.Equal(2, CountOccurrences(text, "DKIM-Signature:"));

            var dkimpy = await DkimTools.DkimpyVerifyAsync(delivered.Data, _records);
            Assert.True(dkimpy.Count == 2 && dkimpy.All(r => r.Result == "pass"), $"dkimpy: {string.Join("; ", dkimpy)}\n{MessageText.Show(delivered.Data)}");

            var mailDkim = await DkimTools.MailDkimVerifyAsync(delivered.Data, _dns.EndPoint.Port);
            var rsaResult = Assert.Single(mailDkim, r => r.Algorithm == "rsa-sha256");
            Assert.True(rsaResult.Result == "pass", $"Mail::DKIM: {string.Join("; ", mailDkim)}\n{MessageText.Show(delivered.Data)}");

            // And our own verifier, through the CLI, with the relay's DNS settings.
            var file = _dir.File($"{id}.eml");
            File.WriteAllBytes(file, delivered.Data);
            var verify = await RelayProcess.RunToExitAsync(["dkim", "verify", file, "--dns", _dns.Address], _dir.Path, log);
            Assert.True(verify.ExitCode == 0, verify.Output);
            Assert.Equal(2, verify.StdoutLines.Count(l => l.StartsWith("pass d=example.test", StringComparison.Ordinal)));
        }
    }

    [Fact]
    public async Task Mail_without_a_key_goes_out_unsigned_and_a_tampered_message_fails_dkim_verify()
    {
        var rsa = await KeygenAsync("example.test", "s1", "rsa");
        await using var sink = new TestSmtpSink();
        int port = FreePort.Get();
        using var relay = await RelayProcess.StartServeAsync(
            ["--listen", $"127.0.0.1:{port}", "--spool", _dir.Spool, "--relay-to", sink.Endpoint, "--hostname", "relay.test", "--log-level", "debug", "--dkim", $"example.test:s1:{rsa}"],
            port, _dir.Path, log);
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
        {
            await client.EhloAsync();
            await client.SendAcceptedAsync("x@stranger.test", ["bob@elsewhere.test"], MessageText.Build("From: x@stranger.test", "To: bob@elsewhere.test", "Subject: no key", "Message-ID: <stranger@dkim.test>", "", "body"));
            await client.SendAcceptedAsync("alice@example.test", ["bob@elsewhere.test"], EmptyBodyMessage("signed@dkim.test"));
        }
        var unsigned = await sink.WaitForMessageAsync(m => m.Header("Message-ID") == "<stranger@dkim.test>", Waits.Delivery);
        Assert.DoesNotContain("DKIM-Signature", unsigned.DataText);
        await relay.WaitForOutputAsync("dkim: no key for this message", Waits.Exit);

        var signed = await sink.WaitForMessageAsync(m => m.Header("Message-ID") == "<signed@dkim.test>", Waits.Delivery);
        var file = _dir.File("tampered.eml");
        File.WriteAllText(file, signed.DataText.Replace("Subject: empty", "Subject: full"), Encoding.Latin1);
        var verify = await RelayProcess.RunToExitAsync(["dkim", "verify", file, "--dns", _dns.Address], _dir.Path, log);
        Assert.Equal(1, verify.ExitCode);
        Assert.Contains("fail d=example.test s=s1 a=rsa-sha256", verify.Output);
    }

    [Fact]
    public async Task A_signed_message_recovered_after_kill_9_is_delivered_with_the_same_signature()
    {
        var ed = await KeygenAsync("example.test", "ed", "ed25519");
        var rsa = await KeygenAsync("example.test", "rsa", "rsa");
        int sinkPort;
        byte[] firstAttempt;
        int port = FreePort.Get();
        string[] args(int p, string sinkEndpoint) =>
            ["--listen", $"127.0.0.1:{p}", "--spool", _dir.Spool, "--relay-to", sinkEndpoint, "--hostname", "relay.test",
             "--dkim", $"example.test:ed:{ed}", "--dkim", $"example.test:rsa:{rsa}"];
        var attempts = new System.Collections.Concurrent.ConcurrentQueue<byte[]>();
        await using (var refusing = new TestSmtpSink { DataReply = a => { attempts.Enqueue(a.Data); return "451 4.3.0 not now"; } })
        {
            sinkPort = refusing.Port;
            using var first = await RelayProcess.StartServeAsync(args(port, refusing.Endpoint), port, _dir.Path, log);
            await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
            {
                await client.EhloAsync();
                await client.SendAcceptedAsync("alice@example.test", ["bob@elsewhere.test"], MessageText.Simple("crash@dkim.test"));
            }
            firstAttempt = await WaitForAttemptAsync(attempts);
            first.Kill();
            await first.WaitForExitAsync(Waits.Exit);
        }

        await using var sink = new TestSmtpSink(sinkPort);
        int port2 = FreePort.Get();
        using var second = await RelayProcess.StartServeAsync(args(port2, sink.Endpoint), port2, _dir.Path, log);
        var delivered = await sink.WaitForMessageAsync(m => m.Header("Message-ID") == "<crash@dkim.test>", Waits.Delivery);
        Assert.Equal(Signatures(firstAttempt), Signatures(delivered.Data));
        Assert.Equal(2, Signatures(delivered.Data).Count);
        var dkimpy = await DkimTools.DkimpyVerifyAsync(delivered.Data, _records);
        Assert.True(dkimpy.Count == 2 && dkimpy.All(r => r.Result == "pass"), string.Join("; ", dkimpy));
    }

    [Fact]
    public async Task A_broken_key_is_refused_by_check_config_and_by_a_reload_that_keeps_the_running_keys()
    {
        var rsa = await KeygenAsync("example.test", "s1", "rsa");
        await using var sink = new TestSmtpSink();
        int port = FreePort.Get();
        var config = WriteConfig(port, sink.Endpoint, "relaxed/relaxed", ("example.test", "s1", rsa));
        var check = await RelayProcess.RunToExitAsync(["check-config", config], _dir.Path, log);
        Assert.True(check.ExitCode == 0, check.Output);
        Assert.Contains("signs example.test with s1._domainkey.example.test rsa-sha256 2048 bits", check.Output);

        using var relay = await RelayProcess.StartServeAsync(["--config", config], port, _dir.Path, log);
        File.Move(rsa, rsa + ".good");
        File.WriteAllText(rsa, "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n");

        check = await RelayProcess.RunToExitAsync(["check-config", config], _dir.Path, log);
        Assert.Equal(2, check.ExitCode);
        Assert.Contains(rsa, check.Output);

        relay.Signal(SIGHUP);
        await relay.WaitForOutputAsync("reload refused", Waits.Exit);
        Assert.Contains(rsa, relay.Output);
        await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
        {
            await client.EhloAsync();
            await client.SendAcceptedAsync("alice@example.test", ["bob@elsewhere.test"], MessageText.Simple("after-reload@dkim.test"));
        }
        var delivered = await sink.WaitForMessageAsync(m => m.Header("Message-ID") == "<after-reload@dkim.test>", Waits.Delivery);
        var dkimpy = await DkimTools.DkimpyVerifyAsync(delivered.Data, _records);
        Assert.True(dkimpy.Count == 1 && dkimpy[0].Result == "pass", string.Join("; ", dkimpy));
    }

    private static async Task<byte[]> WaitForAttemptAsync(System.Collections.Concurrent.ConcurrentQueue<byte[]> attempts)
    {
        var deadline = DateTime.UtcNow + Waits.Delivery;
        while (DateTime.UtcNow < deadline)
        {
            if (attempts.TryPeek(out var data))
                return data;
            await Task.Delay(50);
        }
        throw new TimeoutException("no delivery attempt reached the sink");
    }

    private static List<string> Signatures(byte[] data)
    {
        var text = Encoding.Latin1.GetString(data);
        var header = text[..text.IndexOf("\r\n\r\n", StringComparison.Ordinal)];
        return header.Replace("\r\n ", " ").Replace("\r\n\t", "\t").Split("\r\n").Where(l => l.StartsWith("DKIM-Signature:", StringComparison.Ordinal)).ToList();
    }

    private static int CountOccurrences(string text, string what)
    {
        int n = 0;
        for (int i = text.IndexOf(what, StringComparison.Ordinal); i >= 0; i = text.IndexOf(what, i + 1, StringComparison.Ordinal))
            n++;
        return n;
    }
}
