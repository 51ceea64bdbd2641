using System.Net.Sockets;
using System.Text;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>The relay binary's Prometheus endpoint (serve --metrics IP:PORT).</summary>
[Trait("Category", "EndToEnd")]
public sealed class MetricsEndpointTests(ITestOutputHelper log)
{
    [Fact]
    public async Task Serve_with_metrics_answers_get_metrics_and_404_elsewhere()
    {
        using var dir = new TempDir();
        int port = FreePort.Get();
        int metricsPort = FreePort.Get();
        using var relay = await RelayProcess.StartServeAsync(
            ["--listen", $"127.0.0.1:{port}", "--spool", dir.Spool, "--hostname", "relay.test", "--metrics", $"127.0.0.1:{metricsPort}"],
            port, dir.Path, log);

        string metrics = await GetAsync(metricsPort, "/metrics");
        Assert.StartsWith("HTTP/1.1 200 OK", metrics);
        Assert.Contains("text/plain; version=0.0.4", metrics);
        Assert.Contains("# TYPE nativerelay_messages_received_total counter", metrics);
        Assert.Contains("# TYPE nativerelay_spool_commit_seconds histogram", metrics);
        Assert.Matches(@"nativerelay_build_info\{version=""[^""]+""\} 1", metrics);
        Assert.StartsWith("HTTP/1.1 404", await GetAsync(metricsPort, "/"));
        await relay.WaitForOutputAsync($"metrics on http://127.0.0.1:{metricsPort}/metrics", Waits.Delivery);
    }

    [Fact]
    public async Task Without_the_flag_there_is_no_endpoint()
    {
        using var dir = new TempDir();
        int port = FreePort.Get();
        using var relay = await RelayProcess.StartServeAsync(["--listen", $"127.0.0.1:{port}", "--spool", dir.Spool], port, dir.Path, log);
        Assert.DoesNotContain(relay.StdoutLines, l => l.Contains("metrics on"));
    }

    [Fact]
    public async Task A_scrape_after_traffic_is_valid_exposition_text_with_spool_delivery_and_queue_figures()
    {
        // One recipient the sink takes, one it defers (450), so the queue holds a deferred message.
        await using var sink = new TestSmtpSink { RcptReply = rcpt => rcpt.StartsWith("later@", StringComparison.Ordinal) ? "450 4.2.0 try later" : "250 2.1.5 ok" };
        using var dir = new TempDir();
        int port = FreePort.Get();
        int metricsPort = FreePort.Get();
        using var relay = await RelayProcess.StartServeAsync(
            ["--listen", $"127.0.0.1:{port}", "--spool", dir.Spool, "--relay-to", sink.Endpoint, "--metrics", $"127.0.0.1:{metricsPort}"],
            port, dir.Path, log);
        await using var client = await TestSmtpClient.ConnectAndGreetAsync(port);
        await client.EhloAsync();
        await client.SendAcceptedAsync("a@example.test", ["b@example.test"], MessageText.Simple($"m-{Guid.NewGuid():N}@test"));
        await client.SendAcceptedAsync("a@example.test", ["later@example.test"], MessageText.Simple($"m-{Guid.NewGuid():N}@test"));
        await sink.WaitForCountAsync(1, Waits.Delivery);

        // The outcomes are counted when the relay records the sink's replies, a moment after the
        // sink has them: scrape until both show (bounded).
        PrometheusText scrape;
        string body;
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            body = Body(await GetAsync(metricsPort, "/metrics"));
            scrape = PrometheusText.Parse(body);
            bool settled = scrape["nativerelay_delivered_total"] >= 1 && scrape["nativerelay_deferred_total"] >= 1
                           && scrape["nativerelay_queue_messages{state=\"deferred\"}"] >= 1;
            if (settled || DateTime.UtcNow > until)
                break;
            await Task.Delay(100);
        }
        log.WriteLine(body);

        Assert.Equal(2, scrape["nativerelay_messages_received_total"]);
        Assert.Equal(1, scrape["nativerelay_delivered_total"]);
        Assert.Equal(1, scrape["nativerelay_deferred_total"]);
        Assert.True(scrape["nativerelay_received_bytes_total"] > 0);
        // The harness's readiness probe is a connection too, so only "some" can be asserted here.
        Assert.True(scrape["nativerelay_connections_total"] >= 1);

        // Each 250 to DATA waited for a group commit: the commit histograms saw them.
        Assert.Equal("histogram", scrape.Types["nativerelay_spool_commit_seconds"]);
        Assert.True(scrape["nativerelay_spool_commit_seconds_count"] >= 2, "spool commits: " + scrape["nativerelay_spool_commit_seconds_count"]);
        Assert.True(scrape["nativerelay_spool_commit_seconds_sum"] > 0);
        Assert.True(scrape["nativerelay_spool_commit_batch_messages_count"] >= 2);
        Assert.True(scrape["nativerelay_spool_commit_batch_messages_sum"] >= 2, "the two messages were in some commit's batch");

        // The queue by state, read from the scheduler at scrape time: the deferred message waits.
        Assert.Equal(1, scrape["nativerelay_queue_messages{state=\"deferred\"}"]);
        Assert.Equal(0, scrape["nativerelay_queue_messages{state=\"held\"}"]);
        Assert.True(scrape.Samples.ContainsKey("nativerelay_queue_messages{state=\"active\"}"));

        // Delivery: latency and attempt time, and per-destination counters under the next hop's name.
        Assert.Equal(1, scrape["nativerelay_delivery_latency_seconds_count"]);
        Assert.True(scrape["nativerelay_delivery_attempt_seconds_count"] >= 2);
        foreach (var family in new[] { "nativerelay_destination_delivered_total", "nativerelay_destination_deferred_total" })
        {
            var counted = scrape.Samples.Where(p => p.Key.StartsWith(family + "{", StringComparison.Ordinal) && p.Value > 0).ToList();
            var only = Assert.Single(counted);
            Assert.Equal(1, only.Value);
            Assert.DoesNotContain("\"other\"", only.Key);
        }

        // The process, from the native binary's own runtime: memory, CPU and the GC's totals.
        Assert.True(scrape["nativerelay_process_resident_memory_bytes"] > 1024 * 1024, "resident: " + scrape["nativerelay_process_resident_memory_bytes"]);
        Assert.True(scrape["nativerelay_process_cpu_seconds_total"] > 0);
        Assert.True(scrape["nativerelay_gc_allocated_bytes_total"] > 0);
        Assert.True(scrape["nativerelay_gc_heap_bytes"] > 0);
        Assert.Equal("counter", scrape.Types["nativerelay_gc_collections_total"]);
        Assert.True(scrape.Samples.ContainsKey("nativerelay_gc_collections_total{generation=\"2\"}"));
        Assert.Equal("counter", scrape.Types["nativerelay_gc_pause_seconds_total"]);
    }

    private static string Body(string response)
    {
        Assert.StartsWith("HTTP/1.1 200 OK", response);
        return response[(response.IndexOf("\r\n\r\n", StringComparison.Ordinal) + 4)..];
    }

    private static async Task<string> GetAsync(int port, string path)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await socket.ConnectAsync("127.0.0.1", port, timeout.Token);
        await socket.SendAsync(Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"), SocketFlags.None, timeout.Token);
        var response = new MemoryStream();
        var buffer = new byte[8192];
        int n;
        while ((n = await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token)) > 0)
            response.Write(buffer, 0, n);
        return Encoding.UTF8.GetString(response.ToArray());
    }
}
