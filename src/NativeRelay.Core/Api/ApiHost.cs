using System.Net;
using System.Net.Security;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using NativeRelay.Config;
using NativeRelay.MailAuth;
using NativeRelay.Net;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Api;

/// <summary>
/// The relay's HTTP side on Kestrel: the injection API and one-click unsubscribe on the
/// <c>http.listen</c> endpoint, the Prometheus text on <c>metrics.listen</c>. Kestrel does the
/// HTTP (1.1 keep-alive, HTTP/2, chunked bodies, TLS, limits); this class only routes three paths.
/// Hosted with <see cref="WebApplication.CreateEmptyBuilder"/>: no configuration files, no
/// environment variables, no logging providers, no DI beyond what Kestrel needs, so nothing
/// outside the relay's own configuration can add an endpoint or change a limit, and start-up
/// stays small. Started only when one of the two endpoints is configured.
/// Bound before the privilege drop (like the SMTP listeners); the message path is attached once
/// the spool is open (<see cref="Attach"/>); a request before that gets 503.
/// </summary>
public sealed class ApiHost : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly IPEndPoint? _apiEndpoint;
    private readonly IPEndPoint? _metricsEndpoint;
    private readonly TokenRateLimiter _rates = new();

    /// <summary>Requests per second per token (shared by the fleet on a node of a cluster).</summary>
    internal TokenRateLimiter TokenRates => _rates;
    private ApiConfiguration? _config;
    private Attached? _attached;

    private sealed record Attached(SpoolIntake Intake, QueueIdGenerator Ids, Func<IMessageSigner?> Signer, IdempotencyJournal Idempotency,
        IUnsubscribeRecorder Unsubscribes, string Hostname, long MaxMessageSize, InjectionService Injection);

    private ApiHost(WebApplication app, IPEndPoint? api, IPEndPoint? metrics, Log log)
    {
        _app = app;
        _apiEndpoint = api;
        _metricsEndpoint = metrics;
        Log = log;
    }

    public Log Log { get; }
    public IApiEvents Events { get; set; } = IApiEvents.None;

    /// <summary>
    /// Whether a request's <c>pool</c> names an egress pool of the configuration in force (traffic
    /// control); null, or no pools configured: any well-formed name is taken (it still selects the
    /// unsubscribe headers and goes into the events).
    /// </summary>
    public Func<string, bool>? PoolExists { get; set; }

    internal SpoolIntake Intake => _attached!.Intake;
    internal QueueIdGenerator Ids => _attached!.Ids;
    internal Func<IMessageSigner?> Signer => _attached!.Signer;
    internal IdempotencyJournal Idempotency => _attached!.Idempotency;
    internal IUnsubscribeRecorder Unsubscribes => _attached!.Unsubscribes;
    internal string Hostname => _attached!.Hostname;
    internal long MaxMessageSize => _attached!.MaxMessageSize;

    /// <summary>The configuration requests use now (null: no API, metrics only).</summary>
    public ApiConfiguration? Configuration => Volatile.Read(ref _config);

    /// <summary>Where the API listens (the real port when 0 was asked for); null without one.</summary>
    public IPEndPoint? ApiEndPoint { get; private set; }

    /// <summary>
    /// Binds the configured endpoints and starts serving; null when neither http.listen nor
    /// metrics.listen is set. A port that cannot be bound, or a tokens file that cannot be read,
    /// is a <see cref="ConfigException"/>.
    /// </summary>
    public static async Task<ApiHost?> StartAsync(RelaySettings settings, Func<TlsCertificateStore?> certificates, Log log)
    {
        var http = settings.Http;
        var metrics = settings.Metrics;
        if (http is null && metrics is null)
            return null;
        if (metrics is not null)
            RelayMetrics.SetMaxDestinations(metrics.MaxDestinations);

        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore();
        if (http is { Tls: true })
            builder.WebHost.UseKestrelHttpsConfiguration();
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = http?.MaxRequestBytes ?? 64 * 1024;
            k.Limits.MaxRequestHeadersTotalSize = 32 * 1024;
            k.Limits.MaxRequestHeaderCount = 64;
            k.Limits.MaxRequestLineSize = 8 * 1024;
            k.Limits.MaxConcurrentConnections = 4096;
            k.Limits.KeepAliveTimeout = TimeSpan.FromSeconds(120);
            k.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(30);
            k.Limits.Http2.MaxStreamsPerConnection = 100;
            if (http is not null)
            {
                k.Listen(http.Listen, listen =>
                {
                    // HTTP/2 is chosen by ALPN in the TLS handshake. On a plain port Kestrel cannot
                    // tell an h2c prior-knowledge preface from HTTP/1.1, so plain HTTP is HTTP/1.1.
                    listen.Protocols = http.Tls ? HttpProtocols.Http1AndHttp2 : HttpProtocols.Http1;
                    if (http.Tls)
                    {
                        listen.UseHttps(new TlsHandshakeCallbackOptions
                        {
                            // The relay's certificate as it is now: a reload (SIGHUP, changed files) takes effect at the next handshake.
                            OnConnection = _ =>
                            {
                                var store = certificates() ?? throw new InvalidOperationException("no TLS certificate loaded");
                                var options = store.CreateServerOptions();
                                options.ApplicationProtocols = [SslApplicationProtocol.Http2, SslApplicationProtocol.Http11];
                                return ValueTask.FromResult(options);
                            },
                        });
                    }
                });
            }
            if (metrics is not null && !(http is not null && http.Listen.Equals(metrics.Listen)))
                k.Listen(metrics.Listen, listen => listen.Protocols = HttpProtocols.Http1);
        });
        var app = builder.Build();
        var host = new ApiHost(app, http?.Listen, metrics?.Listen, log);
        app.Run(host.HandleAsync);
        try
        {
            await app.StartAsync().ConfigureAwait(false);
        }
        catch (IOException e)
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw new ConfigException(DescribeBindFailure(e, http?.Listen, metrics?.Listen));
        }
        host.ApiEndPoint = http?.Listen;
        if (metrics is not null)
            log.Info($"metrics on http://{metrics.Listen}/metrics{(metrics.IsLoopback ? "" : " (not loopback: reachable from the network)")}");
        return host;
    }

    /// <summary>
    /// The message path, once the spool is open (and privileges dropped: the files below belong to
    /// the relay's user): the tokens, the unsubscribe key, the idempotency journal and the
    /// unsubscribes are read, and the API accepts messages from now on.
    /// </summary>
    /// <exception cref="ConfigException">The tokens file or the unsubscribe key cannot be read.</exception>
    public void Attach(HttpSettings? http, SpoolIntake intake, QueueIdGenerator ids, Func<IMessageSigner?> signer, string spoolDirectory, string hostname,
        long maxMessageSize, IUnsubscribeRecorder? unsubscribes = null, IIdempotencyStore? sharedIdempotency = null)
    {
        if (_apiEndpoint is null || http is null)
            return;
        var config = ApiConfiguration.Load(http);
        Volatile.Write(ref _config, config);
        var journal = IdempotencyJournal.Open(spoolDirectory, DateTimeOffset.UtcNow);
        journal.Shared = sharedIdempotency; // a fleet's keys (null: this node's journal alone)
        var recorder = unsubscribes ?? FileUnsubscribeRecorder.Open(spoolDirectory);
        Volatile.Write(ref _attached, new Attached(intake, ids, signer, journal, recorder, hostname, maxMessageSize, null!) with
        {
            Injection = new InjectionService(this),
        });
        Log.Info($"http API on {(http.Tls ? "https" : "http")}://{http.Listen}/api/v1/messages, {config.Tokens.Count} token(s) from {config.Tokens.Path}");
    }

    /// <summary>
    /// The option and address Kestrel could not bind, said as the SMTP listeners say it
    /// (<see cref="Net.ExclusiveBind.Describe"/>): "metrics.listen: cannot listen on IP:PORT: the
    /// address is already in use ...". Kestrel names the address in its message.
    /// </summary>
    private static string DescribeBindFailure(IOException e, System.Net.IPEndPoint? api, System.Net.IPEndPoint? metrics)
    {
        var (option, where) = metrics is not null && (api is null || e.Message.Contains(metrics.ToString(), StringComparison.Ordinal))
            ? ("metrics.listen", metrics)
            : ("http.listen", api!);
        var socket = e.GetBaseException() as System.Net.Sockets.SocketException
                     ?? (e.InnerException is Microsoft.AspNetCore.Connections.AddressInUseException
                         ? new System.Net.Sockets.SocketException((int)System.Net.Sockets.SocketError.AddressAlreadyInUse)
                         : null);
        return socket is null ? $"{option}: cannot listen on {where}: {e.Message}" : $"{option}: {Net.ExclusiveBind.Describe(where, socket)}";
    }

    /// <summary>Swaps in a reloaded configuration (tokens, limits, unsubscribe); the listeners stay.</summary>
    public void Use(ApiConfiguration? config)
    {
        if (config is not null && _apiEndpoint is not null)
            Volatile.Write(ref _config, config);
    }

    private Task HandleAsync(HttpContext context)
    {
        var path = context.Request.Path.Value ?? "/";
        int port = context.Connection.LocalPort;
        if (_metricsEndpoint is not null && port == _metricsEndpoint.Port && (port != _apiEndpoint?.Port || path == "/metrics"))
            return ServeMetricsAsync(context, path);
        if (path == "/api/v1/messages")
            return ServeInjectionAsync(context);
        if (path.StartsWith("/u/", StringComparison.Ordinal))
            return ServeUnsubscribeAsync(context, path[3..]);
        return WriteAsync(context, InjectionService.Error(404, "no such path; messages are posted to /api/v1/messages"));
    }

    private static Task ServeMetricsAsync(HttpContext context, string path)
    {
        var method = context.Request.Method;
        if (path != "/metrics")
            return WriteText(context, 404, "not found; the metrics are at /metrics\n");
        if (!HttpMethods.IsGet(method) && !HttpMethods.IsHead(method))
        {
            context.Response.Headers.Allow = "GET, HEAD";
            return WriteText(context, 405, "only GET\n");
        }
        var body = Encoding.UTF8.GetBytes(RelayMetrics.Registry.Render());
        context.Response.StatusCode = 200;
        context.Response.ContentType = "text/plain; version=0.0.4; charset=utf-8";
        context.Response.ContentLength = body.Length;
        return HttpMethods.IsHead(method) ? Task.CompletedTask : context.Response.Body.WriteAsync(body).AsTask();
    }

    private async Task ServeInjectionAsync(HttpContext context)
    {
        if (!HttpMethods.IsPost(context.Request.Method))
        {
            context.Response.Headers.Allow = "POST";
            await WriteAsync(context, InjectionService.Error(405, "use POST")).ConfigureAwait(false);
            return;
        }
        var config = Configuration;
        var attached = Volatile.Read(ref _attached);
        if (config is null || attached is null)
        {
            await WriteAsync(context, InjectionService.Error(503, "the relay is starting")).ConfigureAwait(false);
            return;
        }
        var token = Authenticate(context, config, out var refusal);
        if (token is null)
        {
            await WriteAsync(context, refusal).ConfigureAwait(false);
            return;
        }
        var (allowed, retryAfter) = await _rates.TakeAsync(token.Name, token.RequestsPerSecond ?? config.Settings.RequestsPerSecond).ConfigureAwait(false);
        if (!allowed)
        {
            context.Response.Headers.RetryAfter = retryAfter.ToString(System.Globalization.CultureInfo.InvariantCulture);
            await WriteAsync(context, InjectionService.Error(429, $"token '{token.Name}' is over its rate of requests per second")).ConfigureAwait(false);
            return;
        }
        var body = await ReadBodyAsync(context, config.Settings.MaxRequestBytes).ConfigureAwait(false);
        if (body is null)
        {
            await WriteAsync(context, InjectionService.Error(413, $"the body is larger than http.maxRequestBytes ({config.Settings.MaxRequestBytes} bytes)")).ConfigureAwait(false);
            return;
        }
        var client = context.Connection.RemoteIpAddress?.ToString() ?? "unknown";
        InjectionService.Answer answer;
        try
        {
            answer = await attached.Injection.InjectAsync(token, config, body, client, context.Request.IsHttps).ConfigureAwait(false);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // A bug, not bad input: logged once with its stack; the client gets JSON and the server lives on.
            Log.Error($"http: request from {client} (token {token.Name}) failed: {ExceptionText.Of(e)}");
            answer = InjectionService.Error(500, "internal error; nothing was acknowledged (see the relay's log)");
        }
        if (answer.Replayed)
            context.Response.Headers["Idempotent-Replayed"] = "true";
        await WriteAsync(context, answer).ConfigureAwait(false);
    }

    /// <summary>The token of "Authorization: Bearer ...", or null and the 401/403 to send. The credential itself is never logged or echoed.</summary>
    private static ApiToken? Authenticate(HttpContext context, ApiConfiguration config, out InjectionService.Answer refusal)
    {
        refusal = default;
        var header = context.Request.Headers.Authorization.ToString();
        if (header.Length == 0)
        {
            context.Response.Headers.WWWAuthenticate = "Bearer";
            refusal = InjectionService.Error(401, "no token: send Authorization: Bearer TOKEN (nativerelay token add)");
            return null;
        }
        if (!header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase))
        {
            context.Response.Headers.WWWAuthenticate = "Bearer";
            refusal = InjectionService.Error(401, "the Authorization header is not 'Bearer TOKEN'");
            return null;
        }
        var token = config.Tokens.Find(header.AsSpan(7).Trim());
        if (token is null)
        {
            context.Response.Headers.WWWAuthenticate = "Bearer error=\"invalid_token\"";
            refusal = InjectionService.Error(401, "unknown token");
        }
        return token;
    }

    /// <summary>The whole body, or null when it is over the limit (Kestrel enforces the same limit while reading).</summary>
    private static async Task<byte[]?> ReadBodyAsync(HttpContext context, long limit)
    {
        if (context.Request.ContentLength > limit)
            return null;
        var feature = context.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpMaxRequestBodySizeFeature>();
        if (feature is { IsReadOnly: false })
            feature.MaxRequestBodySize = limit;
        using var buffer = new MemoryStream((int)Math.Min(context.Request.ContentLength ?? 16 * 1024, limit));
        try
        {
            await context.Request.Body.CopyToAsync(buffer).ConfigureAwait(false);
        }
        catch (Microsoft.AspNetCore.Http.BadHttpRequestException e) when (e.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            return null;
        }
        return buffer.ToArray();
    }

    private async Task ServeUnsubscribeAsync(HttpContext context, string token)
    {
        var links = Configuration?.Unsubscribe;
        var attached = Volatile.Read(ref _attached);
        bool post = HttpMethods.IsPost(context.Request.Method);
        if (!post && !HttpMethods.IsGet(context.Request.Method))
        {
            context.Response.Headers.Allow = "GET, POST";
            await WriteText(context, 405, "GET or POST\n").ConfigureAwait(false);
            return;
        }
        if (links is null || attached is null || !links.TryVerify(token, DateTimeOffset.UtcNow, out var recipient, out var domain, out var list))
        {
            // Forged, expired or cut short: nobody is named, nothing changes.
            await WriteText(context, 404, "This unsubscribe link is not valid or has expired.\n").ConfigureAwait(false);
            return;
        }
        if (!post)
        {
            var html = $"<!doctype html><meta charset=utf-8><title>Unsubscribe</title>"
                       + $"<p>Stop mail from {WebUtility.HtmlEncode(domain)} ({WebUtility.HtmlEncode(list)}) to {WebUtility.HtmlEncode(recipient)}?</p>"
                       + $"<form method=post><input type=hidden name=List-Unsubscribe value=One-Click><button>Unsubscribe</button></form>\n";
            context.Response.StatusCode = 200;
            context.Response.ContentType = "text/html; charset=utf-8";
            await context.Response.WriteAsync(html).ConfigureAwait(false);
            return;
        }
        await attached.Unsubscribes.RecordAsync(recipient, domain, list).ConfigureAwait(false);
        Log.Info($"unsubscribe: {recipient} from {domain} list {list}");
        Events.Unsubscribed(recipient, domain, list);
        context.Response.StatusCode = 200; // RFC 8058 3.2: no page, no redirect
        context.Response.ContentLength = 0;
    }

    private static Task WriteAsync(HttpContext context, InjectionService.Answer answer)
    {
        context.Response.StatusCode = answer.Status;
        context.Response.ContentType = "application/json";
        context.Response.ContentLength = answer.Body.Length;
        return context.Response.Body.WriteAsync(answer.Body).AsTask();
    }

    private static Task WriteText(HttpContext context, int status, string text)
    {
        var body = Encoding.UTF8.GetBytes(text);
        context.Response.StatusCode = status;
        context.Response.ContentType = "text/plain; charset=utf-8";
        context.Response.ContentLength = body.Length;
        return context.Response.Body.WriteAsync(body).AsTask();
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await _app.StopAsync(deadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
        }
        await _app.DisposeAsync().ConfigureAwait(false);
    }
}
