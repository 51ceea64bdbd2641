using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using NativeRelay.Config;
using NativeRelay.Hosting;
using NativeRelay.Telemetry;

namespace NativeRelay.Tools;

/// <summary>
/// <c>nativerelay bench</c>: sink, relay (in-process <see cref="RelayHost"/> with a temporary,
/// durable spool, relaying to the sink) and blaster in one process on loopback; one bounded
/// load; figures; everything stopped and the temporary directory removed, whatever happens.
/// </summary>
public static class BenchRunner
{
    /// <param name="diagnostics">Where the relay's warnings and the progress display go (standard error).</param>
    /// <param name="terminal">Draw progress in place (a terminal) rather than a line a second.</param>
    public static async Task<BenchResult> RunAsync(BenchOptions options, TextWriter diagnostics, bool terminal, CancellationToken cancel)
    {
        string root = Path.GetFullPath(options.TempDirectory ?? Path.GetTempPath());
        string work = Path.Combine(root, $"nativerelay-bench-{Guid.NewGuid():N}");
        Directory.CreateDirectory(work);
        var log = new Log(diagnostics, LogLevel.Warn);
        SmtpSink? sink = null;
        RelayHost? host = null;
        try
        {
            sink = new SmtpSink(new SinkOptions { Listen = new IPEndPoint(IPAddress.Loopback, 0), Quiet = true }, log);
            sink.Start();
            var relayOptions = new RelayOptions
            {
                Hostname = "bench.nativerelay.test",
                Listen = [$"127.0.0.1:{FreeLoopbackPort()}"],
                Spool = Path.Combine(work, "spool"),
                RelayTo = sink.EndPoint.ToString(),
            };
            host = new RelayHost(RelaySettings.Validate(relayOptions), log);
            await host.StartAsync();
            var relayEndPoint = host.Listeners[0].EndPoint;

            var blaster = new Blaster(new BlastOptions
            {
                Host = relayEndPoint.Address.ToString(),
                Port = relayEndPoint.Port,
                Messages = options.Messages,
                Sessions = options.Sessions,
                Size = options.Size,
                PerConnection = options.PerConnection,
                Timeout = options.Timeout,
                Quiet = true,
            });

            var deadline = Stopwatch.GetTimestamp() + (long)(options.Timeout.TotalSeconds * Stopwatch.Frequency);
            long started = Stopwatch.GetTimestamp();
            BlastResult blast;
            bool allDelivered;
            long deliveredAt;
            var progress = options.Quiet ? null : new ProgressDisplay(diagnostics, terminal, t => Line(t, options, blaster, sink));
            try
            {
                blast = await blaster.RunAsync(cancel);
                using var wait = CancellationTokenSource.CreateLinkedTokenSource(cancel);
                var left = TimeSpan.FromSeconds(Math.Max(1, (double)(deadline - Stopwatch.GetTimestamp()) / Stopwatch.Frequency));
                wait.CancelAfter(left);
                allDelivered = await sink.WaitForMessagesAsync(blast.Accepted, wait.Token);
                deliveredAt = sink.LastMessageTimestamp;
            }
            finally
            {
                if (progress is not null)
                    await progress.DisposeAsync();
            }

            long commits = host.Spool.Commits;
            double e2eSeconds = deliveredAt > started ? LatencyHistogram.ElapsedMicroseconds(started, deliveredAt) / 1e6 : 0;
            return new BenchResult
            {
                Blast = blast,
                Delivered = Math.Min(sink.Messages, blast.Accepted),
                AllDelivered = allDelivered,
                EndToEndSeconds = e2eSeconds,
                SpoolCommits = commits,
                PeakResidentBytes = ProcessMemory.PeakResidentBytes,
                RelayEndPoint = relayEndPoint.ToString(),
                SinkEndPoint = sink.EndPoint.ToString(),
                WorkDirectory = work,
            };
        }
        finally
        {
            if (host is not null)
            {
                try
                {
                    await host.StopAsync(TimeSpan.FromSeconds(5));
                }
                catch (Exception e)
                {
                    diagnostics.WriteLine($"bench: stopping the relay: {e.Message}");
                }
            }
            if (sink is not null)
                await sink.DisposeAsync();
            log.Dispose();
            RemoveDirectory(work, diagnostics);
        }
    }

    private static string Line(bool terminal, BenchOptions o, Blaster blaster, SmtpSink sink)
    {
        long done = blaster.Done;
        double seconds = Math.Max(0.001, blaster.Elapsed.TotalSeconds);
        var c = CultureInfo.InvariantCulture;
        return terminal
            ? string.Create(c, $"bench {ProgressDisplay.Bar((double)done / o.Messages)} accepted {blaster.Accepted}/{o.Messages}  delivered {sink.Messages}  {blaster.Accepted / seconds:0} msg/s  {seconds:0.0} s")
            : string.Create(c, $"bench: accepted {blaster.Accepted}/{o.Messages}, delivered {sink.Messages}, failed {blaster.Failed}, {blaster.Accepted / seconds:0} msg/s, {seconds:0.0} s");
    }

