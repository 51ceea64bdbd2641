using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;

namespace NativeRelay.Tools;

/// <summary>
/// <c>blast --http URL</c>: the injection API under load. Sends <see cref="HttpBlastOptions.Requests"/>
/// requests over <see cref="HttpBlastOptions.Concurrency"/> concurrent keep-alive HTTP/1.1
/// connections, each with <see cref="HttpBlastOptions.Recipients"/> recipients and a text body
/// that makes each built message about <see cref="HttpBlastOptions.Size"/> bytes; counts the
/// recipients accepted (each a spooled, committed message) and the request latency.
/// </summary>
public sealed class HttpBlaster(HttpBlastOptions options)
{
    private long _requestsDone;
    private long _accepted;
    private long _rejected;
    private long _failed;
    private readonly Stopwatch _clock = new();

    public HttpBlastOptions Options => options;
    public long RequestsDone => Interlocked.Read(ref _requestsDone);
    public long Accepted => Interlocked.Read(ref _accepted);
    public TimeSpan Elapsed => _clock.Elapsed;

    public async Task<HttpBlastResult> RunAsync(CancellationToken cancel)
    {
        var body = RequestBody(options);
        using var handler = new SocketsHttpHandler
        {
            MaxConnectionsPerServer = options.Concurrency,
            PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
            // Self-signed test certificates: the load tool measures, it does not vouch (as blast --tls).
            SslOptions = { RemoteCertificateValidationCallback = (_, _, _, _) => true },
        };
        using var client = new HttpClient(handler) { Timeout = options.Timeout };
        var histograms = new List<LatencyHistogram>();
        var errors = new Dictionary<string, long>(StringComparer.Ordinal);
        long next = -1;
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        deadline.CancelAfter(options.Timeout);
        _clock.Start();
        var workers = Enumerable.Range(0, options.Concurrency).Select(async _ =>
        {
            var histogram = new LatencyHistogram();
            lock (histograms)
                histograms.Add(histogram);
            while (Interlocked.Increment(ref next) < options.Requests && !deadline.IsCancellationRequested)
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, options.Url) { Content = new ByteArrayContent(body) };
                request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/json");
                request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", options.Token);
                long start = Stopwatch.GetTimestamp();
                string? error = null;
                try
                {
                    using var response = await client.SendAsync(request, deadline.Token).ConfigureAwait(false);
                    var answer = await response.Content.ReadAsByteArrayAsync(deadline.Token).ConfigureAwait(false);
                    histogram.RecordSince(start);
                    if (response.StatusCode == HttpStatusCode.Accepted)
                    {
                        var (accepted, rejected) = Count(answer);
                        Interlocked.Add(ref _accepted, accepted);
                        Interlocked.Add(ref _rejected, rejected);
                    }
                    else
                    {
                        error = ((int)response.StatusCode).ToString(CultureInfo.InvariantCulture);
                    }
                }
                catch (Exception e) when (e is HttpRequestException or OperationCanceledException or IOException)
                {
                    error = deadline.IsCancellationRequested ? null : e.GetType().Name;
                }
                if (error is not null)
                {
                    Interlocked.Increment(ref _failed);
                    lock (errors)
                        errors[error] = errors.GetValueOrDefault(error) + 1;
                }
                Interlocked.Increment(ref _requestsDone);
            }
        }).ToArray();
        await Task.WhenAll(workers).ConfigureAwait(false);
        _clock.Stop();
        var latency = new LatencyHistogram();
        foreach (var h in histograms)
            latency.Merge(h);
        return new HttpBlastResult(options, RequestsDone, Accepted, Interlocked.Read(ref _rejected), Interlocked.Read(ref _failed),
            _clock.Elapsed.TotalSeconds, latency, errors);
    }

    private static (long Accepted, long Rejected) Count(byte[] answer)
    {
        using var document = JsonDocument.Parse(answer);
        return (document.RootElement.GetProperty("accepted").GetArrayLength(), document.RootElement.GetProperty("rejected").GetArrayLength());
    }

    /// <summary>One request: R recipients (1rcpt@..., 2rcpt@...), a subject and a text part padding the message to about the size asked.</summary>
    internal static byte[] RequestBody(HttpBlastOptions o)
    {
        var stream = new MemoryStream();
        using (var w = new Utf8JsonWriter(stream))
        {
            w.WriteStartObject();
            w.WriteString("from", o.From);
            w.WriteStartArray("recipients");
            int at = o.Rcpt.IndexOf('@');
            for (int i = 1; i <= o.Recipients; i++)
            {
                w.WriteStartObject();
                w.WriteString("email", o.Recipients == 1 ? o.Rcpt : $"{o.Rcpt[..at]}{i}{o.Rcpt[at..]}");
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteString("subject", "blast");
            // The built message has ~380 bytes of headers (Received, From, To, Subject, Date, Message-ID, MIME-Version, Content-Type).
            var text = new StringBuilder();
            int target = Math.Max(16, o.Size - 380);
            while (text.Length < target)
                text.Append("The quick brown fox jumps over the lazy dog. 0123456789\n");
            text.Length = target;
            w.WriteString("text", text.ToString());
            if (o.Pool is not null)
                w.WriteString("pool", o.Pool);
            w.WriteEndObject();
        }
        return stream.ToArray();
    }
}

