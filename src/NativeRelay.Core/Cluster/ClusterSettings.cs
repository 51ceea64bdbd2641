using NativeRelay.Config;

namespace NativeRelay.Cluster;

/// <summary>The validated <c>cluster</c> section (see <see cref="ClusterOptions"/>).</summary>
public sealed record ClusterSettings
{
    /// <summary>The connection string as given (no password: that is refused in it).</summary>
    public required string Redis { get; init; }
    public string? PasswordFile { get; init; }
    public string? CaFile { get; init; }
    public required string Node { get; init; }
    public required string KeyPrefix { get; init; }
    public required TimeSpan Lease { get; init; }
    public required TimeSpan Heartbeat { get; init; }
    public required int RateBatch { get; init; }
    public required TimeSpan Timeout { get; init; }

    /// <summary>A node whose last heartbeat is older than this is not counted as live.</summary>
    public TimeSpan NodeExpiry => Heartbeat * 3;

    /// <summary>The settings, or null when no Redis is configured; ConfigException names the option that is wrong.</summary>
    public static ClusterSettings? Validate(ClusterOptions o, string hostname)
    {
        if (string.IsNullOrWhiteSpace(o.Redis))
        {
            if (o.PasswordFile is not null || o.Node is not null)
                throw new ConfigException("cluster: passwordFile and node need cluster.redis (the Redis connection string)");
            return null;
        }
        string redis = o.Redis.Trim();
        StackExchange.Redis.ConfigurationOptions parsed;
        try
        {
            parsed = StackExchange.Redis.ConfigurationOptions.Parse(redis);
        }
        catch (Exception e) when (e is ArgumentException or FormatException or NotSupportedException)
        {
            throw new ConfigException($"cluster.redis: '{RedisConnectionString.Redact(redis)}' is not a Redis connection string: {e.Message}");
        }
        if (parsed.EndPoints.Count == 0)
            throw new ConfigException("cluster.redis: no host:port in the connection string (e.g. 127.0.0.1:6379)");
        if (!string.IsNullOrEmpty(parsed.Password))
            throw new ConfigException("cluster.redis: a password in the connection string would be shown in logs and process lists; put it in cluster.passwordFile (--redis-password-file)");
        if (o.PasswordFile is not null && !File.Exists(o.PasswordFile))
            throw new ConfigException($"cluster.passwordFile: {o.PasswordFile} does not exist");
        if (o.CaFile is not null && !File.Exists(o.CaFile))
            throw new ConfigException($"cluster.caFile: {o.CaFile} does not exist");
        string node = string.IsNullOrWhiteSpace(o.Node) ? hostname : o.Node.Trim();
        if (node.Length > 128 || node.Any(c => char.IsWhiteSpace(c) || char.IsControl(c) || c is '|' or '{' or '}'))
            throw new ConfigException($"cluster.node: '{node}' must be 1 to 128 characters without spaces, '|', '{{' or '}}'");
        string prefix = o.KeyPrefix.Trim();
        if (prefix.Length is 0 or > 64 || prefix.Any(c => char.IsWhiteSpace(c) || char.IsControl(c) || c is '{' or '}'))
            throw new ConfigException("cluster.keyPrefix: 1 to 64 characters without spaces or braces");
        if (o.LeaseSeconds is < 3 or > 3600)
            throw new ConfigException("cluster.leaseSeconds: 3 to 3600");
        if (o.HeartbeatSeconds < 1 || o.HeartbeatSeconds * 3 > o.LeaseSeconds * 2 + 60)
            throw new ConfigException("cluster.heartbeatSeconds: at least 1, and not long beside cluster.leaseSeconds");
        if (o.RateBatch is < 1 or > 1000)
            throw new ConfigException("cluster.rateBatch: 1 to 1000");
        if (o.TimeoutMilliseconds is < 50 or > 60_000)
            throw new ConfigException("cluster.timeoutMilliseconds: 50 to 60000");
        return new ClusterSettings
        {
            Redis = redis,
            PasswordFile = o.PasswordFile is null ? null : Path.GetFullPath(o.PasswordFile),
            CaFile = o.CaFile is null ? null : Path.GetFullPath(o.CaFile),
            Node = node,
            KeyPrefix = prefix,
            Lease = TimeSpan.FromSeconds(o.LeaseSeconds),
            Heartbeat = TimeSpan.FromSeconds(o.HeartbeatSeconds),
            RateBatch = o.RateBatch,
            Timeout = TimeSpan.FromMilliseconds(o.TimeoutMilliseconds),
        };
    }
}

/// <summary>Connection strings as they may be shown (logs, check-config, errors).</summary>
public static class RedisConnectionString
{
    /// <summary>The string with any password=... value replaced by ***.</summary>
    public static string Redact(string connection)
    {
        var parts = connection.Split(',');
        for (int i = 0; i < parts.Length; i++)
        {
            int eq = parts[i].IndexOf('=');
            if (eq > 0 && parts[i][..eq].Trim().Equals("password", StringComparison.OrdinalIgnoreCase))
                parts[i] = parts[i][..(eq + 1)] + "***";
        }
        return string.Join(',', parts);
    }
}
