using System.Net;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;

namespace NativeRelay.Tests.Support;

/// <summary>
/// A webhook endpoint for the tests: an <see cref="HttpListener"/> on a loopback port that
/// keeps every POST (body, signature header) and checks its signature on its own, with
/// HMACSHA256 over "{t}.{body}" as a Stripe-style receiver would (not the relay's code).
/// It can answer with an error status (<see cref="Status"/>), or be stopped and started again on
/// the same port (a receiver that is down refuses connections).
/// </summary>
public sealed class WebhookReceiver : IDisposable
{
    private readonly object _gate = new();
    private readonly List<Post> _posts = new();
    private readonly byte[] _secret;
    private HttpListener? _listener;
    private Task? _loop;

    public WebhookReceiver(string secret, int? port = null)
    {
        _secret = Encoding.UTF8.GetBytes(secret);
        Port = port ?? FreePort.Get();
    }

    public int Port { get; }

    public string Url => $"http://127.0.0.1:{Port}/hook";

    /// <summary>The status every POST is answered with (200 unless a test makes it fail).</summary>
    public int Status { get; set; } = 200;

    /// <summary>One POST as received.</summary>
    public sealed record Post(byte[] Body, string? Signature, bool SignatureValid, long Timestamp, int AnsweredWith, JsonElement[] Events);

    public IReadOnlyList<Post> Posts
    {
        get
        {
            lock (_gate)
                return _posts.ToList();
        }
    }

    /// <summary>Events of the POSTs answered 2xx, in the order they arrived (duplicates kept).</summary>
    public IReadOnlyList<JsonElement> Accepted
    {
        get
        {
            lock (_gate)
                return _posts.Where(p => p.AnsweredWith is >= 200 and < 300).SelectMany(p => p.Events).ToList();
        }
    }

    public WebhookReceiver Start()
    {
        var listener = new HttpListener();
        listener.Prefixes.Add($"http://127.0.0.1:{Port}/");
        listener.Start();
        _listener = listener;
        _loop = Task.Run(() => ServeAsync(listener));
        return this;
    }

    /// <summary>Stops listening: connections are refused until <see cref="Start"/>.</summary>
    public void Stop()
    {
        var listener = _listener;
        _listener = null;
        if (listener is null)
            return;
        listener.Stop();
        listener.Close();
        try
        {
            _loop?.Wait(TimeSpan.FromSeconds(10));
        }
        catch (AggregateException)
        {
        }
    }

    private async Task ServeAsync(HttpListener listener)
    {
        while (listener.IsListening)
        {
            HttpListenerContext context;
            try
            {
                context = await listener.GetContextAsync();
            }
            catch (Exception e) when (e is HttpListenerException or ObjectDisposedException or InvalidOperationException)
            {
                return;
            }
            try
            {
                using var body = new MemoryStream();
                await context.Request.InputStream.CopyToAsync(body);
                var bytes = body.ToArray();
                var signature = context.Request.Headers["X-NativeRelay-Signature"];
                bool valid = Verify(signature, bytes, out long t);
                int status = Status;
                JsonElement[] events;
                try
                {
                    using var doc = JsonDocument.Parse(bytes);
                    events = doc.RootElement.EnumerateArray().Select(e => e.Clone()).ToArray();
                }
                catch (JsonException)
                {
                    events = [];
                    status = 400;
                }
                lock (_gate)
                    _posts.Add(new Post(bytes, signature, valid, t, status, events));
                context.Response.StatusCode = status;
                context.Response.Close();
            }
            catch (Exception e) when (e is HttpListenerException or IOException or ObjectDisposedException)
            {
            }
        }
    }

    /// <summary>t=UNIX,v1=HEX with HEX = HMAC-SHA256(secret, "{t}.{body}").</summary>
    private bool Verify(string? header, byte[] body, out long t)
    {
        t = 0;
        if (header is null)
            return false;
        string? ts = null, v1 = null;
        foreach (var part in header.Split(','))
        {
            if (part.StartsWith("t="))
                ts = part[2..];
            else if (part.StartsWith("v1="))
                v1 = part[3..];
        }
        if (ts is null || v1 is null || !long.TryParse(ts, out t))
            return false;
        var signed = Encoding.ASCII.GetBytes(ts + ".").Concat(body).ToArray();
        var expected = Convert.ToHexString(HMACSHA256.HashData(_secret, signed)).ToLowerInvariant();
        return expected == v1;
    }

    /// <summary>Waits (bounded) until the accepted events satisfy the condition; fails with what arrived.</summary>
    public async Task<IReadOnlyList<JsonElement>> WaitForAsync(Func<IReadOnlyList<JsonElement>, bool> done, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var events = Accepted;
            if (done(events))
                return events;
            if (DateTime.UtcNow > deadline)
                throw new Xunit.Sdk.XunitException($"webhook: {what} did not happen within {timeout.TotalSeconds:0} s; {events.Count} event(s) accepted in {Posts.Count} POST(s):\n"
                    + string.Join("\n", events.Take(50).Select(e => e.GetRawText())));
            await Task.Delay(50);
        }
    }

    public void Dispose() => Stop();
}

/// <summary>Reading the events the tests receive.</summary>
public static class EventJsonExtensions
{
    public static string Str(this JsonElement e, string name) =>
        e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : "";

    public static string Type(this JsonElement e) => e.Str("type");
    public static string Id(this JsonElement e) => e.Str("id");
}