public sealed class HttpBlastOptions
{
    public required Uri Url { get; init; }
    public required string Token { get; init; }
    public long Requests { get; init; } = 100;
    public int Concurrency { get; init; } = 10;
    public int Recipients { get; init; } = 100;
    public int Size { get; init; } = 1024;
    public string From { get; init; } = "blast@example.org";
    public string Rcpt { get; init; } = "sink@example.com";
    public string? Pool { get; init; }
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(600);
}

public sealed record HttpBlastResult(HttpBlastOptions Options, long Requests, long Accepted, long Rejected, long Failed, double ElapsedSeconds,
    LatencyHistogram Latency, IReadOnlyDictionary<string, long> Errors)
{
    public double RecipientsPerSecond => Accepted / ElapsedSeconds;
    public double RequestsPerSecond => Requests / ElapsedSeconds;
    public bool Success => Failed == 0 && Rejected == 0 && Requests == Options.Requests;

    public void WriteText(TextWriter w)
    {
        var c = CultureInfo.InvariantCulture;
        w.WriteLine(string.Create(c, $"target      {Options.Url} ({Options.Concurrency} concurrent requests, {Options.Recipients} recipients each, ~{Options.Size} bytes per message)"));
        w.WriteLine(string.Create(c, $"requests    {Requests} in {ElapsedSeconds:0.00} s: {RequestsPerSecond:0.0} requests/s, {Failed} failed"));
        w.WriteLine(string.Create(c, $"recipients  {Accepted} accepted (queued and committed), {Rejected} rejected: {RecipientsPerSecond:0} recipients/s"));
        w.WriteLine(string.Create(c, $"latency     request to 202: p50 {Latency.Percentile(50) / 1000.0:0.0} ms, p99 {Latency.Percentile(99) / 1000.0:0.0} ms, max {Latency.Max / 1000.0:0.0} ms"));
        foreach (var (error, count) in Errors)
            w.WriteLine(string.Create(c, $"error       {error}: {count}"));
    }

    public void WriteJson(Stream stream)
    {
        using var w = new Utf8JsonWriter(stream);
        w.WriteStartObject();
        w.WriteString("url", Options.Url.ToString());
        w.WriteNumber("concurrency", Options.Concurrency);
        w.WriteNumber("recipients_per_request", Options.Recipients);
        w.WriteNumber("size", Options.Size);
        w.WriteNumber("requests", Requests);
        w.WriteNumber("failed", Failed);
        w.WriteNumber("accepted", Accepted);
        w.WriteNumber("rejected", Rejected);
        w.WriteNumber("seconds", ElapsedSeconds);
        w.WriteNumber("requests_per_second", RequestsPerSecond);
        w.WriteNumber("recipients_per_second", RecipientsPerSecond);
        w.WriteNumber("latency_p50_ms", Latency.Percentile(50) / 1000.0);
        w.WriteNumber("latency_p99_ms", Latency.Percentile(99) / 1000.0);
        w.WriteNumber("latency_max_ms", Latency.Max / 1000.0);
        w.WriteEndObject();
        w.Flush();
        stream.WriteByte((byte)'\n');
    }
}
