using System.Text.Json;
using System.Text.Json.Nodes;

namespace NativeRelay.Tests.Support;

/// <summary>The relay's JSON config file, with the keys the tests use.</summary>
public sealed class RelayConfig
{
    public string Hostname { get; set; } = "relay.test";

    public List<string> Listen { get; set; } = new();

    public string? Spool { get; set; }

    public string? RelayTo { get; set; }

    public int? RetryInitialSeconds { get; set; }

    public int? RetryMaxSeconds { get; set; }

    /// <summary>The port of the first listen address.</summary>
    public int Port => int.Parse(Listen[0][(Listen[0].LastIndexOf(':') + 1)..]);

    /// <summary>A config listening on a fresh loopback port, spooling into dir's spool, relaying to relayTo.</summary>
    public static RelayConfig For(TempDir dir, string? relayTo, int? retryInitialSeconds = 1, int? retryMaxSeconds = 2) => new()
    {
        Listen = { $"127.0.0.1:{FreePort.Get()}" },
        Spool = dir.Spool,
        RelayTo = relayTo,
        RetryInitialSeconds = retryInitialSeconds,
        RetryMaxSeconds = retryMaxSeconds,
    };

    public string ToJson()
    {
        var root = new JsonObject
        {
            ["hostname"] = Hostname,
            ["listen"] = new JsonArray(Listen.Select(l => (JsonNode?)JsonValue.Create(l)).ToArray()),
        };
        if (Spool is not null)
        {
            root["spool"] = Spool;
        }

        if (RelayTo is not null)
        {
            root["relayTo"] = RelayTo;
        }

        if (RetryInitialSeconds is not null || RetryMaxSeconds is not null)
        {
            var delivery = new JsonObject();
            if (RetryInitialSeconds is not null)
            {
                delivery["retryInitialSeconds"] = RetryInitialSeconds;
            }

            if (RetryMaxSeconds is not null)
            {
                delivery["retryMaxSeconds"] = RetryMaxSeconds;
            }

            root["delivery"] = delivery;
        }

        return root.ToJsonString(new JsonSerializerOptions { WriteIndented = true });
    }

    /// <summary>Writes the config to a file and returns its path.</summary>
    public string WriteTo(string path)
    {
        System.IO.File.WriteAllText(path, ToJson());
        return path;
    }
}
