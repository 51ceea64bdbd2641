using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using NativeRelay.Telemetry;
using StackExchange.Redis;

namespace NativeRelay.Cluster;

/// <summary>
/// The node's one connection to Redis (StackExchange.Redis multiplexes every command and the
/// subscriptions over it, and reconnects by itself). It says whether Redis answers now
/// (<see cref="Available"/>): the parts of the cluster stage ask before each use and fall back to
/// local state when it does not, so mail never waits for Redis. Keys and channels all start with
/// the configured prefix; Lua scripts are sent once per server and then called by their hash.
/// </summary>
public sealed class RedisLink : IAsyncDisposable
{
    private readonly ClusterSettings _settings;
    private readonly Log _log;
    private readonly ConnectionMultiplexer _mux;
    private int _available;

    private readonly TlsTrust? _tls;
    // 1 once why Redis cannot be used has been logged (reset when it answers): see ConnectionFailed.
    private int _whyLogged;
    private int _disposed;

    private RedisLink(ClusterSettings settings, Log log, ConnectionMultiplexer mux, TlsTrust? tls)
    {
        _settings = settings;
        _log = log;
        _mux = mux;
        _tls = tls;
        _available = mux.IsConnected ? 1 : 0;
        mux.ConnectionFailed += (_, e) => ConnectionFailed($"{e.FailureType} at {e.EndPoint}: {FirstSentence(Innermost(e.Exception)?.Message)}");
        mux.ConnectionRestored += (_, e) => SetAvailable(_mux.IsConnected, null);
        ClusterMetrics.RedisUp.SetSource(() => Available ? 1 : 0);
    }

    // A node that never reached Redis (a wrong password file, a server certificate it does not
    // trust) is already marked away, so SetAvailable would say nothing and the operator would see
    // only "cannot reach Redis yet", as if the server were down: the first failure's reason (the
    // client library's, and why the certificate was refused) is logged once. Never the password:
    // the client library does not put it in its messages.
    private void ConnectionFailed(string why)
    {
        if (_tls?.LastRefusal is { } refusal)
            why += " (" + refusal + ")";
        if (Volatile.Read(ref _available) == 1)
        {
            SetAvailable(false, why);
            return;
        }
        if (Interlocked.Exchange(ref _whyLogged, 1) == 0)
            _log.Warn($"cluster: node {_settings.Node} cannot use Redis: {why}; it keeps trying, at its share of each limit meanwhile");
    }

    public ClusterSettings Settings => _settings;

    /// <summary>Whether Redis answered the last time it was asked (and the connection is up).</summary>
    public bool Available => Volatile.Read(ref _available) == 1 && _mux.IsConnected;

    /// <summary>Called (on a thread of the client library) when Redis goes away or comes back.</summary>
    public event Action<bool>? AvailabilityChanged;

    public IDatabase Database => _mux.GetDatabase();

    public ISubscriber Subscriber => _mux.GetSubscriber();

    /// <summary>"PREFIX:part" (a key or channel name of this fleet).</summary>
    public string Key(string part) => _settings.KeyPrefix + ":" + part;

    public RedisChannel Channel(string part) => RedisChannel.Literal(Key(part));

