using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit.Abstractions;

namespace NativeRelay.Tests.Support;

/// <summary>
/// The published relay set up for MX delivery on loopback: it asks the test's DNS responder
/// (<c>--dns</c>), connects to MX hosts on the peers' port (<c>--remote-port</c>), retries after
/// one to two seconds, and writes its JSON delivery log into the test's directory.
/// </summary>
public sealed class MxRelay : IAsyncDisposable
{
    private MxRelay(TempDir dir, RelayProcess process, int port, string deliveryLog, string configPath, string[] flags)
    {
        Dir = dir;
        Process = process;
        Port = port;
        DeliveryLogPath = deliveryLog;
        ConfigPath = configPath;
        Flags = flags;
    }

    public const string Hostname = "relay.test";

    public TempDir Dir { get; }
    public RelayProcess Process { get; private set; }
    public int Port { get; private set; }
    public string DeliveryLogPath { get; }
    private string ConfigPath { get; }
    private string[] Flags { get; }

    /// <summary>
    /// Writes the config (the delivery section and anything <paramref name="configure"/> adds) and
    /// starts <c>nativerelay serve --config FILE --dns DNS --remote-port PORT</c>.
    /// </summary>
    public static async Task<MxRelay> StartAsync(ITestOutputHelper log, TestDnsServer dns, int remotePort,
        Action<JsonObject>? configure = null, string[]? extraFlags = null)
    {
        var dir = new TempDir("nativerelay-mx");
        try
        {
            int port = FreePort.Get();
            string deliveryLog = dir.File("delivery.log");
            var root = new JsonObject
            {
                ["hostname"] = Hostname,
                ["listen"] = new JsonArray($"127.0.0.1:{port}"),
                ["spool"] = dir.Spool,
                ["delivery"] = new JsonObject
                {
                    ["retryInitialSeconds"] = 1,
                    ["retryMaxSeconds"] = 2,
                    ["connectTimeoutSeconds"] = 10,
                    ["commandTimeoutSeconds"] = 60,
                    ["logFile"] = deliveryLog,
                },
                ["routing"] = new JsonObject { ["dnsTimeoutSeconds"] = 2 },
            };
            configure?.Invoke(root);
            string path = dir.File("relay.json");
            File.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            string[] flags = ["--dns", dns.Address, "--remote-port", remotePort.ToString(), .. extraFlags ?? []];
            var process = await RelayProcess.StartServeAsync(new[] { "--config", path }.Concat(flags), port, dir.Path, log).ConfigureAwait(false);
            return new MxRelay(dir, process, port, deliveryLog, path, flags);
        }
        catch
        {
            dir.Dispose();
            throw;
        }
    }

    /// <summary>Kills the relay (SIGKILL) and starts it again on the same spool and config.</summary>
    public async Task RestartAsync(ITestOutputHelper log)
    {
        Process.Kill();
        await Process.WaitForExitAsync(Waits.Exit).ConfigureAwait(false);
        Process.Dispose();
        Process = await RelayProcess.StartServeAsync(new[] { "--config", ConfigPath }.Concat(Flags), Port, Dir.Path, log).ConfigureAwait(false);
    }

    /// <summary>Sends one message (EHLO, MAIL, RCPT..., DATA) and returns the queue id.</summary>
    public async Task<string> SendAsync(string from, IEnumerable<string> recipients, byte[] data, string? mailParameters = null)
    {
        await using var client = await TestSmtpClient.ConnectAndGreetAsync(Port).ConfigureAwait(false);
        await client.EhloAsync().ConfigureAwait(false);
        return await client.SendAcceptedAsync(from, recipients, data, mailParameters).ConfigureAwait(false);
    }

    /// <summary>The delivery log so far, one JSON object per line.</summary>
    public IReadOnlyList<JsonObject> DeliveryLog()
    {
        if (!File.Exists(DeliveryLogPath))
            return [];
        string text;
        using (var stream = new FileStream(DeliveryLogPath, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete))
        using (var reader = new StreamReader(stream, Encoding.UTF8))
            text = reader.ReadToEnd();
        var events = new List<JsonObject>();
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0)
                continue;
            // A line being written right now may be cut short: only whole lines count.
            try
            {
                if (JsonNode.Parse(line) is JsonObject o)
                    events.Add(o);
            }
            catch (JsonException)
            {
            }
        }
        return events;
    }

    /// <summary>Delivery-log events of one message (by queue id), optionally of one kind.</summary>
    public IReadOnlyList<JsonObject> Events(string queueId, string? kind = null) =>
        DeliveryLog().Where(e => (string?)e["id"] == queueId && (kind is null || (string?)e["event"] == kind)).ToList();

    /// <summary>Waits (bounded) until the delivery log has an event matching the predicate.</summary>
    public async Task<JsonObject> WaitForEventAsync(Func<JsonObject, bool> predicate, string what)
    {
        var deadline = DateTime.UtcNow + Waits.Delivery;
        while (true)
        {
            var found = DeliveryLog().FirstOrDefault(predicate);
            if (found is not null)
                return found;
            if (DateTime.UtcNow >= deadline)
                throw new Xunit.Sdk.XunitException($"The delivery log has no {what} after {Waits.Delivery.TotalSeconds:0} s.\n{DescribeLog()}\n{Process.Describe()}");
            await Task.Delay(100).ConfigureAwait(false);
        }
    }

    public Task<JsonObject> WaitForEventAsync(string queueId, string kind, string? recipient = null) =>
        WaitForEventAsync(e => (string?)e["id"] == queueId && (string?)e["event"] == kind
                               && (recipient is null || (string?)e["rcpt"] == recipient),
            $"'{kind}' event for {queueId}{(recipient is null ? "" : " " + recipient)}");

    public string DescribeLog() => "--- delivery log ---\n" + string.Join("\n", DeliveryLog().TakeLast(60).Select(e => e.ToJsonString()));

    public string Describe() => Process.Describe() + "\n" + DescribeLog();

    public async ValueTask DisposeAsync()
    {
        Process.Dispose();
        await Task.CompletedTask.ConfigureAwait(false);
        Dir.Dispose();
    }
}
