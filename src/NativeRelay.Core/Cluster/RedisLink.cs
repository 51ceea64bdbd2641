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

    private RedisLink(ClusterSettings settings, Log log, ConnectionMultiplexer mux)
    {
        _settings = settings;
        _log = log;
        _mux = mux;
        _available = mux.IsConnected ? 1 : 0;
        mux.ConnectionFailed += (_, e) => SetAvailable(false, $"{e.FailureType} at {e.EndPoint}: {FirstSentence(e.Exception?.Message)}");
        mux.ConnectionRestored += (_, e) => SetAvailable(_mux.IsConnected, null);
        ClusterMetrics.RedisUp.SetSource(() => Available ? 1 : 0);
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
                throw new Config.ConfigException($"cluster.passwordFile: cannot read {file}: {e.Message}");
            }
        }
        if (settings.CaFile is { } ca)
        {
            var anchors = new X509Certificate2Collection();
            try
            {
                anchors.ImportFromPemFile(ca);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
            {
                throw new Config.ConfigException($"cluster.caFile: cannot read {ca}: {e.Message}");
            }
            options.CertificateValidation += (_, certificate, _, errors) => TrustedBy(anchors, certificate, errors);
        }
        var mux = await ConnectionMultiplexer.ConnectAsync(options, TextWriter.Null);
        var link = new RedisLink(settings, log, mux);
        if (link.Available)
            log.Info($"cluster: node {settings.Node} connected to Redis at {RedisConnectionString.Redact(settings.Redis)}");
        else
            log.Warn($"cluster: node {settings.Node} cannot reach Redis at {RedisConnectionString.Redact(settings.Redis)} yet: "
                     + "using its share of each limit until it answers");
        return link;
    }

    private static bool TrustedBy(X509Certificate2Collection anchors, X509Certificate? certificate, SslPolicyErrors errors)
    {
        if (errors == SslPolicyErrors.None)
            return true;
        if (certificate is null || (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != 0)
            return false; // a name mismatch is never forgiven
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.AddRange(anchors);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        using var leaf = new X509Certificate2(certificate);
        return chain.Build(leaf);
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
