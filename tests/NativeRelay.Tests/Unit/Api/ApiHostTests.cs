using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using NativeRelay.Api;
using NativeRelay.Config;
using NativeRelay.Hosting;
using NativeRelay.Telemetry;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit.Api;

/// <summary>The relay in process with its HTTP side: the events hook the lead wires to the events stage, and the tokens reload.</summary>
public sealed class ApiHostTests
{
    private sealed class RecordingEvents : IApiEvents
    {
        public readonly List<(ulong Id, string Sender, string Recipient, InjectionMetadata Metadata)> Receptions = [];
        public readonly List<(string Recipient, string Domain, string List)> Unsubscribes = [];

        public void Received(ulong queueId, string sender, string recipient, InjectionMetadata metadata)
        {
            lock (this)
                Receptions.Add((queueId, sender, recipient, metadata));
        }

        public void Unsubscribed(string recipient, string senderDomain, string listId)
        {
            lock (this)
                Unsubscribes.Add((recipient, senderDomain, listId));
        }
    }

    [Fact]
    public async Task Reception_and_unsubscribe_reach_the_events_hook_and_a_reload_reads_the_tokens_file_again()
    {
        using var dir = new TempDir("nativerelay-api-unit");
        await using var sink = new TestSmtpSink();
        var (token, line) = TokenStore.Create("app", [], [], null);
        File.WriteAllText(dir.File("tokens"), line + "\n");
        int smtp = FreePort.Get(), http = FreePort.Get();
        var settings = RelaySettings.Validate(new RelayOptions
        {
            Hostname = "relay.test",
            Listen = [$"127.0.0.1:{smtp}"],
            Spool = dir.Spool,
            RelayTo = sink.Endpoint,
            Http = new HttpOptions
            {
                Listen = $"127.0.0.1:{http}",
                TokensFile = dir.File("tokens"),
                Unsubscribe = new UnsubscribeOptions { Pools = ["news"], BaseUrl = "https://relay.test" },
            },
        });
        using var log = new Log(Stream.Null, LogLevel.Error);
        var events = new RecordingEvents();
        await using var host = new RelayHost(settings, log) { ApiEvents = events };
        await host.StartAsync();
        using var client = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };

        async Task<HttpResponseMessage> Post(string bearer) => await client.SendAsync(new HttpRequestMessage(HttpMethod.Post, $"http://127.0.0.1:{http}/api/v1/messages")
        {
            Headers = { Authorization = new AuthenticationHeaderValue("Bearer", bearer) },
            Content = new StringContent("""{"from":"n@example.test","recipients":[{"email":"ann@example.org"}],"subject":"s","text":"t","pool":"news","tags":["t1"],"metadata":{"k":"v"}}""",
                Encoding.UTF8, "application/json"),
        });

        var response = await Post(token);
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        var queueId = (string)JsonNode.Parse(await response.Content.ReadAsStringAsync())!["accepted"]![0]!["queue_id"]!;
        var received = Assert.Single(events.Receptions);
        Assert.Equal(queueId, received.Id.ToString("X16"));
        Assert.Equal(("n@example.test", "ann@example.org", "app", "news"), (received.Sender, received.Recipient, received.Metadata.Token, received.Metadata.Pool));
        Assert.Equal(["t1"], received.Metadata.Tags);
        Assert.Equal("v", received.Metadata.Metadata!.Value.GetProperty("k").GetString());

        var delivered = await sink.WaitForMessageAsync(m => m.Recipients.Contains("ann@example.org"), Waits.Delivery);
        var link = new Uri(delivered.Header("List-Unsubscribe")!.Trim('<', '>'));
        var unsubscribe = await client.PostAsync($"http://127.0.0.1:{http}{link.AbsolutePath}", new StringContent("List-Unsubscribe=One-Click"));
        Assert.Equal(HttpStatusCode.OK, unsubscribe.StatusCode);
        Assert.Equal(("ann@example.org", "example.test", "news"), Assert.Single(events.Unsubscribes));

        // A token added to the file works after a reload (SIGHUP), and the first one still does.
        var (second, secondLine) = TokenStore.Create("second", [], [], null);
        Assert.Equal(HttpStatusCode.Unauthorized, (await Post(second)).StatusCode);
        File.AppendAllText(dir.File("tokens"), secondLine + "\n");
        Assert.True(host.Reload());
        Assert.Equal(HttpStatusCode.UnprocessableEntity, (await Post(second)).StatusCode); // known now; Ann unsubscribed
        Assert.Equal(HttpStatusCode.Unauthorized, (await Post("nrt_unknown")).StatusCode);

        await host.StopAsync(TimeSpan.FromSeconds(5));
    }
}
