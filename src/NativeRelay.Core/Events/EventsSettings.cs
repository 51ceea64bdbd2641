using System.Globalization;
using NativeRelay.Config;

namespace NativeRelay.Events;

/// <summary>The validated <c>events</c> section.</summary>
public sealed record EventsSettings(IReadOnlyList<WebhookSettings> Webhooks, long SegmentBytes)
{
    public static EventsSettings Off { get; } = new([], 64L * 1024 * 1024);

    /// <summary>Events are journaled only when some webhook wants them.</summary>
    public bool Enabled => Webhooks.Count > 0;

    public static EventsSettings Validate(EventsOptions? o)
    {
        if (o is null)
            return Off;
        if (o.SegmentBytes is < 4096 or > 1L << 40)
            throw new ConfigException("events.segmentBytes: 4096 to 1 TiB");
        var webhooks = new List<WebhookSettings>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (int i = 0; i < o.Webhooks.Count; i++)
        {
            var w = WebhookSettings.Validate(o.Webhooks[i], $"events.webhooks[{i}]");
            if (!names.Add(w.Name))
                throw new ConfigException($"events.webhooks[{i}]: a second webhook named '{w.Name}' (names key the cursor files; give each a name)");
            webhooks.Add(w);
        }
        return new EventsSettings(webhooks, o.SegmentBytes);
    }
}

/// <summary>
/// One validated webhook. A class, not a record: nothing here may ever print the secret, and the
/// secret is not even here (it is read from <see cref="SecretFile"/> when the sink starts).
/// </summary>
public sealed class WebhookSettings
{
    public required string Name { get; init; }
    public required Uri Url { get; init; }
    public required string SecretFile { get; init; }
    /// <summary>Bits of the accepted types (<see cref="RelayEventTypes.Bit"/>).</summary>
    public int Types { get; init; } = RelayEventTypes.AllBits;
    /// <summary>Accepted pools; null: all.</summary>
    public IReadOnlySet<string>? Pools { get; init; }
    public int BatchSize { get; init; } = 100;
    public TimeSpan BatchDelay { get; init; } = TimeSpan.FromSeconds(1);
    public long MaxBacklog { get; init; } = 1_000_000;
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(30);
    public TimeSpan MaxRetry { get; init; } = TimeSpan.FromSeconds(300);

    public bool Accepts(RelayEventType type, string pool) =>
        (Types & RelayEventTypes.Bit(type)) != 0 && (Pools is null || Pools.Contains(pool));

    // Without the query: some receivers put a token there.
    public override string ToString() => $"{Name} ({Url.GetLeftPart(UriPartial.Path)})";

    public static WebhookSettings Validate(WebhookOptions o, string where)
    {
        if (!Uri.TryCreate(o.Url?.Trim(), UriKind.Absolute, out var url) || (url.Scheme != Uri.UriSchemeHttp && url.Scheme != Uri.UriSchemeHttps))
            throw new ConfigException($"{where}.url: '{o.Url}' is not an http:// or https:// URL");
        if (!string.IsNullOrEmpty(url.UserInfo))
            throw new ConfigException($"{where}.url: no user:password in the URL (it would be logged); sign with secretFile");
        if (string.IsNullOrWhiteSpace(o.SecretFile))
            throw new ConfigException($"{where}.secretFile: every webhook signs its POSTs; name the file with the secret (--webhook-secret-file on the command line)");
        int types = RelayEventTypes.AllBits;
        if (o.Types is not null)
        {
            types = 0;
            foreach (var typeName in o.Types)
            {
                if (!RelayEventTypes.TryParse(typeName, out var type))
                    throw new ConfigException($"{where}.types: '{typeName}' is not an event type ({string.Join(", ", RelayEventTypes.All)})");
                types |= RelayEventTypes.Bit(type);
            }
            if (types == 0)
                throw new ConfigException($"{where}.types: empty (leave it out for every type)");
        }
        if (o.Pools is { Count: 0 })
            throw new ConfigException($"{where}.pools: empty (leave it out for every pool)");
        if (o.BatchSize is < 1 or > 10_000)
            throw new ConfigException($"{where}.batchSize: 1 to 10000");
        if (o.BatchMilliseconds is < 0 or > 600_000)
            throw new ConfigException($"{where}.batchMilliseconds: 0 to 600000");
        if (o.MaxBacklog < 1)
            throw new ConfigException($"{where}.maxBacklog: at least 1");
        if (o.TimeoutSeconds is < 1 or > 3600)
            throw new ConfigException($"{where}.timeoutSeconds: 1 to 3600");
        if (o.MaxRetrySeconds is < 1 or > 86_400)
            throw new ConfigException($"{where}.maxRetrySeconds: 1 to 86400");
        string name = o.Name ?? DefaultName(url);
        if (name.Length is 0 or > 64 || !name.All(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.'))
            throw new ConfigException($"{where}.name: '{name}' must be 1 to 64 letters, digits, '-', '_' or '.'");
        return new WebhookSettings
        {
            Name = name,
            Url = url,
            SecretFile = Path.GetFullPath(o.SecretFile),
            Types = types,
            Pools = o.Pools is null ? null : o.Pools.ToHashSet(StringComparer.Ordinal),
            BatchSize = o.BatchSize,
            BatchDelay = TimeSpan.FromMilliseconds(o.BatchMilliseconds),
            MaxBacklog = o.MaxBacklog,
            Timeout = TimeSpan.FromSeconds(o.TimeoutSeconds),
            MaxRetry = TimeSpan.FromSeconds(o.MaxRetrySeconds),
        };
    }

    /// <summary>
    /// The URL's host and the first 8 hex digits of its SHA-256: stable across restarts, so the
    /// cursor follows the URL. BouncyCastle's SHA-256, not .NET's: .NET's needs OpenSSL on Linux,
    /// and validation must not, so that a host without it gets StartupChecks' one line.
    /// </summary>
    private static string DefaultName(Uri url)
    {
        var sha256 = new Org.BouncyCastle.Crypto.Digests.Sha256Digest();
        var bytes = System.Text.Encoding.UTF8.GetBytes(url.AbsoluteUri);
        sha256.BlockUpdate(bytes, 0, bytes.Length);
        var hash = new byte[sha256.GetDigestSize()];
        sha256.DoFinal(hash, 0);
        string host = new(url.Host.Where(c => char.IsAsciiLetterOrDigit(c) || c is '-' or '.').Take(40).ToArray());
        return (host.Length == 0 ? "webhook" : host) + "-" + Convert.ToHexStringLower(hash, 0, 4);
    }

    /// <summary>Reads the secret: the file's bytes without a final newline. Never logged.</summary>
    public byte[] ReadSecret()
    {
        byte[] bytes;
        try
        {
            bytes = File.ReadAllBytes(SecretFile);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"webhook {Name}: cannot read its secret file {SecretFile}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
        int n = bytes.Length;
        while (n > 0 && bytes[n - 1] is (byte)'\n' or (byte)'\r')
            n--;
        if (n == 0)
            throw new ConfigException($"webhook {Name}: the secret file {SecretFile} is empty");
        return bytes.AsSpan(0, n).ToArray();
    }
}
