using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace NativeRelay.Tests.Support;

/// <summary>Finds the published binary the end-to-end tests run.</summary>
public static class RelayBinary
{
    /// <summary>
    /// NATIVERELAY_BIN if set, else out/nativerelay under the repository root (the directory
    /// holding NativeRelay.sln, found by walking up from the test assembly). Fails the test with
    /// instructions when the file is not there.
    /// </summary>
    public static string Path
    {
        get
        {
            string? fromEnv = Environment.GetEnvironmentVariable("NATIVERELAY_BIN");
            string path;
            if (!string.IsNullOrWhiteSpace(fromEnv))
            {
                path = System.IO.Path.GetFullPath(fromEnv);
            }
            else
            {
                string? root = FindRepoRoot();
                if (root is null)
                {
                    Assert.Fail($"Cannot find NativeRelay.sln above {AppContext.BaseDirectory}; set NATIVERELAY_BIN to the published nativerelay binary.");
                }

                path = System.IO.Path.Combine(root!, "out", "nativerelay");
            }

            if (!File.Exists(path))
            {
                Assert.Fail($"The nativerelay binary was not found at {path}. Run `make publish` first (or set NATIVERELAY_BIN).");
            }

            return path;
        }
    }

    private static string? FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "NativeRelay.sln")))
            {
                return dir.FullName;
            }
        }

        return null;
    }
}

/// <summary>A fresh directory under the system temp dir, removed on dispose.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir(string prefix = "nativerelay-e2e")
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    /// <summary>A path inside this directory (not created).</summary>
    public string File(string name) => System.IO.Path.Combine(Path, name);

    /// <summary>The spool directory used by the tests ("spool" inside this directory).</summary>
    public string Spool => File("spool");

    public void Dispose()
    {
        for (int attempt = 0; attempt < 5; attempt++)
        {
            try
            {
                if (Directory.Exists(Path))
                {
                    Directory.Delete(Path, recursive: true);
                }

                return;
            }
            catch (IOException)
            {
                Thread.Sleep(200);
            }
            catch (UnauthorizedAccessException)
            {
                Thread.Sleep(200);
            }
        }
    }
}

/// <summary>Free loopback ports.</summary>
public static class FreePort
{
    /// <summary>Binds 127.0.0.1:0, reads the port the system chose, and releases it.</summary>
    public static int Get()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }
}

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

/// <summary>The bounded waits of the end-to-end tests: generous, for slow CI machines.</summary>
public static class Waits
{
    /// <summary>For a delivery or anything else that should happen soon.</summary>
    public static readonly TimeSpan Delivery = TimeSpan.FromSeconds(60);

    /// <summary>For a process to exit after a signal.</summary>
    public static readonly TimeSpan Exit = TimeSpan.FromSeconds(30);
}
