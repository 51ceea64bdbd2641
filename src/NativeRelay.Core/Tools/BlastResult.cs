using System.Globalization;
using System.Text.Json;

namespace NativeRelay.Tools;

/// <summary>What a blast run did: counts, rates, errors by code, latency percentiles.</summary>
public sealed class BlastResult
{
    public required string Target { get; init; }
    public required long Requested { get; init; }
    public required long Accepted { get; init; }
    public required long Failed { get; init; }
    public long NotSent => Math.Max(0, Requested - Accepted - Failed);
    public required int Sessions { get; init; }
    public required int MessageSize { get; init; }
    public required int Recipients { get; init; }
    public required long Connections { get; init; }
    public required bool Pipelining { get; init; }
    public required bool TimedOut { get; init; }
    public required bool Interrupted { get; init; }
    /// <summary>From the start to the last message's outcome.</summary>
    public required double ElapsedSeconds { get; init; }
    public required ErrorCounts Errors { get; init; }
    public required LatencySummary ConnectLatency { get; init; }
    public required LatencySummary AcceptLatency { get; init; }
    public double Rate { get; init; }

    public double MessagesPerSecond => Accepted / ElapsedSeconds;

    /// <summary>Accepted message octets per second, in MB (10^6 octets).</summary>
    public double MegabytesPerSecond => Accepted * (double)MessageSize / ElapsedSeconds / 1e6;

    /// <summary>Every message was accepted.</summary>
    public bool Success => Accepted == Requested;

    public void WriteText(TextWriter w)
    {
        var c = CultureInfo.InvariantCulture;
        w.WriteLine(string.Create(c, $"blast: {Requested} message(s) of {MessageSize} bytes, {Recipients} recipient(s) each, to {Target}"));
        w.WriteLine(string.Create(c, $"  sessions     {Sessions}, {Connections} connection(s), {(Pipelining ? "pipelining" : "no pipelining")}{(Rate > 0 ? $", rate limit {Rate:0.#} msg/s" : "")}"));
        w.WriteLine(string.Create(c, $"  accepted     {Accepted} in {ElapsedSeconds:0.000} s: {MessagesPerSecond:0} msg/s, {MegabytesPerSecond:0.00} MB/s"));
        w.WriteLine(string.Create(c, $"  failed       {Failed}{(NotSent > 0 ? $", not sent {NotSent}" : "")}{(TimedOut ? " (time limit reached)" : "")}{(Interrupted ? " (interrupted)" : "")}"));
        foreach (var (key, count, text) in Errors.Entries())
            w.WriteLine(string.Create(c, $"    {key,-10} {count}{(text is null ? "" : $"  ({text})")}"));
        w.WriteLine($"  connect      {ConnectLatency}   (connect() to the 220 greeting, {ConnectLatency.Count} sample(s))");
        w.WriteLine($"  accept       {AcceptLatency}   (end of data to the 250, {AcceptLatency.Count} sample(s))");
    }

    public void WriteJson(Stream stream)
    {
        using var j = new Utf8JsonWriter(stream);
        WriteJson(j);
        j.Flush();
        stream.Write("\n"u8);
        stream.Flush();
    }

    public void WriteJson(Utf8JsonWriter j)
    {
        j.WriteStartObject();
        j.WriteString("tool", "blast");
        j.WriteString("target", Target);
        j.WriteNumber("messages_requested", Requested);
        j.WriteNumber("messages_accepted", Accepted);
        j.WriteNumber("messages_failed", Failed);
        j.WriteNumber("messages_not_sent", NotSent);
        j.WriteNumber("message_size", MessageSize);
        j.WriteNumber("recipients", Recipients);
        j.WriteNumber("sessions", Sessions);
        j.WriteNumber("connections", Connections);
        j.WriteBoolean("pipelining", Pipelining);
        j.WriteNumber("rate_limit", Rate);
        j.WriteNumber("elapsed_s", Math.Round(ElapsedSeconds, 6));
        j.WriteNumber("msgs_per_s", Math.Round(MessagesPerSecond, 1));
        j.WriteNumber("mb_per_s", Math.Round(MegabytesPerSecond, 3));
        j.WriteBoolean("timed_out", TimedOut);
        j.WriteBoolean("interrupted", Interrupted);
        j.WriteStartObject("errors");
        foreach (var (key, count, _) in Errors.Entries())
            j.WriteNumber(key, count);
        j.WriteEndObject();
        j.WriteStartObject("error_texts");
        foreach (var (key, _, text) in Errors.Entries())
            if (text is not null)
                j.WriteString(key, text);
        j.WriteEndObject();
        WriteLatency(j, "connect_latency_ms", ConnectLatency);
        WriteLatency(j, "accept_latency_ms", AcceptLatency);
        j.WriteEndObject();
    }

    internal static void WriteLatency(Utf8JsonWriter j, string name, LatencySummary s)
    {
        j.WriteStartObject(name);
        j.WriteNumber("count", s.Count);
        j.WriteNumber("p50", Math.Round(s.P50Ms, 3));
        j.WriteNumber("p90", Math.Round(s.P90Ms, 3));
        j.WriteNumber("p99", Math.Round(s.P99Ms, 3));
        j.WriteNumber("max", Math.Round(s.MaxMs, 3));
        j.WriteNumber("mean", Math.Round(s.MeanMs, 3));
        j.WriteEndObject();
    }
}
