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
    public async Task The_endpoint_counts_a_message_that_went_through()
    {
        await using var sink = new TestSmtpSink();
        using var dir = new TempDir();
        int port = FreePort.Get();
        int metricsPort = FreePort.Get();
        using var relay = await RelayProcess.StartServeAsync(
            ["--listen", $"127.0.0.1:{port}", "--spool", dir.Spool, "--relay-to", sink.Endpoint, "--metrics", $"127.0.0.1:{metricsPort}"],
            port, dir.Path, log);
        await using var client = await TestSmtpClient.ConnectAndGreetAsync(port);
        await client.EhloAsync();
        await client.SendAcceptedAsync("a@example.test", ["b@example.test"], MessageText.Simple($"m-{Guid.NewGuid():N}@test"));
        await sink.WaitForCountAsync(1, Waits.Delivery);

        // The delivery is counted when the relay records the sink's 250, a moment after the sink
        // has the message: scrape until it shows (bounded).
        string metrics = "";
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        do
        {
            metrics = await GetAsync(metricsPort, "/metrics");
            if (metrics.Contains("nativerelay_delivered_total 1\n"))
                break;
            await Task.Delay(100);
        } while (DateTime.UtcNow < until);
        Assert.Contains("nativerelay_messages_received_total 1\n", metrics);
        Assert.Contains("nativerelay_delivered_total 1\n", metrics);
        // The harness's readiness probe is a connection too, so only "some" can be asserted here.
        Assert.Contains("nativerelay_connections_total ", metrics);
        Assert.DoesNotContain("nativerelay_connections_total 0\n", metrics);
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
