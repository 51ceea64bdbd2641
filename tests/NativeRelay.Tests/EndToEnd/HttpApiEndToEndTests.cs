using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using MimeKit;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// The HTTP API of the published binary (issue 27): tokens made with `token add`, injection over
/// HttpClient (and curl), the MIME the sink receives parsed with MimeKit, DKIM checked by dkimpy,
/// rights, bad input, idempotency, scheduled sending across a restart, one-click unsubscribe.
/// </summary>
[Trait("Category", "EndToEnd")]
[System.Runtime.Versioning.SupportedOSPlatform("linux")]
// IAsyncLifetime, not IAsyncDisposable: xUnit 2 disposes a test class asynchronously only through
// IAsyncLifetime, and a relay left running by each test outlives the run.
public sealed class HttpApiEndToEndTests(ITestOutputHelper log) : IAsyncLifetime
{
    private readonly TempDir _dir = new("nativerelay-http-e2e");
    private readonly TestSmtpSink _sink = new();
    private readonly Dictionary<string, string> _records = new(StringComparer.OrdinalIgnoreCase);
    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(60) };
    private RelayProcess? _relay;
    private int _smtpPort;
    private int _httpPort;
    private string? _config;

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        _relay?.Dispose();
        _http.Dispose();
        await _sink.DisposeAsync();
        _dir.Dispose();
    }

    private string TokensFile => _dir.File("tokens");
    private string Api => $"http://127.0.0.1:{_httpPort}/api/v1/messages";

    /// <summary>`nativerelay token add`: the token is printed once on stdout; the file keeps only its hash.</summary>
    private async Task<string> AddTokenAsync(string name, params string[] extra)
    {
        var run = await RelayProcess.RunToExitAsync(["token", "add", name, "--file", TokensFile, .. extra], _dir.Path, log);
        Assert.True(run.ExitCode == 0, run.Output);
        var token = Assert.Single(run.StdoutLines, l => l.Length > 0);
        Assert.StartsWith("nrt_", token);
        Assert.DoesNotContain(token, File.ReadAllText(TokensFile));
        Assert.DoesNotContain(token, string.Join("\n", run.StderrLines));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(TokensFile));
        return token;
    }

    private async Task StartAsync(JsonObject? http = null, JsonObject? dkim = null, TestCertificate? tls = null, JsonObject? events = null,
        JsonObject? traffic = null)
    {
        _smtpPort = FreePort.Get();
        _httpPort = FreePort.Get();
        var httpSection = http ?? new JsonObject();
        httpSection["listen"] = $"127.0.0.1:{_httpPort}";
        httpSection["tokensFile"] = TokensFile;
        var config = new JsonObject
        {
            ["hostname"] = "relay.test",
            ["listen"] = new JsonArray($"127.0.0.1:{_smtpPort}"),
            ["spool"] = _dir.Spool,
            ["relayTo"] = _sink.Endpoint,
            ["delivery"] = new JsonObject { ["retryInitialSeconds"] = 1, ["retryMaxSeconds"] = 2 },
            ["http"] = httpSection,
        };
        if (dkim is not null)
            config["dkim"] = dkim;
        if (events is not null)
            config["events"] = events;
        if (traffic is not null)
            config["traffic"] = traffic;
        if (tls is not null)
            config["tls"] = new JsonObject { ["certificate"] = tls.CertificatePath, ["key"] = tls.KeyPath };
        _config = _dir.File("relay.json");
        File.WriteAllText(_config, config.ToJsonString());
        _relay = await RelayProcess.StartServeAsync(["--config", _config], _smtpPort, _dir.Path, log);
        await _relay.WaitForOutputAsync($"http API on {(tls is null ? "http" : "https")}://127.0.0.1:{_httpPort}/api/v1/messages", Waits.Exit);
    }

    /// <summary>Same spool, same ports: kill -9, then start again.</summary>
    private async Task RestartAsync()
    {
        _relay!.Kill();
        _relay.Dispose();
        _relay = await RelayProcess.StartServeAsync(["--config", _config!], _smtpPort, _dir.Path, log);
        await _relay.WaitForOutputAsync("http API on", Waits.Exit);
    }

    private async Task<(HttpStatusCode Status, JsonObject Body, HttpResponseMessage Response)> PostAsync(string? token, string json)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, Api) { Content = new StringContent(json, Encoding.UTF8, "application/json") };
        if (token is not null)
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        // As a careful client does: a body the server refuses by its Content-Length (413) is then never sent,
        // instead of the server closing the connection under a body still being written.
        request.Headers.ExpectContinue = json.Length > 64 * 1024;
        var response = await _http.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        log.WriteLine($"{(int)response.StatusCode} {text}");
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        return (response.StatusCode, JsonNode.Parse(text)!.AsObject(), response);
    }

    private async Task<string> KeygenAsync(string domain, string selector)
    {
        var run = await RelayProcess.RunToExitAsync(["dkim", "keygen", "--domain", domain, "--selector", selector, "--algorithm", "rsa", "--out", _dir.File("keys")], _dir.Path, log);
        Assert.True(run.ExitCode == 0, run.Output);
        var line = Assert.Single(run.StdoutLines, l => l.Contains("IN TXT"));
        _records[$"{selector}._domainkey.{domain}"] = string.Concat(line[line.IndexOf('"')..].Split('"').Where((_, i) => i % 2 == 1));
        return _dir.File($"keys/{selector}.{domain}.pem");
    }

    private static MimeMessage Parse(ReceivedMessage m) => MimeMessage.Load(new MemoryStream(m.Data));

    [Fact]
    public async Task An_injection_is_built_into_correct_MIME_signed_with_signed_unsubscribe_headers_and_delivered()
    {
        var key = await KeygenAsync("example.test", "s1");
        var token = await AddTokenAsync("newsletter", "--pools", "news", "--sender-domains", "example.test");
        await StartAsync(
            new JsonObject { ["unsubscribe"] = new JsonObject { ["pools"] = new JsonArray("news"), ["baseUrl"] = "https://relay.test", ["mailto"] = "unsub@example.test" } },
            new JsonObject { ["keys"] = new JsonArray(new JsonObject { ["domain"] = "example.test", ["selector"] = "s1", ["keyFile"] = key }) });

        var pdf = new byte[3000];
        new Random(7).NextBytes(pdf);
        var body = new JsonObject
        {
            ["from"] = "news@example.test",
            ["recipients"] = new JsonArray(
                new JsonObject { ["email"] = "ann@example.org", ["name"] = "Ann Ünal", ["substitutions"] = new JsonObject { ["first"] = "Ann", ["offer"] = "<b>20%</b> & more" } },
                new JsonObject { ["email"] = "bob@example.org", ["substitutions"] = new JsonObject { ["first"] = "Bob" } },
                new JsonObject { ["email"] = "not an address" }),
            ["subject"] = "Grüße, {{ first }}!",
            ["text"] = "Hello {{first}},\n" + new string('x', 2000) + "\nbye",
            ["html"] = "<p>Hi {{ first }}: {{ offer }}</p>",
            ["headers"] = new JsonObject { ["X-Campaign"] = "c1" },
            ["attachments"] = new JsonArray(new JsonObject { ["filename"] = "a.pdf", ["content_type"] = "application/pdf", ["data"] = Convert.ToBase64String(pdf) }),
            ["pool"] = "news",
            ["tags"] = new JsonArray("t1"),
            ["metadata"] = new JsonObject { ["k"] = "v" },
        };
        var (status, answer, _) = await PostAsync(token, body.ToJsonString());
        Assert.Equal(HttpStatusCode.Accepted, status);
        var accepted = answer["accepted"]!.AsArray();
        Assert.Single(accepted); // Ann; Bob has no "offer" and the third is not an address
        Assert.Equal("ann@example.org", (string?)accepted[0]!["email"]);
        Assert.Matches("^[0-9A-F]{16}$", (string?)accepted[0]!["queue_id"]);
        var rejected = answer["rejected"]!.AsArray();
        Assert.Contains(rejected, r => (string?)r!["email"] == "bob@example.org" && ((string?)r["error"])!.Contains("{{ offer }}"));
        Assert.Contains(rejected, r => (string?)r!["email"] == "not an address" && ((string?)r["error"])!.StartsWith("invalid address"));

        var delivered = await _sink.WaitForMessageAsync(m => m.Recipients.Contains("ann@example.org"), Waits.Delivery);
        Assert.Equal("news@example.test", delivered.MailFrom);
        Assert.All(delivered.DataText.Split("\r\n"), line => Assert.True(line.Length <= 998));
        Assert.True(delivered.Data.All(b => b < 0x80), "7-bit on the wire");
        var mime = Parse(delivered);
        Assert.Equal("Grüße, Ann!", mime.Subject);
        Assert.Contains("=?utf-8?", delivered.DataText.Split("\r\n").First(l => l.StartsWith("Subject:")), StringComparison.OrdinalIgnoreCase);
        var to = Assert.IsType<MailboxAddress>(Assert.Single(mime.To));
        Assert.Equal(("Ann Ünal", "ann@example.org"), (to.Name, to.Address));
        Assert.StartsWith("Hello Ann,", mime.TextBody);
        Assert.Equal("<p>Hi Ann: &lt;b&gt;20%&lt;/b&gt; &amp; more</p>", mime.HtmlBody!.Trim());
        var attachment = Assert.IsType<MimeKit.MimePart>(Assert.Single(mime.Attachments));
        Assert.Equal("a.pdf", attachment.FileName);
        Assert.Equal(ContentEncoding.Base64, attachment.ContentTransferEncoding);
        using (var data = new MemoryStream())
        {
            attachment.Content!.DecodeTo(data);
            Assert.Equal(pdf, data.ToArray());
        }
        Assert.Equal("c1", mime.Headers["X-Campaign"]);
        var received = mime.Headers.First(h => h.Id == HeaderId.Received).Value;
        Assert.Contains("(token newsletter)", received);
        Assert.Contains("with HTTP id " + (string?)accepted[0]!["queue_id"], received);
        Assert.DoesNotContain(token, delivered.DataText);

        var listUnsubscribe = mime.Headers["List-Unsubscribe"];
        Assert.Matches(@"^<https://relay\.test/u/[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+>,\s*<mailto:unsub@example\.test\?subject=unsubscribe>$", listUnsubscribe!.Replace("\r\n", ""));
        Assert.Equal("List-Unsubscribe=One-Click", mime.Headers["List-Unsubscribe-Post"]);
        var signature = mime.Headers["DKIM-Signature"];
        Assert.Matches(@"h=[^;]*list-unsubscribe:[^;]*list-unsubscribe-post", signature!.Replace("\r\n", "").Replace(" ", "").ToLowerInvariant());
        var dkim = await DkimTools.DkimpyVerifyAsync(delivered.Data, _records);
        Assert.True(dkim.Count == 1 && dkim[0].Result == "pass", $"dkimpy: {string.Join("; ", dkim)}");
        Assert.DoesNotContain(_relay!.StdoutLines, l => l.Contains(token));
    }

    [Fact]
    public async Task Tokens_no_token_an_unknown_one_and_one_outside_its_rights_get_401_and_403_with_JSON()
    {
        var token = await AddTokenAsync("billing", "--pools", "tx", "--sender-domains", "bills.example.test");
        await StartAsync();
        const string Body = """{"from":"a@bills.example.test","recipients":[{"email":"x@example.org"}],"subject":"s","text":"t","pool":"tx"}""";

        var (none, noneBody, noneResponse) = await PostAsync(null, Body);
        Assert.Equal(HttpStatusCode.Unauthorized, none);
        Assert.Contains("Bearer", noneResponse.Headers.WwwAuthenticate.ToString());
        Assert.Contains("no token", (string?)noneBody["error"]);
        var (bad, badBody, _) = await PostAsync("nrt_" + new string('A', 43), Body);
        Assert.Equal(HttpStatusCode.Unauthorized, bad);
        Assert.Equal("unknown token", (string?)badBody["error"]);

        var (domain, domainBody, _) = await PostAsync(token, Body.Replace("a@bills.example.test", "a@other.test"));
        Assert.Equal(HttpStatusCode.Forbidden, domain);
        Assert.Equal("$.from", (string?)domainBody["field"]);
        var (pool, poolBody, _) = await PostAsync(token, Body.Replace("\"tx\"", "\"marketing\""));
        Assert.Equal(HttpStatusCode.Forbidden, pool);
        Assert.Contains("pool 'marketing'", (string?)poolBody["error"]);
        var raw = """{"from":"a@bills.example.test","recipients":[{"email":"x@example.org"}],"raw":"From: a@other.test\r\nSubject: s\r\n\r\nbody\r\n","pool":"tx"}""";
        var (rawStatus, _, _) = await PostAsync(token, raw);
        Assert.Equal(HttpStatusCode.Forbidden, rawStatus);

        var (ok, _, _) = await PostAsync(token, Body);
        Assert.Equal(HttpStatusCode.Accepted, ok);
        await _sink.WaitForCountAsync(1, Waits.Delivery);
        Assert.Single(_sink.Messages);

        // A second token added to the file works after SIGHUP, without a restart.
        var second = await AddTokenAsync("second");
        Assert.Equal(HttpStatusCode.Unauthorized, (await PostAsync(second, Body)).Status);
        _relay!.Signal(1);
        await _relay.WaitForOutputAsync("reloaded API tokens", Waits.Exit);
        Assert.Equal(HttpStatusCode.Accepted, (await PostAsync(second, Body)).Status);
        Assert.DoesNotContain(_relay.StdoutLines, l => l.Contains(token) || l.Contains(second));
    }

    [Fact]
    public async Task A_token_over_its_request_rate_gets_429_with_Retry_After_and_another_token_is_not_slowed()
    {
        var slow = await AddTokenAsync("slow", "--rate", "1");
        var free = await AddTokenAsync("free", "--rate", "0");
        await StartAsync();
        const string Body = """{"from":"a@example.test","recipients":[{"email":"x@example.org"}],"subject":"s","text":"t"}""";
        // Eight at once with a rate of one a second: the bucket holds one, so most are refused.
        var answers = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => PostAsync(slow, Body)));
        Assert.Contains(answers, a => a.Status == HttpStatusCode.Accepted);
        var limited = answers.Where(a => a.Status == HttpStatusCode.TooManyRequests).ToList();
        Assert.NotEmpty(limited);
        Assert.All(limited, a => Assert.True(a.Response.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1)));
        Assert.All(limited, a => Assert.Contains("over its rate", (string?)a.Body["error"]));
        var unlimited = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => PostAsync(free, Body)));
        Assert.All(unlimited, a => Assert.Equal(HttpStatusCode.Accepted, a.Status));
    }

    [Fact]
    public async Task Blast_over_http_injects_every_recipient_and_reports_them()
    {
        var token = await AddTokenAsync("blast");
        await StartAsync();
        File.WriteAllText(_dir.File("token"), token + "\n");
        var run = await RelayProcess.RunToExitAsync(["blast", "--http", Api, "--token-file", _dir.File("token"), "--messages", "6", "--sessions", "3",
            "--recipients", "10", "--size", "1024", "--json", "--quiet"], _dir.Path, log);
        Assert.True(run.ExitCode == 0, run.Output);
        var result = JsonNode.Parse(Assert.Single(run.StdoutLines, l => l.StartsWith('{')))!;
        Assert.Equal(6, (long)result["requests"]!);
        Assert.Equal(60, (long)result["accepted"]!);
        Assert.Equal(0, (long)result["failed"]!);
        await _sink.WaitForCountAsync(60, Waits.Delivery);
        Assert.Equal(10, _sink.Messages.Select(m => m.Recipients.Single()).Distinct().Count());
        Assert.All(_sink.Messages, m => Assert.InRange(m.Data.Length, 900, 1200));
    }

    [Fact]
    public async Task Bad_input_gets_400_413_or_422_with_a_precise_error_and_queues_nothing()
    {
        var token = await AddTokenAsync("app");
        await StartAsync(new JsonObject { ["maxRequestBytes"] = 1_000_000 });
        string Message(string recipients = """[{"email":"x@example.org"}]""", string extra = "") =>
            $$"""{"from":"a@example.test","recipients":{{recipients}},"subject":"s","text":"t"{{extra}}}""";

        var cases = new (string Body, HttpStatusCode Status, string Error, string? Field)[]
        {
            ("this is not json", HttpStatusCode.BadRequest, "the body is not JSON (line 1, byte ", null),
            ("""{"from":"a@example.test","recipients":"x@example.org","text":"t"}""", HttpStatusCode.BadRequest, "wrong type at $.recipients: expected an array of recipient objects", "$.recipients"),
            ("""{"from":42,"recipients":[{"email":"x@example.org"}],"text":"t"}""", HttpStatusCode.BadRequest, "wrong type at $.from: expected a string", "$.from"),
            (Message(extra: ""","frm":"x" """), HttpStatusCode.BadRequest, "unknown field $.frm", "$.frm"),
            ("[1,2]", HttpStatusCode.BadRequest, "an object was expected", "$"),
            (Message(recipients: """[{"email":"x@@example.org"}]"""), HttpStatusCode.UnprocessableEntity, "invalid address", null),
            (Message().Replace("a@example.test", "a@exa mple.test"), HttpStatusCode.UnprocessableEntity, "from:", "$.from"),
            (Message(extra: ""","headers":{"X-Evil":"v\r\nBcc: victim@example.org"}"""), HttpStatusCode.UnprocessableEntity, "header injection", "$.headers['X-Evil']"),
            (Message().Replace("\"subject\":\"s\"", "\"subject\":\"s\\r\\nBcc: v@example.org\""), HttpStatusCode.UnprocessableEntity, "header injection", "$.subject"),
            (Message(recipients: "[" + string.Join(",", Enumerable.Range(0, 10_000).Select(i => $$"""{"email":"r{{i}}@example.org"}""")) + "]"),
                HttpStatusCode.UnprocessableEntity, "10000 recipients; at most 1000", "$.recipients"),
            (Message(extra: ",\"attachments\":[{\"filename\":\"big\",\"data\":\"" + new string('A', 1_200_000) + "\"}]"), HttpStatusCode.RequestEntityTooLarge, "maxRequestBytes", null),
            (Message(extra: ""","deliver_after":"tomorrow" """), HttpStatusCode.UnprocessableEntity, "deliver_after", "$.deliver_after"),
            (Message(extra: ""","attachments":[{"filename":"a","data":"%%%"}]"""), HttpStatusCode.UnprocessableEntity, "base64", "$.attachments[0].data"),
        };
        foreach (var (body, expected, error, field) in cases)
        {
            var (status, answer, _) = await PostAsync(token, body);
            Assert.True(expected == status, $"{body[..Math.Min(120, body.Length)]}: {(int)status} {answer}");
            var text = (string?)answer["error"] ?? "";
            Assert.True(text.Contains(error), $"{body[..Math.Min(120, body.Length)]}: '{text}' lacks '{error}'");
            if (field is not null)
                Assert.Equal(field, (string?)answer["field"]);
        }
        // Nothing was queued by any of them, and the relay still serves: one good request goes through.
        var (ok, okBody, _) = await PostAsync(token, Message());
        Assert.Equal(HttpStatusCode.Accepted, ok);
        var id = (string)okBody["accepted"]![0]!["queue_id"]!;
        await _relay!.WaitForOutputAsync($"{id}: queued from=", Waits.Exit);
        var delivered = await _sink.WaitForMessageAsync(_ => true, Waits.Delivery);
        Assert.Single(_relay.StdoutLines, l => l.Contains(": queued from=")); // that one only
        Assert.Equal(["x@example.org"], delivered.Recipients);
        Assert.Single(_sink.Messages);
    }

    [Fact]
    public async Task A_retried_idempotency_key_creates_nothing_new_and_returns_the_first_answer_across_a_restart()
    {
        var token = await AddTokenAsync("app");
        var other = await AddTokenAsync("other");
        await StartAsync();
        var body = """{"from":"a@example.test","recipients":[{"email":"x@example.org"},{"email":"y@example.org"}],"subject":"s","text":"t","idempotency_key":"order-42"}""";

        var (first, firstBody, _) = await PostAsync(token, body);
        Assert.Equal(HttpStatusCode.Accepted, first);
        var (again, againBody, againResponse) = await PostAsync(token, body);
        Assert.Equal(HttpStatusCode.Accepted, again);
        Assert.Equal(firstBody.ToJsonString(), againBody.ToJsonString());
        Assert.True(againResponse.Headers.Contains("Idempotent-Replayed"));
        await _sink.WaitForCountAsync(2, Waits.Delivery);

        await RestartAsync();
        var (afterRestart, afterBody, _) = await PostAsync(token, body);
        Assert.Equal(HttpStatusCode.Accepted, afterRestart);
        Assert.Equal(firstBody.ToJsonString(), afterBody.ToJsonString());
        // Keys are per token: the same key from another token is a new request.
        var (otherStatus, otherBody, _) = await PostAsync(other, body);
        Assert.Equal(HttpStatusCode.Accepted, otherStatus);
        Assert.NotEqual(firstBody["accepted"]![0]!["queue_id"]!.ToString(), otherBody["accepted"]![0]!["queue_id"]!.ToString());
        // Four messages, each at least once (kill -9 may repeat a delivery whose status was not yet committed).
        int Distinct() => _sink.Messages.Select(m => m.Header("Message-ID")).Distinct().Count();
        await _sink.WaitUntilAsync(() => Distinct() >= 4, Waits.Delivery, "four distinct messages");
        Assert.Equal(4, Distinct());
        foreach (var r in otherBody["accepted"]!.AsArray())
            await _relay!.WaitForOutputAsync($"{(string)r!["queue_id"]!}: queued from=", Waits.Exit);
        Assert.Equal(2, _relay!.StdoutLines.Count(l => l.Contains(": queued from="))); // the restarted relay queued only other's two
    }

    [Fact]
    public async Task Deliver_after_is_kept_across_a_restart_and_not_sent_before_its_time()
    {
        var token = await AddTokenAsync("app");
        await StartAsync();
        var after = DateTimeOffset.UtcNow.AddSeconds(6);
        var body = $$"""{"from":"a@example.test","recipients":[{"email":"later@example.org"}],"subject":"s","text":"t","deliver_after":"{{after.UtcDateTime:yyyy-MM-ddTHH:mm:ss.fffZ}}"}""";
        var (status, _, _) = await PostAsync(token, body);
        Assert.Equal(HttpStatusCode.Accepted, status);

        await RestartAsync();
        Assert.Empty(_sink.Messages);
        await _sink.WaitForMessageAsync(m => m.Recipients.Contains("later@example.org"), Waits.Delivery);
        Assert.True(DateTimeOffset.UtcNow >= after, "delivered before deliver_after");
    }

    [Fact]
    public async Task Curl_posts_a_raw_message_over_HTTPS_with_the_relays_certificate_in_HTTP_1_1_chunked_and_HTTP_2()
    {
        var token = await AddTokenAsync("app");
        var certificate = TestCertificate.Create(_dir.Path, "server", "relay.test");
        await StartAsync(new JsonObject { ["tls"] = true }, tls: certificate);
        var headerFile = _dir.File("curl-header");
        File.WriteAllText(headerFile, $"Authorization: Bearer {token}\n"); // a header file: the token is not on curl's command line
        // HTTP/1.1 with a Content-Length, HTTP/1.1 with a chunked body, HTTP/2 (ALPN).
        foreach (var (flag, id, version, chunked) in new[] { ("--http1.1", "curl1@test", "1.1", false), ("--http1.1", "curl3@test", "1.1", true), ("--http2", "curl2@test", "2", false) })
        {
            var json = JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["from"] = "a@example.test",
                ["recipients"] = new[] { new Dictionary<string, string> { ["email"] = "raw@example.org" } },
                ["raw"] = $"From: A <a@example.test>\r\nTo: raw@example.org\r\nSubject: raw\r\nMessage-ID: <{id}>\r\n\r\nraw body\r\n",
            });
            File.WriteAllText(_dir.File("body.json"), json);
            var curl = await ExternalTool.RunAsync("curl", ["-sS", flag, "--cacert", certificate.CertificatePath, "--resolve", $"relay.test:{_httpPort}:127.0.0.1",
                "-w", "\n%{http_code} %{http_version}", "-H", $"@{headerFile}", "-H", "Content-Type: application/json", "-H", chunked ? "Transfer-Encoding: chunked" : "X-Plain: 1",
                "--data-binary", $"@{_dir.File("body.json")}", $"https://relay.test:{_httpPort}/api/v1/messages"], TimeSpan.FromSeconds(60));
            Assert.True(curl.ExitCode == 0, curl.ToString());
            var lines = curl.Stdout.Trim().Split('\n');
            Assert.Equal($"202 {version}", lines[^1]);
            Assert.Contains("\"queue_id\"", lines[0]);
            var m = await _sink.WaitForMessageAsync(x => x.Header("Message-ID") == $"<{id}>", Waits.Delivery);
            Assert.Contains("raw body", m.DataText);
            Assert.Contains("(token app)", m.DataText);
            Assert.Contains("with HTTPS id", m.DataText);
        }
        // Plain HTTP is not served on the TLS port.
        var plain = await ExternalTool.RunAsync("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", $"http://127.0.0.1:{_httpPort}/api/v1/messages"], TimeSpan.FromSeconds(30));
        Assert.NotEqual("202", plain.Stdout.Trim());
    }

    [Fact]
    public async Task One_click_unsubscribe_round_trip_refuses_the_next_message_and_a_forged_link_changes_nothing()
    {
        var token = await AddTokenAsync("news");
        await StartAsync(new JsonObject { ["unsubscribe"] = new JsonObject { ["pools"] = new JsonArray("news"), ["baseUrl"] = "https://relay.test" } });
        var body = """{"from":"n@example.test","recipients":[{"email":"ann@example.org"},{"email":"bob@example.org"}],"subject":"s","text":"t","pool":"news"}""";
        Assert.Equal(HttpStatusCode.Accepted, (await PostAsync(token, body)).Status);
        var ann = await _sink.WaitForMessageAsync(m => m.Recipients.Contains("ann@example.org"), Waits.Delivery);
        var bob = await _sink.WaitForMessageAsync(m => m.Recipients.Contains("bob@example.org"), Waits.Delivery);
        string Path(ReceivedMessage m) => new Uri(Parse(m).Headers["List-Unsubscribe"]!.Trim().Trim('<', '>')).AbsolutePath;
        var annPath = Path(ann);
        Assert.NotEqual(annPath, Path(bob));
        var local = $"http://127.0.0.1:{_httpPort}";

        // Forged: Ann's payload with Bob's signature, and a truncated token.
        var forged = annPath.Split('.')[0] + "." + Path(bob).Split('.')[1];
        Assert.Equal(HttpStatusCode.NotFound, (await _http.PostAsync(local + forged, new StringContent("List-Unsubscribe=One-Click"))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await _http.PostAsync(local + annPath[..^3], new StringContent("List-Unsubscribe=One-Click"))).StatusCode);

        var page = await _http.GetAsync(local + annPath);
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Contains("ann@example.org", await page.Content.ReadAsStringAsync());
        // GET alone changes nothing (mail scanners follow links).
        Assert.Equal(HttpStatusCode.Accepted, (await PostAsync(token, body.Replace("{\"email\":\"bob@example.org\"},", "").Replace(",{\"email\":\"bob@example.org\"}", ""))).Status);

        var post = await _http.PostAsync(local + annPath, new FormUrlEncodedContent([new("List-Unsubscribe", "One-Click")]));
        Assert.Equal(HttpStatusCode.OK, post.StatusCode);
        Assert.Equal("", await post.Content.ReadAsStringAsync());

        var (status, answer, _) = await PostAsync(token, body);
        Assert.Equal(HttpStatusCode.Accepted, status);
        Assert.Equal("bob@example.org", (string?)Assert.Single(answer["accepted"]!.AsArray())!["email"]);
        var refused = Assert.Single(answer["rejected"]!.AsArray())!;
        Assert.Equal("ann@example.org", (string?)refused["email"]);
        Assert.StartsWith("suppressed", (string?)refused["error"]);
        // Durable: still refused after a restart.
        await RestartAsync();
        var (onlyAnn, onlyAnnBody, _) = await PostAsync(token, """{"from":"n@example.test","recipients":[{"email":"ann@example.org"}],"subject":"s","text":"t","pool":"news"}""");
        Assert.Equal(HttpStatusCode.UnprocessableEntity, onlyAnn);
        Assert.StartsWith("suppressed", (string?)onlyAnnBody["rejected"]![0]!["error"]);
    }

    [Fact]
    public async Task A_pool_scoped_suppression_refuses_injection_into_that_pool_and_no_other()
    {
        var token = await AddTokenAsync("mixed");
        await StartAsync();
        var add = await CliRun.RunAsync(["suppress", "add", "carol@example.org", "--scope", "pool:news", "--reason", "complained", "--spool", _dir.Spool], [], _dir.Path, log);
        Assert.True(add.ExitCode == 0, add.ToString());
        string Body(string pool) => $$"""{"from":"n@example.test","recipients":[{"email":"carol@example.org"},{"email":"dan@example.org"}],"subject":"s","text":"t","pool":"{{pool}}"}""";

        // In the pool the entry names, Carol is refused at injection (not only at delivery), Dan is not.
        var (status, answer, _) = await PostAsync(token, Body("news"));
        Assert.Equal(HttpStatusCode.Accepted, status);
        Assert.Equal("dan@example.org", (string?)Assert.Single(answer["accepted"]!.AsArray())!["email"]);
        var refused = Assert.Single(answer["rejected"]!.AsArray())!;
        Assert.Equal("carol@example.org", (string?)refused["email"]);
        Assert.Equal("suppressed: carol@example.org is on this relay's suppression list for mail from example.test", (string?)refused["error"]);

        // Another pool: both are taken.
        var (otherStatus, other, _) = await PostAsync(token, Body("other"));
        Assert.Equal(HttpStatusCode.Accepted, otherStatus);
        Assert.Equal(2, other["accepted"]!.AsArray().Count);
        Assert.Null(other["rejected"] is JsonArray r && r.Count > 0 ? r : null);
    }

    [Fact]
    public async Task Injected_messages_carry_their_pool_tags_and_metadata_into_every_event_and_an_unsubscribe_is_an_event()
    {
        const string secret = "webhook-secret-for-the-api-test";
        File.WriteAllText(_dir.File("hook.secret"), secret);
        using var receiver = new WebhookReceiver(secret).Start();
        var token = await AddTokenAsync("news");
        await StartAsync(
            new JsonObject { ["unsubscribe"] = new JsonObject { ["pools"] = new JsonArray("news"), ["baseUrl"] = "https://relay.test" } },
            events: new JsonObject { ["webhooks"] = new JsonArray(new JsonObject { ["name"] = "app", ["url"] = receiver.Url, ["secretFile"] = _dir.File("hook.secret") }) });
        var (status, answer, _) = await PostAsync(token,
            """{"from":"n@example.test","recipients":[{"email":"ann@example.org"}],"subject":"s","text":"t","pool":"news","tags":["welcome","t2"],"metadata":{"customer":"c-42","n":7}}""");
        Assert.Equal(HttpStatusCode.Accepted, status);
        string queueId = (string)answer["accepted"]![0]!["queue_id"]!;
        var ann = await _sink.WaitForMessageAsync(m => m.Recipients.Contains("ann@example.org"), Waits.Delivery);

        var events = await receiver.WaitForAsync(e => e.Any(x => x.Type() == "reception" && x.Str("queue_id") == queueId)
                                                      && e.Any(x => x.Type() == "delivery" && x.Str("queue_id") == queueId),
            Waits.Delivery, "the injected message's reception and delivery events");
        foreach (var e in events.Where(x => x.Str("queue_id") == queueId))
        {
            Assert.Equal("news", e.Str("pool"));
            Assert.Equal(["welcome", "t2"], e.GetProperty("tags").EnumerateArray().Select(t => t.GetString()));
            var metadata = e.GetProperty("metadata");
            Assert.Equal("c-42", metadata.GetProperty("customer").GetString());
            Assert.Equal(7, metadata.GetProperty("n").GetInt32());
        }
        // One reception only: the API's and the spool intake's are the same event.
        Assert.Single(events, x => x.Type() == "reception" && x.Str("queue_id") == queueId);

        string path = new Uri(Parse(ann).Headers["List-Unsubscribe"]!.Trim().Trim('<', '>')).AbsolutePath;
        var post = await _http.PostAsync($"http://127.0.0.1:{_httpPort}{path}", new FormUrlEncodedContent([new("List-Unsubscribe", "One-Click")]));
        Assert.Equal(HttpStatusCode.OK, post.StatusCode);
        var all = await receiver.WaitForAsync(e => e.Any(x => x.Type() == "unsubscribe"), Waits.Delivery, "the unsubscribe event");
        var unsubscribe = all.Single(x => x.Type() == "unsubscribe");
        Assert.Equal("ann@example.org", unsubscribe.Str("recipient"));
        Assert.Equal("example.test", unsubscribe.Str("sender_domain"));
        Assert.All(receiver.Posts, p => Assert.True(p.SignatureValid));

        // The unsubscribe is in the suppression list: SMTP mail from that sender domain is refused at RCPT too.
        await using var smtp = await TestSmtpClient.ConnectAndGreetAsync(_smtpPort);
        await smtp.EhloAsync();
        Assert.Equal(250, (await smtp.CommandAsync("MAIL FROM:<other@example.test>")).Code);
        var refused = await smtp.CommandAsync("RCPT TO:<ann@example.org>");
        Assert.Equal(550, refused.Code);
        Assert.Contains("5.7.1", refused.ToString());
        Assert.Equal(250, (await smtp.CommandAsync("RCPT TO:<bob@example.org>")).Code);
    }

    [Fact]
    public async Task An_injections_pool_picks_its_egress_source_and_the_events_name_pool_source_and_site()
    {
        const string secret = "webhook-secret-for-the-pool-test";
        File.WriteAllText(_dir.File("hook.secret"), secret);
        using var receiver = new WebhookReceiver(secret).Start();
        var token = await AddTokenAsync("news");
        await StartAsync(
            events: new JsonObject { ["webhooks"] = new JsonArray(new JsonObject { ["name"] = "app", ["url"] = receiver.Url, ["secretFile"] = _dir.File("hook.secret") }) },
            traffic: new JsonObject
            {
                ["sources"] = new JsonObject
                {
                    ["ip2"] = new JsonObject { ["address"] = "127.0.0.2", ["ehlo"] = "ip2.relay.test" },
                    ["ip3"] = new JsonObject { ["address"] = "127.0.0.3", ["ehlo"] = "ip3.relay.test" },
                },
                ["pools"] = new JsonObject
                {
                    ["bulk"] = new JsonObject { ["sources"] = new JsonObject { ["ip2"] = 1 } },
                    ["transactional"] = new JsonObject { ["sources"] = new JsonObject { ["ip3"] = 1 } },
                },
            });

        // A pool traffic control does not know is refused, and nothing is queued.
        var (unknown, unknownBody, _) = await PostAsync(token, """{"from":"n@example.test","recipients":[{"email":"x@example.org"}],"subject":"s","text":"t","pool":"nosuch"}""");
        Assert.Equal(HttpStatusCode.UnprocessableEntity, unknown);
        Assert.Contains("nosuch", (string?)unknownBody["error"]);

        var (status, answer, _) = await PostAsync(token, """{"from":"n@example.test","recipients":[{"email":"bulk@example.org"}],"subject":"s","text":"t","pool":"bulk"}""");
        Assert.Equal(HttpStatusCode.Accepted, status);
        string bulkId = (string)answer["accepted"]![0]!["queue_id"]!;
        (status, answer, _) = await PostAsync(token, """{"from":"n@example.test","recipients":[{"email":"tx@example.org"}],"subject":"s","text":"t","pool":"transactional"}""");
        Assert.Equal(HttpStatusCode.Accepted, status);
        string txId = (string)answer["accepted"]![0]!["queue_id"]!;

        var bulk = await _sink.WaitForMessageAsync(m => m.Recipients.Contains("bulk@example.org"), Waits.Delivery);
        var tx = await _sink.WaitForMessageAsync(m => m.Recipients.Contains("tx@example.org"), Waits.Delivery);
        Assert.Equal("127.0.0.2", bulk.PeerAddress);
        Assert.Equal("ip2.relay.test", bulk.HeloName);
        Assert.Equal("127.0.0.3", tx.PeerAddress);
        Assert.Equal("ip3.relay.test", tx.HeloName);

        var events = await receiver.WaitForAsync(e => e.Count(x => x.Type() == "delivery") >= 2, Waits.Delivery, "both deliveries");
        var bulkDelivery = events.Single(x => x.Type() == "delivery" && x.Str("queue_id") == bulkId);
        Assert.Equal("bulk", bulkDelivery.Str("pool"));
        Assert.Equal("ip2", bulkDelivery.Str("source"));
        Assert.False(string.IsNullOrEmpty(bulkDelivery.Str("site")));
        var txDelivery = events.Single(x => x.Type() == "delivery" && x.Str("queue_id") == txId);
        Assert.Equal("transactional", txDelivery.Str("pool"));
        Assert.Equal("ip3", txDelivery.Str("source"));
        Assert.Equal("bulk", events.Single(x => x.Type() == "reception" && x.Str("queue_id") == bulkId).Str("pool"));
    }
}