    /// <summary>
    /// Connects (or starts trying: a node starts without Redis and joins when it answers). The
    /// password is read from its file here, once; it is never logged.
    /// </summary>
    public static async Task<RedisLink> ConnectAsync(ClusterSettings settings, Log log)
    {
        var options = ConfigurationOptions.Parse(settings.Redis);
        options.AbortOnConnectFail = false;
        options.ClientName = "nativerelay-" + settings.Node;
        int timeout = (int)settings.Timeout.TotalMilliseconds;
        options.ConnectTimeout = Math.Max(timeout, 1000);
        options.SyncTimeout = timeout;
        options.AsyncTimeout = timeout;
        options.ConnectRetry = 1;
        options.KeepAlive = 5;
        // Reconnect quickly: the fallback to local shares lasts only as long as Redis is away.
        options.ReconnectRetryPolicy = new ExponentialRetry(250, 5000);
        if (settings.PasswordFile is { } file)
        {
            try
            {
                options.Password = File.ReadLines(file).FirstOrDefault()?.TrimEnd('\r') ?? "";
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new Config.ConfigException($"cluster.passwordFile: cannot read {file}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
            }
        }
        TlsTrust? tls = null;
        if (options.Ssl)
        {
            var anchors = new X509Certificate2Collection();
            if (settings.CaFile is { } ca)
            {
                try
                {
                    anchors.ImportFromPemFile(ca);
                }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
                {
                    throw new Config.ConfigException($"cluster.caFile: cannot read {ca}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
                }
            }
            // Always our own check with ssl=true (the system store, then cluster.caFile): the
            // same verdict as the default one, but it can say why a certificate was refused.
            tls = new TlsTrust(anchors, settings.CaFile is not null);
            options.CertificateValidation += tls.Validate;
        }
        var mux = await ConnectionMultiplexer.ConnectAsync(options, TextWriter.Null);
        var link = new RedisLink(settings, log, mux, tls);
        if (link.Available)
            log.Info($"cluster: node {settings.Node} connected to Redis at {RedisConnectionString.Redact(settings.Redis)}");
        else
            log.Warn($"cluster: node {settings.Node} cannot reach Redis at {RedisConnectionString.Redact(settings.Redis)} yet: "
                     + "using its share of each limit until it answers");
        if (!link.Available)
            _ = link.ExplainAsync();
        return link;
    }

    // Why the first connection failed is known only to the client library (its first failure
    // event fires before the link can listen): a PING in the background fails with it as its
    // innermost exception (NOAUTH for a wrong password, the refused certificate), and it is logged
    // once. The start does not wait for it.
    private async Task ExplainAsync()
    {
        // A PING may time out before the library has recorded the failure (no inner exception,
        // nothing to tell): a few tries, each bounded by the command timeout.
        for (int attempt = 1; attempt <= 3; attempt++)
        {
            try
            {
                await _mux.GetDatabase().PingAsync().ConfigureAwait(false);
                return;
            }
            catch (Exception e) when (Volatile.Read(ref _disposed) == 0)
            {
                if (e.InnerException is null && attempt < 3)
                    continue;
                ConnectionFailed(FirstSentence(Innermost(e)?.Message));
                return;
            }
            catch (Exception)
            {
                return; // stopped meanwhile: nothing to say
            }
        }
    }

    private static Exception? Innermost(Exception? e)
    {
        while (e?.InnerException is { } inner)
            e = inner;
        return e;
    }

    /// <summary>A command failed for want of Redis (timeout, connection): the node falls back until it answers again.</summary>
    public void Failed(Exception e) => SetAvailable(false, FirstSentence(e.Message));

    /// <summary>
    /// The client library's messages carry hundreds of characters of diagnostics (buffers, thread
    /// pool, versions) after the first sentence: the log line keeps the sentence.
    /// </summary>
    internal static string FirstSentence(string? message)
    {
        if (string.IsNullOrEmpty(message))
            return "no detail";
        int end = message.IndexOfAny(['\r', '\n']);
        string line = end < 0 ? message : message[..end];
        int stop = line.IndexOf(". ", StringComparison.Ordinal);
        if (stop > 0)
            line = line[..stop];
        int comma = line.IndexOf(", mc:", StringComparison.Ordinal);
        if (comma > 0)
            line = line[..comma];
        return line.Length <= 200 ? line : line[..200] + "...";
    }

    /// <summary>A command was answered: Redis is back if it was away.</summary>
    public void Answered()
    {
        if (Volatile.Read(ref _available) == 0 && _mux.IsConnected)
            SetAvailable(true, null);
    }

    /// <summary>Whether an exception means "Redis is away" (as opposed to a bug or a script error).</summary>
    public static bool IsUnavailable(Exception e) =>
        e is RedisConnectionException or RedisTimeoutException or TimeoutException or ObjectDisposedException
        || (e is RedisServerException s && (s.Message.StartsWith("LOADING", StringComparison.Ordinal)
                                            || s.Message.StartsWith("MASTERDOWN", StringComparison.Ordinal)
                                            || s.Message.StartsWith("READONLY", StringComparison.Ordinal)
                                            || s.Message.StartsWith("TRYAGAIN", StringComparison.Ordinal)
                                            || s.Message.StartsWith("CLUSTERDOWN", StringComparison.Ordinal)));

    private void SetAvailable(bool available, string? why)
    {
        int value = available ? 1 : 0;
        if (Interlocked.Exchange(ref _available, value) == value)
            return;
        Volatile.Write(ref _whyLogged, available ? 0 : 1);
        if (available)
            _log.Info($"cluster: Redis answers again: shared limits, actions and suppression are back in force on node {_settings.Node}");
        else
            _log.Warn($"cluster: Redis is unreachable ({why}): node {_settings.Node} is degraded, using its share of each limit "
                      + "and local state until it is back; mail keeps flowing");
        ClusterMetrics.DegradedTransitions.Increment();
        try
        {
            AvailabilityChanged?.Invoke(available);
        }
        catch (Exception e)
        {
            _log.Error($"cluster: reacting to Redis {(available ? "coming back" : "going away")} failed: {e}");
        }
    }

    /// <summary>
    /// Runs a Lua script by its hash (EVALSHA: the text is sent only the first time a server
    /// lacks it, on NOSCRIPT). Counts the round trip; a failure for want of Redis marks it away
    /// and is thrown again for the caller's fallback.
    /// </summary>
    public async Task<RedisResult> RunAsync(RedisScript script, RedisKey[] keys, RedisValue[] values)
    {
        var db = Database;
        ClusterMetrics.RedisCalls.Increment();
        try
        {
            RedisResult result;
            try
            {
                result = await db.ScriptEvaluateAsync(script.Hash, keys, values).ConfigureAwait(false);
            }
            catch (RedisServerException e) when (e.Message.StartsWith("NOSCRIPT", StringComparison.Ordinal))
            {
                result = await db.ScriptEvaluateAsync(script.Text, keys, values).ConfigureAwait(false);
            }
            Answered();
            return result;
        }
        catch (Exception e) when (IsUnavailable(e))
        {
            ClusterMetrics.RedisFailures.Increment();
            Failed(e);
            throw;
        }
    }

    /// <summary>Runs a plain command (or a few pipelined ones) with the same bookkeeping as <see cref="RunAsync"/>.</summary>
    public async Task<T> CallAsync<T>(Func<IDatabase, Task<T>> call)
    {
        ClusterMetrics.RedisCalls.Increment();
        try
        {
            var result = await call(Database).ConfigureAwait(false);
            Answered();
            return result;
        }
        catch (Exception e) when (IsUnavailable(e))
        {
            ClusterMetrics.RedisFailures.Increment();
            Failed(e);
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        Volatile.Write(ref _disposed, 1);
        ClusterMetrics.RedisUp.SetSource(null);
        try
        {
            await _mux.CloseAsync(allowCommandsToComplete: true).ConfigureAwait(false);
        }
        catch (Exception e) when (IsUnavailable(e))
        {
            // Closing a connection to a Redis that is gone: nothing to finish.
        }
        await _mux.DisposeAsync().ConfigureAwait(false);
    }
}

/// <summary>A Lua script and its SHA-1 (how Redis names a loaded script).</summary>
public sealed class RedisScript
{
    public RedisScript(string text)
    {
        Text = text;
        Hash = System.Security.Cryptography.SHA1.HashData(System.Text.Encoding.UTF8.GetBytes(text));
    }

    public string Text { get; }
    public byte[] Hash { get; }
}

/// <summary>
/// Whether the Redis server's certificate is trusted with ssl=true: by the system store, or by a
/// CA of cluster.caFile (a chain built on those anchors alone). A name other than the one asked
/// for (sslHost, or the host) is never forgiven. Remembers why it last refused, for the log.
/// </summary>
internal sealed class TlsTrust(X509Certificate2Collection anchors, bool caFile)
{
    private string? _lastRefusal;

    /// <summary>Why the last certificate was refused (null once one is trusted).</summary>
    public string? LastRefusal => Volatile.Read(ref _lastRefusal);

    public bool Validate(object sender, X509Certificate? certificate, X509Chain? chain, SslPolicyErrors errors)
    {
        string? refusal = Refusal(certificate, errors);
        Volatile.Write(ref _lastRefusal, refusal);
        return refusal is null;
    }

    private string? Refusal(X509Certificate? certificate, SslPolicyErrors errors)
    {
        if (errors == SslPolicyErrors.None)
            return null;
        if (certificate is null || (errors & SslPolicyErrors.RemoteCertificateNotAvailable) != 0)
            return "the server sent no certificate";
        if ((errors & SslPolicyErrors.RemoteCertificateNameMismatch) != 0)
            return $"the server's certificate ({certificate.Subject}) is not for the name asked for (sslHost in cluster.redis)";
        string where = caFile ? "cluster.caFile or the system store" : "the system store (cluster.caFile names a private CA)";
        if (anchors.Count == 0)
            return $"the server's certificate ({certificate.Subject}, issued by {certificate.Issuer}) is not signed by a CA of {where}";
        using var custom = new X509Chain();
        custom.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        custom.ChainPolicy.CustomTrustStore.AddRange(anchors);
        custom.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        using var leaf = new X509Certificate2(certificate);
        if (custom.Build(leaf))
            return null;
        string status = string.Join(", ", custom.ChainStatus.Select(s => s.Status.ToString()).Distinct());
        return $"the server's certificate ({certificate.Subject}, issued by {certificate.Issuer}) is not trusted by {where}: {status}";
    }
}
