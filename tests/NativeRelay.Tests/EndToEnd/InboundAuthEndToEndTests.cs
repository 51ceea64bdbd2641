using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using NativeRelay.Tests.Support;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

/// <summary>
/// Inbound SPF, DKIM and DMARC through the published binary: a client outside relayNetworks sends
/// to an accepted domain over loopback, the records come from the tests' DNS responder, DKIM
/// signatures are made by dkimpy, and what the sink receives is read field by field: one
/// Authentication-Results field above the Received field, forged ones with our authserv-id
/// renamed away, enforce's refusals at the end of data and at MAIL, temporary DNS failures never
/// refusing, trusted clients never checked.
/// </summary>
[Trait("Category", "EndToEnd")]
// IAsyncLifetime: xUnit 2 runs an async dispose of a test class only through it.
public sealed class InboundAuthEndToEndTests(ITestOutputHelper log) : IAsyncLifetime
{
    private const string AuthservId = "mx.relay.test";
    private readonly TempDir _dir = new("nativerelay-inbound-e2e");
    private readonly TestDnsServer _dns = new();
    private readonly TestSmtpSink _sink = new();
    private readonly RSA _key = RSA.Create(2048);

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        await _sink.DisposeAsync();
        await _dns.DisposeAsync();
        _key.Dispose();
        _dir.Dispose();
    }

    private async Task<(RelayProcess Relay, int Port)> StartAsync(string mode, bool spfRejectAtMail = false, bool trustLoopback = false,
        string quarantine = "annotate", params string[] flags)
    {
        int port = FreePort.Get();
        var config = new JsonObject
        {
            ["hostname"] = "relay.test",
            ["listen"] = new JsonArray($"127.0.0.1:{port}"),
            ["spool"] = _dir.Spool,
            ["relayTo"] = _sink.Endpoint,
            ["relayNetworks"] = trustLoopback ? new JsonArray("127.0.0.0/8") : new JsonArray(),
            ["acceptedDomains"] = new JsonArray("example.net"),
            ["routing"] = new JsonObject { ["dns"] = new JsonArray(_dns.Address) },
            ["inboundAuth"] = new JsonObject { ["mode"] = mode, ["authservId"] = AuthservId, ["spfRejectFailAtMail"] = spfRejectAtMail, ["quarantine"] = quarantine },
        };
        string path = _dir.File($"relay-{Guid.NewGuid():N}.json");
        File.WriteAllText(path, config.ToJsonString());
        var relay = await RelayProcess.StartServeAsync(["--config", path, .. flags], port, _dir.Path, log);
        return (relay, port);
    }

    /// <summary>Publishes a domain: SPF allowing (or not) 127.0.0.1, a DMARC policy, and the test's DKIM key under selector s1.</summary>
    private void Publish(string domain, string spf, string? dmarc)
    {
        _dns.Txt(domain, spf);
        if (dmarc is not null)
            _dns.Txt("_dmarc." + domain, dmarc);
        _dns.Txt("s1._domainkey." + domain, "v=DKIM1; k=rsa; p=" + Convert.ToBase64String(_key.ExportSubjectPublicKeyInfo()));
    }

    private static byte[] Message(string from, string id, string extraHeaders = "") => DkimTools.Crlf(
        $"{extraHeaders}From: <{from}>\nTo: <bob@example.net>\nSubject: inbound {id}\nDate: Mon, 07 Dec 2026 03:00:00 +0000\nMessage-ID: <{id}>\n\nHello from a stranger.\n");

    private Task<byte[]> SignAsync(byte[] message, string domain) => DkimTools.DkimpySignAsync(message, _key.ExportRSAPrivateKeyPem(), "s1", domain, "rsa-sha256");

    /// <summary>The value of the first Authentication-Results field, unfolded, split into its resinfo parts (the id first).</summary>
    private static string[] Results(ReceivedMessage message)
    {
        string text = message.DataText;
        Assert.StartsWith($"Authentication-Results: {AuthservId};", text);
        int end = text.IndexOf("\r\n", StringComparison.Ordinal);
        while (text[end + 2] is ' ' or '\t')
            end = text.IndexOf("\r\n", end + 2, StringComparison.Ordinal);
        string value = text["Authentication-Results: ".Length..end].Replace("\r\n\t", " ").Replace("\r\n ", " ");
        return value.Split(';').Select(p => p.Trim()).ToArray();
    }

    [Fact]
    public async Task Annotate_adds_one_header_above_Received_with_spf_dkim_and_dmarc_and_renames_forged_ones()
    {
        Publish("good.test", "v=spf1 ip4:127.0.0.1 -all", "v=DMARC1; p=reject");
        var (relay, port) = await StartAsync("annotate");
        using (relay)
        {
            string id = $"annotate-{Guid.NewGuid():N}@good.test";
            var forged = "Authentication-Results: mx.relay.test; dkim=pass header.d=bank.example (forged)\nAuthentication-Results: other.example; spf=pass\n";
            var signed = await SignAsync(Message("alice@good.test", id, forged), "good.test");
            await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
            {
                await client.EhloAsync("mail.good.test");
                await client.SendAcceptedAsync("alice@good.test", ["bob@example.net"], signed);
            }
            var got = await _sink.WaitForMessageAsync(m => m.Header("Message-ID") == $"<{id}>", Waits.Delivery, "the annotated message");

            var results = Results(got);
            Assert.Equal(AuthservId, results[0]);
            Assert.StartsWith("spf=pass", results[1]);
            Assert.EndsWith("smtp.mailfrom=alice@good.test", results[1]);
            Assert.StartsWith("dkim=pass header.d=good.test header.s=s1 header.a=rsa-sha256 header.b=", results[2]);
            Assert.StartsWith("dmarc=pass (p=reject", results[3]);
            Assert.EndsWith("header.from=good.test", results[3]);
            // Ours is the only one with our id, right above our Received field.
            string afterOurs = got.DataText[(got.DataText.IndexOf("\r\nReceived: ", StringComparison.Ordinal) + 2)..];
            Assert.StartsWith("Received: from mail.good.test", afterOurs);
            Assert.Single(got.DataText.Split("\r\n"), l => l.StartsWith("Authentication-Results: mx.relay.test", StringComparison.Ordinal));
            Assert.Contains("\r\nX-Removed-Auth-Results: mx.relay.test; dkim=pass header.d=bank.example (forged)\r\n", got.DataText);
            Assert.Contains("\r\nAuthentication-Results: other.example; spf=pass\r\n", got.DataText);
        }
    }

    [Fact]
    public async Task Annotate_refuses_nothing_and_a_failing_message_is_annotated_as_such()
    {
        Publish("spoofed.test", "v=spf1 -all", "v=DMARC1; p=reject");
        var (relay, port) = await StartAsync("annotate");
        using (relay)
        {
            string id = $"spoofed-{Guid.NewGuid():N}@spoofed.test";
            await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
            {
                await client.EhloAsync("bot.example");
                await client.SendAcceptedAsync("ceo@spoofed.test", ["bob@example.net"], Message("ceo@spoofed.test", id));
            }
            var got = await _sink.WaitForMessageAsync(m => m.Header("Message-ID") == $"<{id}>", Waits.Delivery, "the spoofed message");
            var results = Results(got);
            Assert.StartsWith("spf=fail", results[1]);
            Assert.Equal("dkim=none", results[2]);
            Assert.StartsWith("dmarc=fail (p=reject", results[3]);
        }
    }

    [Fact]
    public async Task Enforce_refuses_a_dmarc_reject_failure_at_the_end_of_data_and_accepts_what_passes_or_is_only_quarantined()
    {
        Publish("strict.test", "v=spf1 -all", "v=DMARC1; p=reject");
        Publish("careful.test", "v=spf1 -all", "v=DMARC1; p=quarantine");
        Publish("signed.test", "v=spf1 -all", "v=DMARC1; p=reject");
        var (relay, port) = await StartAsync("enforce");
        using (relay)
        {
            await using var client = await TestSmtpClient.ConnectAndGreetAsync(port);
            await client.EhloAsync("bot.example");

            var refused = await client.SendMessageAsync("ceo@strict.test", ["bob@example.net"], Message("ceo@strict.test", $"strict-{Guid.NewGuid():N}@x"));
            Assert.Equal(550, refused.Code);
            Assert.Contains("5.7.1", refused.ToString());
            Assert.Contains("DMARC", refused.ToString());

            // The session goes on: a quarantine policy is accepted (annotated), and DKIM alignment alone passes DMARC.
            string careful = $"careful-{Guid.NewGuid():N}@x";
            await client.SendAcceptedAsync("news@careful.test", ["bob@example.net"], Message("news@careful.test", careful));
            string signedId = $"signed-{Guid.NewGuid():N}@x";
            await client.SendAcceptedAsync("bounces@other-sender.example", ["bob@example.net"], await SignAsync(Message("news@signed.test", signedId), "signed.test"));

            var quarantined = await _sink.WaitForMessageAsync(m => m.Header("Message-ID") == $"<{careful}>", Waits.Delivery, "the quarantine-policy message");
            Assert.StartsWith("dmarc=fail (p=quarantine", Results(quarantined)[3]);
            var aligned = await _sink.WaitForMessageAsync(m => m.Header("Message-ID") == $"<{signedId}>", Waits.Delivery, "the DKIM-aligned message");
            Assert.StartsWith("dmarc=pass", Results(aligned)[3]);
            Assert.DoesNotContain(_sink.Messages, m => m.DataText.Contains("strict-"));
        }
    }

    [Fact]
    public async Task Enforce_never_refuses_on_a_temporary_dns_failure()
    {
        Publish("flaky.test", "v=spf1 -all", null);
        _dns.ServFail("_dmarc.flaky.test");
        var (relay, port) = await StartAsync("enforce");
        using (relay)
        {
            string id = $"flaky-{Guid.NewGuid():N}@x";
            await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
            {
                await client.EhloAsync("bot.example");
                await client.SendAcceptedAsync("a@flaky.test", ["bob@example.net"], Message("a@flaky.test", id));
            }
            var got = await _sink.WaitForMessageAsync(m => m.Header("Message-ID") == $"<{id}>", Waits.Delivery, "the message");
            Assert.StartsWith("dmarc=temperror", Results(got)[3]);
        }
    }

    [Fact]
    public async Task Spf_fail_is_refused_at_MAIL_when_asked_and_trusted_clients_are_never_checked()
    {
        Publish("nospf.test", "v=spf1 -all", "v=DMARC1; p=none");
        var (relay, port) = await StartAsync("enforce", spfRejectAtMail: true);
        using (relay)
        {
            await using var client = await TestSmtpClient.ConnectAndGreetAsync(port);
            await client.EhloAsync("bot.example");
            var mail = await client.CommandAsync("MAIL FROM:<x@nospf.test>");
            Assert.Equal(550, mail.Code);
            Assert.Contains("5.7.1", mail.ToString());
            // Pipelined after a refused MAIL, RCPT is out of sequence; a good sender goes on.
            Assert.Equal(503, (await client.CommandAsync("RCPT TO:<bob@example.net>")).Code);
        }

        var (trusted, trustedPort) = await StartAsync("enforce", spfRejectAtMail: true, trustLoopback: true);
        using (trusted)
        {
            string id = $"trusted-{Guid.NewGuid():N}@x";
            await using (var client = await TestSmtpClient.ConnectAndGreetAsync(trustedPort))
            {
                await client.EhloAsync("app.internal");
                await client.SendAcceptedAsync("x@nospf.test", ["bob@example.net"], Message("x@nospf.test", id));
            }
            var got = await _sink.WaitForMessageAsync(m => m.Header("Message-ID") == $"<{id}>", Waits.Delivery, "the trusted client's message");
            Assert.StartsWith("Received: ", got.DataText);
            Assert.DoesNotContain("Authentication-Results: mx.relay.test", got.DataText);
        }
    }

    [Fact]
    public async Task The_command_line_turns_the_checks_on_and_names_the_header()
    {
        Publish("cli.test", "v=spf1 ip4:127.0.0.1 -all", "v=DMARC1; p=none");
        var (relay, port) = await StartAsync("off", flags: ["--auth-check", "annotate", "--authserv-id", "edge.cli.test"]);
        using (relay)
        {
            string id = $"cli-{Guid.NewGuid():N}@x";
            await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
            {
                await client.EhloAsync("mail.cli.test");
                await client.SendAcceptedAsync("a@cli.test", ["bob@example.net"], Message("a@cli.test", id));
            }
            var got = await _sink.WaitForMessageAsync(m => m.Header("Message-ID") == $"<{id}>", Waits.Delivery, "the message");
            Assert.StartsWith("Authentication-Results: edge.cli.test;", got.DataText);
            Assert.Contains("spf=pass", got.DataText[..got.DataText.IndexOf("Received:", StringComparison.Ordinal)]);
        }
    }

    [Fact]
    public async Task A_quarantined_message_can_be_held_across_a_crash_until_an_operator_releases_it()
    {
        Publish("careful.test", "v=spf1 -all", "v=DMARC1; p=quarantine");
        var (relay, port) = await StartAsync("enforce", quarantine: "hold");
        string id = $"held-{Guid.NewGuid():N}@x";
        string queueId;
        try
        {
            await using (var client = await TestSmtpClient.ConnectAndGreetAsync(port))
            {
                await client.EhloAsync("bot.example");
                queueId = await client.SendAcceptedAsync("news@careful.test", ["bob@example.net"], Message("news@careful.test", id));
            }
            await relay.WaitForOutputAsync("held (DMARC quarantine)", Waits.Delivery);
            relay.Kill(); // acknowledged held: the hold is durable with the 250
            await relay.WaitForExitAsync(Waits.Exit);
        }
        finally
        {
            relay.Dispose();
        }
        (relay, port) = await StartAsync("enforce", quarantine: "hold");
        using (relay)
        {
            var list = await CliRun.RunAsync(["queue", "list", "--json", "--spool", _dir.Spool], [], _dir.Path, log);
            Assert.Contains($"\"id\":\"{queueId}\"", list.Stdout);
            Assert.Contains("\"held\":true", list.Stdout);
            Assert.Empty(_sink.Messages);

            var release = await CliRun.RunAsync(["queue", "release", queueId, "--spool", _dir.Spool], [], _dir.Path, log);
            Assert.True(release.ExitCode == 0, release.ToString());
            var got = await _sink.WaitForMessageAsync(m => m.Header("Message-ID") == $"<{id}>", Waits.Delivery, "the released message");
            Assert.StartsWith("dmarc=fail (p=quarantine", Results(got)[3]);
        }
    }
}