    internal static int FreeLoopbackPort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    private static void RemoveDirectory(string path, TextWriter diagnostics)
    {
        for (int attempt = 0; attempt < 10; attempt++)
        {
            try
            {
                if (Directory.Exists(path))
                    Directory.Delete(path, recursive: true);
                return;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                if (attempt == 9)
                    diagnostics.WriteLine($"bench: could not remove {path}: {e.Message}");
                Thread.Sleep(100);
            }
        }
    }
}

/// <summary>What one bench run measured.</summary>
public sealed class BenchResult
{
    public required BlastResult Blast { get; init; }
    public required long Delivered { get; init; }
    public required bool AllDelivered { get; init; }
    /// <summary>From the blast's start to the sink's last message.</summary>
    public required double EndToEndSeconds { get; init; }
    public required long SpoolCommits { get; init; }
    public required long PeakResidentBytes { get; init; }
    public required string RelayEndPoint { get; init; }
    public required string SinkEndPoint { get; init; }
    public required string WorkDirectory { get; init; }

    public double EndToEndMessagesPerSecond => EndToEndSeconds > 0 ? Delivered / EndToEndSeconds : 0;

    public bool Success => Blast.Success && AllDelivered;

    public void WriteText(TextWriter w)
    {
        var b = Blast;
        var c = CultureInfo.InvariantCulture;
        w.WriteLine(string.Create(c, $"nativerelay bench: {b.Requested} message(s) of {b.MessageSize} bytes over {b.Sessions} session(s)"));
        w.WriteLine(string.Create(c, $"  blaster -> relay {RelayEndPoint} (durable spool, group commit) -> sink {SinkEndPoint}"));
        w.WriteLine(string.Create(c, $"  accepted     {b.Accepted} in {b.ElapsedSeconds:0.000} s: {b.MessagesPerSecond:0} msg/s, {b.MegabytesPerSecond:0.00} MB/s"));
        w.WriteLine(string.Create(c, $"  end to end   {Delivered} delivered in {EndToEndSeconds:0.000} s: {EndToEndMessagesPerSecond:0} msg/s{(AllDelivered ? "" : "  (NOT all delivered in time)")}"));
        if (b.Failed > 0 || b.NotSent > 0)
        {
            w.WriteLine(string.Create(c, $"  failed       {b.Failed}{(b.NotSent > 0 ? $", not sent {b.NotSent}" : "")}"));
            foreach (var (key, count, text) in b.Errors.Entries())
                w.WriteLine(string.Create(c, $"    {key,-10} {count}{(text is null ? "" : $"  ({text})")}"));
        }
        w.WriteLine($"  accept       {b.AcceptLatency}   (end of data to the 250, which waits for the group commit)");
        w.WriteLine($"  connect      {b.ConnectLatency}");
        w.WriteLine(string.Create(c, $"  spool        {SpoolCommits} group commit(s), {(SpoolCommits > 0 ? (double)b.Accepted / SpoolCommits : 0):0.0} message(s) per commit"));
        w.WriteLine(string.Create(c, $"  memory       peak RSS {PeakResidentBytes / (1024.0 * 1024):0} MiB (blaster, relay and sink in one process)"));
        w.WriteLine($"  removed      {WorkDirectory}");
    }

    public void WriteJson(Stream stream)
    {
        using var j = new Utf8JsonWriter(stream);
        var b = Blast;
        j.WriteStartObject();
        j.WriteString("tool", "bench");
        j.WriteNumber("messages_requested", b.Requested);
        j.WriteNumber("messages_accepted", b.Accepted);
        j.WriteNumber("messages_failed", b.Failed);
        j.WriteNumber("messages_delivered", Delivered);
        j.WriteBoolean("all_delivered", AllDelivered);
        j.WriteNumber("message_size", b.MessageSize);
        j.WriteNumber("sessions", b.Sessions);
        j.WriteNumber("accept_elapsed_s", Math.Round(b.ElapsedSeconds, 6));
        j.WriteNumber("accept_msgs_per_s", Math.Round(b.MessagesPerSecond, 1));
        j.WriteNumber("accept_mb_per_s", Math.Round(b.MegabytesPerSecond, 3));
        j.WriteNumber("e2e_elapsed_s", Math.Round(EndToEndSeconds, 6));
        j.WriteNumber("e2e_msgs_per_s", Math.Round(EndToEndMessagesPerSecond, 1));
        j.WriteNumber("spool_commits", SpoolCommits);
        j.WriteNumber("peak_rss_bytes", PeakResidentBytes);
        j.WriteString("relay", RelayEndPoint);
        j.WriteString("sink", SinkEndPoint);
        j.WriteString("work_dir", WorkDirectory);
        j.WriteStartObject("errors");
        foreach (var (key, count, _) in b.Errors.Entries())
            j.WriteNumber(key, count);
        j.WriteEndObject();
        BlastResult.WriteLatency(j, "accept_latency_ms", b.AcceptLatency);
        BlastResult.WriteLatency(j, "connect_latency_ms", b.ConnectLatency);
        j.WriteEndObject();
        j.Flush();
        stream.Write("\n"u8);
        stream.Flush();
    }
}
