using System.Net;
using System.Net.Sockets;
using System.Text;
using NativeRelay.Telemetry;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>The metrics registry and its Prometheus text, and the HTTP endpoint scraped over a real socket.</summary>
public sealed class MetricsTests
{
    [Fact]
    public void Counters_gauges_and_histograms_render_in_the_text_format()
    {
        var registry = new MetricsRegistry();
        var counter = registry.Counter("t_messages_total", "Messages.\nSecond line with \\ backslash.");
        var gauge = registry.Gauge("t_open", "Open things.");
        var states = registry.GaugeVec("t_queue", "Queue.", "state", "active", "deferred");
        var histogram = registry.Histogram("t_latency_seconds", "Latency.", 0.1, 1, 10);

        counter.Increment();
        counter.Add(41);
        counter.Add(-5); // ignored: counters never go down
        gauge.Increment();
        gauge.Increment();
        gauge.Decrement();
        states.Set(states.IndexOf("deferred"), 7);
        states.SetSource(states.IndexOf("active"), () => 3);
        histogram.Observe(0.05);
        histogram.Observe(0.1);   // on the bound: counts in le="0.1"
        histogram.Observe(5);
        histogram.Observe(100);

        string text = registry.Render();

        string sum = (0.0 + 0.05 + 0.1 + 5 + 100).ToString("R", System.Globalization.CultureInfo.InvariantCulture);
        Assert.Equal($$"""
            # HELP t_messages_total Messages.\nSecond line with \\ backslash.
            # TYPE t_messages_total counter
            t_messages_total 42
            # HELP t_open Open things.
            # TYPE t_open gauge
            t_open 1
            # HELP t_queue Queue.
            # TYPE t_queue gauge
            t_queue{state="active"} 3
            t_queue{state="deferred"} 7
            # HELP t_latency_seconds Latency.
            # TYPE t_latency_seconds histogram
            t_latency_seconds_bucket{le="0.1"} 2
            t_latency_seconds_bucket{le="1"} 2
            t_latency_seconds_bucket{le="10"} 3
            t_latency_seconds_bucket{le="+Inf"} 4
            t_latency_seconds_sum {{sum}}
            t_latency_seconds_count 4

            """.Replace("\r\n", "\n"), text);
    }

    [Fact]
    public void Per_destination_counters_keep_the_first_n_apart_and_fold_the_rest_into_other()
    {
        var registry = new MetricsRegistry();
        var vec = registry.BoundedCounterVec("t_dest_total", "By destination.", "destination", 3);

        for (int i = 0; i < 1000; i++)
            vec.Increment($"d{i % 10}.test");
        vec.Add("we\"ird\\name\n.test", 2);

        Assert.Equal(3, vec.SeriesCount);
        Assert.Equal(100, vec.Get("d0.test"));
        Assert.Equal(0, vec.Get("d5.test"));
        Assert.Equal(700 + 2, vec.Get(BoundedCounterVec.Other));
        string text = registry.Render();
        Assert.Contains("t_dest_total{destination=\"d0.test\"} 100\n", text);
        Assert.Contains("t_dest_total{destination=\"other\"} 702\n", text);
        Assert.DoesNotContain("d5.test", text);
        Assert.Equal(4, text.Split('\n').Count(l => l.StartsWith("t_dest_total{")));
    }

    [Fact]
    public void Label_values_are_escaped()
    {
        Assert.Equal("destination=\"a\\\"b\\\\c\\nd\"", Metric.Label("destination", "a\"b\\c\nd"));
    }

