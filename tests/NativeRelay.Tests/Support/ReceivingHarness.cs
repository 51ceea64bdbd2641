using System.Text.Json;
using System.Text.Json.Nodes;
using NativeRelay.Smtp.Auth;
using Xunit.Abstractions;

namespace NativeRelay.Tests.Support;

/// <summary>
/// One receiving-side test's world: a temp dir, a test sink as next hop, and the relay started
/// with a JSON config the test can shape freely (limits, policy, TLS, listeners). Optionally a
/// test certificate, a submission and an implicit-TLS listener, and a users file with
/// <see cref="User"/> / <see cref="Password"/>. Disposal stops the relay, the sink, removes the dir.
/// </summary>
public sealed class ReceivingHarness : IAsyncDisposable
{
    public const string User = "alice@example.test";
    public const string Password = "correct horse battery staple";

    private ReceivingHarness(TempDir dir, TestSmtpSink sink)
    {
        Dir = dir;
        Sink = sink;
    }

    public TempDir Dir { get; }

    public TestSmtpSink Sink { get; }

    public RelayProcess Relay { get; private set; } = null!;

    public JsonObject Config { get; private set; } = null!;

    public string ConfigPath => Dir.File("relay.json");

    /// <summary>The plain SMTP listener (always there).</summary>
    public int Port { get; private set; }

    /// <summary>The submission listener, or 0.</summary>
    public int SubmissionPort { get; private set; }

    /// <summary>The implicit-TLS listener, or 0.</summary>
    public int ImplicitTlsPort { get; private set; }

    public TestCertificate? Certificate { get; private set; }

    public string? UsersFile { get; private set; }

    public const string Hostname = "relay.test";

    public sealed class Options
    {
        public bool Tls { get; init; }

        public bool Submission { get; init; }

        public bool ImplicitTls { get; init; }

        /// <summary>Write a users file with <see cref="User"/> even without a submission listener.</summary>
        public bool Users { get; init; }

        /// <summary>Edits the config before the relay starts (limits, relayNetworks, acceptedDomains...).</summary>
        public Action<JsonObject>? Configure { get; init; }

        public Action<TestSmtpSink>? ConfigureSink { get; init; }
    }

    public static async Task<ReceivingHarness> StartAsync(ITestOutputHelper log, Options? options = null)
    {
        options ??= new Options();
        var dir = new TempDir();
        var sink = new TestSmtpSink();
        var h = new ReceivingHarness(dir, sink);
        try
        {
            options.ConfigureSink?.Invoke(sink);
            h.Port = FreePort.Get();
            var config = new JsonObject
            {
                ["hostname"] = Hostname,
                ["listen"] = new JsonArray($"127.0.0.1:{h.Port}"),
                ["spool"] = dir.Spool,
                ["relayTo"] = sink.Endpoint,
                ["delivery"] = new JsonObject { ["retryInitialSeconds"] = 1, ["retryMaxSeconds"] = 2 },
            };
            var listeners = new JsonArray();
            if (options.Tls || options.ImplicitTls)
            {
                h.Certificate = TestCertificate.Create(dir.Path);
                config["tls"] = new JsonObject { ["certificate"] = h.Certificate.CertificatePath, ["key"] = h.Certificate.KeyPath };
            }

            if (options.Submission || options.ImplicitTls || options.Users)
            {
                h.UsersFile = dir.File("users");
                // Few iterations keep the tests quick; the format and the code path are the real ones.
                File.WriteAllText(h.UsersFile, $"# test users\n{User}:{PasswordHash.Create(Password, 1000)}\n");
                config["usersFile"] = h.UsersFile;
            }

            if (options.Submission)
            {
                h.SubmissionPort = FreePort.Get();
                listeners.Add(new JsonObject { ["address"] = $"127.0.0.1:{h.SubmissionPort}", ["kind"] = "submission" });
            }

            if (options.ImplicitTls)
            {
                h.ImplicitTlsPort = FreePort.Get();
                listeners.Add(new JsonObject { ["address"] = $"127.0.0.1:{h.ImplicitTlsPort}", ["kind"] = "implicit-tls" });
            }

            if (listeners.Count > 0)
            {
                config["listeners"] = listeners;
            }

            options.Configure?.Invoke(config);
            h.Config = config;
            File.WriteAllText(h.ConfigPath, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
            h.Relay = await RelayProcess.StartServeAsync(["--config", h.ConfigPath], h.Port, dir.Path, log).ConfigureAwait(false);
            return h;
        }
        catch
        {
            await h.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>The "limits" object of the config, created if missing.</summary>
    public static JsonObject Limits(JsonObject config)
    {
        if (config["limits"] is not JsonObject limits)
        {
            limits = new JsonObject();
            config["limits"] = limits;
        }

        return limits;
    }

    public Task<TestSmtpClient> ConnectAsync() => TestSmtpClient.ConnectAndGreetAsync(Port);

    public async Task<TestSmtpClient> ConnectEhloAsync()
    {
        var client = await ConnectAsync().ConfigureAwait(false);
        await client.EhloAsync().ConfigureAwait(false);
        return client;
    }

    /// <summary>Waits for a message at the sink with this Message-ID (without brackets).</summary>
    public async Task<ReceivedMessage> WaitForMessageIdAsync(string messageId)
    {
        try
        {
            return await Sink.WaitForMessageAsync(m => m.Header("Message-ID") == $"<{messageId}>", Waits.Delivery, $"message <{messageId}>").ConfigureAwait(false);
        }
        catch (TimeoutException ex)
        {
            throw new Xunit.Sdk.XunitException(ex.Message + "\n" + Relay.Describe());
        }
    }

    /// <summary>
    /// Proves that nothing else reaches the sink: sends a marker message on a new connection,
    /// waits for it, and returns everything the sink got (the marker included). Deliveries are in
    /// queue order, so anything queued before the marker has had its chance to arrive.
    /// </summary>
    public async Task<IReadOnlyList<ReceivedMessage>> DeliveredBeforeMarkerAsync(string marker)
    {
        await using (var client = await ConnectEhloAsync().ConfigureAwait(false))
        {
            await client.SendAcceptedAsync("sender@example.test", ["rcpt@example.test"], MessageText.Simple(marker)).ConfigureAwait(false);
            await client.CommandAsync("QUIT").ConfigureAwait(false);
        }

        await WaitForMessageIdAsync(marker).ConfigureAwait(false);
        return Sink.Messages;
    }

    public string Describe() => Relay.Describe() + "\n" + Sink.Describe();

    public async ValueTask DisposeAsync()
    {
        Relay?.Dispose();
        await Sink.DisposeAsync().ConfigureAwait(false);
        Dir.Dispose();
    }
}