    [Fact]
    public async Task Concurrent_increments_are_not_lost()
    {
        var registry = new MetricsRegistry();
        var counter = registry.Counter("t_c_total", "c");
        var histogram = registry.Histogram("t_h", "h", 1, 2);
        var vec = registry.BoundedCounterVec("t_v_total", "v", "destination", 5);
        const int threads = 4, each = 50_000;
        await Task.WhenAll(Enumerable.Range(0, threads).Select(t => Task.Run(() =>
        {
            for (int i = 0; i < each; i++)
            {
                counter.Increment();
                histogram.Observe(1.5);
                vec.Increment("d" + (i % 8));
            }
        })));

        Assert.Equal(threads * each, counter.Value);
        Assert.Equal(threads * each, histogram.Count);
        Assert.Equal(threads * each * 1.5, histogram.Sum);
        Assert.Equal(threads * each, histogram.CumulativeCounts()[1]);
        Assert.Equal(5, vec.SeriesCount);
        long total = Enumerable.Range(0, 8).Sum(i => vec.Get("d" + i)) + vec.Get(BoundedCounterVec.Other);
        Assert.Equal(threads * each, total);
    }

    [Fact]
    public void Observing_a_histogram_sample_allocates_nothing()
    {
        var histogram = new Histogram("t_alloc_seconds", "Allocation check.", 0.001, 0.01, 0.1, 1);
        histogram.Observe(0.5); // warm up (JIT, statics)
        histogram.ObserveSince(System.Diagnostics.Stopwatch.GetTimestamp());
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10_000; i++)
        {
            histogram.Observe(i * 0.0001);
            histogram.ObserveSince(System.Diagnostics.Stopwatch.GetTimestamp());
        }
        Assert.Equal(before, GC.GetAllocatedBytesForCurrentThread());
        Assert.Equal(20_002, histogram.Count);
    }

    [Fact]
    public void A_gauge_vector_can_be_read_in_one_pass_per_scrape_and_only_its_owner_detaches_it()
    {
        var registry = new MetricsRegistry();
        var queue = registry.GaugeVec("t_queue", "Queue.", "state", "active", "deferred", "held");
        int calls = 0;
        Action<long[]> first = counts => { calls++; counts[0] = 4; counts[1] = 5; counts[2] = 6; };
        Action<long[]> second = counts => counts[1] = 9;
        queue.SetSnapshotSource(first);

        var scrape = PrometheusText.Parse(registry.Render());
        Assert.Equal(1, calls);
        Assert.Equal(4, scrape["t_queue{state=\"active\"}"]);
        Assert.Equal(5, scrape["t_queue{state=\"deferred\"}"]);
        Assert.Equal(6, scrape["t_queue{state=\"held\"}"]);

        queue.SetSnapshotSource(second);
        queue.ClearSnapshotSource(first); // an older owner leaving does not remove the newer source
        Assert.Equal(9, queue.Get(1));
        queue.ClearSnapshotSource(second);
        queue.Set(1, 2);
        Assert.Equal(2, queue.Get(1));

        queue.SetSnapshotSource(_ => throw new InvalidOperationException("broken source"));
        Assert.Contains("t_queue{state=\"active\"} 0\n", registry.Render()); // a failing source never fails the scrape
    }

    [Fact]
    public void The_whole_relay_registry_is_valid_exposition_text()
    {
        RelayMetrics.SpoolCommitSeconds.Observe(0.002);
        RelayMetrics.SpoolCommitBatchSize.Observe(3);
        var scrape = PrometheusText.Parse(RelayMetrics.Registry.Render());
        Assert.Equal("histogram", scrape.Types["nativerelay_spool_commit_seconds"]);
        Assert.Equal("histogram", scrape.Types["nativerelay_spool_commit_batch_messages"]);
        Assert.Equal("gauge", scrape.Types["nativerelay_queue_messages"]);
        Assert.True(scrape["nativerelay_spool_commit_batch_messages_count"] >= 1);
        Assert.Equal("+Inf", scrape.Buckets("nativerelay_spool_commit_seconds")[^1].Le);
    }

    [Fact]
    public void Sampled_metrics_are_read_when_scraped_keep_fractions_and_survive_a_failing_callback()
    {
        var registry = new MetricsRegistry();
        double seconds = 1.25;
        registry.SampledCounter("t_cpu_seconds_total", "CPU.", () => seconds);
        registry.SampledGauge("t_resident_bytes", "Memory.", () => 4096);
        registry.SampledGauge("t_broken", "Broken.", () => throw new IOException("gone"));
        registry.Add(new GaugeVec("t_collections_total", "Collections.", counter: true, "generation", "0", "1"));

        var first = PrometheusText.Parse(registry.Render());
        seconds = 2.5;
        var second = PrometheusText.Parse(registry.Render());

        Assert.Equal("counter", first.Types["t_cpu_seconds_total"]);
        Assert.Equal("gauge", first.Types["t_resident_bytes"]);
        Assert.Equal("counter", first.Types["t_collections_total"]);
        Assert.Equal(1.25, first["t_cpu_seconds_total"]);
        Assert.Equal(2.5, second["t_cpu_seconds_total"]); // read anew by each scrape
        Assert.Equal(4096, first["t_resident_bytes"]);
        Assert.Equal(0, first["t_broken"]);
    }

    [Fact]
    public void The_process_figures_follow_the_runtime()
    {
        var before = PrometheusText.Parse(RelayMetrics.Registry.Render());
        var kept = new byte[4 * 1024 * 1024]; // on the large object heap: counted at once, not per allocation context
        GC.Collect(2, GCCollectionMode.Forced, blocking: true);
        var after = PrometheusText.Parse(RelayMetrics.Registry.Render());
        GC.KeepAlive(kept);

        Assert.True(after["nativerelay_gc_allocated_bytes_total"] - before["nativerelay_gc_allocated_bytes_total"] >= kept.Length);
        // The forced collection is a generation 2 one: counted under "2" and not under the younger labels.
        Assert.True(after["nativerelay_gc_collections_total{generation=\"2\"}"] >= before["nativerelay_gc_collections_total{generation=\"2\"}"] + 1);
        Assert.True(after["nativerelay_gc_heap_bytes"] >= kept.Length);
        Assert.True(after["nativerelay_process_resident_memory_bytes"] >= kept.Length);
        Assert.True(after["nativerelay_process_cpu_seconds_total"] > 0);
        Assert.True(after["nativerelay_process_cpu_seconds_total"] >= before["nativerelay_process_cpu_seconds_total"]);
        Assert.True(after["nativerelay_gc_pause_seconds_total"] > before["nativerelay_gc_pause_seconds_total"]);
    }

    [Theory]
    [InlineData("t_x 1\n", "without a preceding TYPE")]
    [InlineData("# TYPE t_x counter\nt_x 1\n", "TYPE before HELP")]
    [InlineData("# HELP t_h h\n# TYPE t_h histogram\nt_h_bucket{le=\"1\"} 2\nt_h_bucket{le=\"+Inf\"} 1\nt_h_sum 1\nt_h_count 1\n", "cumulative")]
    [InlineData("# HELP t_h h\n# TYPE t_h histogram\nt_h_bucket{le=\"1\"} 1\nt_h_sum 1\nt_h_count 1\n", "+Inf")]
    [InlineData("# HELP t_h h\n# TYPE t_h histogram\nt_h_bucket{le=\"+Inf\"} 1\nt_h_sum 1\nt_h_count 2\n", "_count")]
    public void The_test_parser_refuses_what_prometheus_would(string text, string expected)
    {
        var e = Assert.Throws<FormatException>(() => PrometheusText.Parse(text));
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void The_relay_metrics_have_the_names_the_stages_count_with()
    {
        string text = RelayMetrics.Registry.Render();
        foreach (var name in new[]
                 {
                     "nativerelay_connections_total", "nativerelay_connections_active", "nativerelay_messages_received_total",
                     "nativerelay_received_bytes_total", "nativerelay_delivered_total", "nativerelay_deferred_total",
                     "nativerelay_bounced_total", "nativerelay_queue_messages", "nativerelay_spool_commit_seconds",
                     "nativerelay_spool_commit_batch_messages", "nativerelay_delivery_latency_seconds",
                     "nativerelay_delivery_attempt_seconds", "nativerelay_destination_delivered_total", "nativerelay_build_info",
                     "nativerelay_process_resident_memory_bytes", "nativerelay_process_cpu_seconds_total", "nativerelay_gc_heap_bytes",
                     "nativerelay_gc_allocated_bytes_total", "nativerelay_gc_collections_total", "nativerelay_gc_pause_seconds_total",
                 })
            Assert.Contains($"# TYPE {name} ", text);
        Assert.Contains("nativerelay_queue_messages{state=\"deferred\"}", text);
        Assert.Matches(@"nativerelay_build_info\{version=""\d+\.\d+\.\d+""\} 1\n", text);
    }

    [Fact]
    public async Task The_endpoint_answers_get_metrics_keeps_the_connection_and_gives_404_and_405_otherwise()
    {
        // The endpoint is Kestrel's (Api/ApiHost), on metrics.listen only: no API there.
        int port = NativeRelay.Tests.Support.FreePort.Get();
        var settings = NativeRelay.Config.RelaySettings.Validate(new NativeRelay.Config.RelayOptions { Metrics = new() { Listen = $"127.0.0.1:{port}" } });
        using var log = new Log(Stream.Null, LogLevel.Error, LogFormat.Text);
        await using var server = await NativeRelay.Api.ApiHost.StartAsync(settings, () => null, log);
        Assert.NotNull(server);
        var endpoint = new IPEndPoint(IPAddress.Loopback, port);

        using var client = await Connect(endpoint);
        var first = await Request(client, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 200 OK\r\n", first.Head);
        Assert.Contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n", first.Head);
        Assert.Contains("# TYPE nativerelay_messages_received_total counter", first.Body);

        var second = await Request(client, "GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"); // same connection (kept alive)
        Assert.Contains("nativerelay_build_info", second.Body);

        var notFound = await Request(client, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 404 ", notFound.Head);
        var api = await Request(client, "POST /api/v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 404 ", api.Head);
        var head = await Request(client, "HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", expectBody: false);
        Assert.StartsWith("HTTP/1.1 200 ", head.Head);
        var post = await Request(client, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 405 ", post.Head);
        Assert.Contains("Allow: GET, HEAD", post.Head);
        Assert.Contains("Connection: close", post.Head);
        Assert.Equal(0, await ReadSome(client, new byte[16])); // closed as announced

        using var bad = await Connect(endpoint);
        var garbage = await Request(bad, "HELLO\r\n\r\n");
        Assert.StartsWith("HTTP/1.1 400 ", garbage.Head);
    }

    private static async Task<Socket> Connect(IPEndPoint endpoint)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(endpoint);
        return socket;
    }

    private static async Task<int> ReadSome(Socket socket, byte[] buffer)
    {
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        return await socket.ReceiveAsync(buffer, SocketFlags.None, timeout.Token);
    }

    /// <summary>Sends a request and reads one response (head, then Content-Length bytes of body).</summary>
    private static async Task<(string Head, string Body)> Request(Socket socket, string request, bool expectBody = true)
    {
        await socket.SendAsync(Encoding.ASCII.GetBytes(request), SocketFlags.None);
        var data = new List<byte>();
        var buffer = new byte[4096];
        int headEnd;
        while ((headEnd = IndexOf(data, "\r\n\r\n"u8.ToArray())) < 0)
        {
            int n = await ReadSome(socket, buffer);
            Assert.True(n > 0, "connection closed before the response head");
            data.AddRange(buffer.AsSpan(0, n).ToArray());
        }
        string head = Encoding.ASCII.GetString(data.GetRange(0, headEnd + 4).ToArray());
        var lengthLine = head.Split("\r\n").First(l => l.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase));
        int length = expectBody ? int.Parse(lengthLine["Content-Length:".Length..].Trim()) : 0;
        while (data.Count < headEnd + 4 + length)
        {
            int n = await ReadSome(socket, buffer);
            Assert.True(n > 0, "connection closed inside the response body");
            data.AddRange(buffer.AsSpan(0, n).ToArray());
        }
        return (head, Encoding.UTF8.GetString(data.GetRange(headEnd + 4, length).ToArray()));
    }

    private static int IndexOf(List<byte> data, byte[] pattern)
    {
        for (int i = 0; i + pattern.Length <= data.Count; i++)
        {
            int k = 0;
            while (k < pattern.Length && data[i + k] == pattern[k])
                k++;
            if (k == pattern.Length)
                return i;
        }
        return -1;
    }
}
