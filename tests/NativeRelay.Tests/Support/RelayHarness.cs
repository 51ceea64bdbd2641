using Xunit.Abstractions;

namespace NativeRelay.Tests.Support;

/// <summary>
/// One test's world: a temp dir (spool and config inside), a test sink the relay delivers to,
/// and the relay process started with a config file. Disposal stops the relay first, then the
/// sink, then removes the temp dir.
/// </summary>
public sealed class RelayHarness : IAsyncDisposable
{
    private RelayHarness(TempDir dir, TestSmtpSink sink, RelayConfig config, RelayProcess relay)
    {
        Dir = dir;
        Sink = sink;
        Config = config;
        Relay = relay;
    }

    public TempDir Dir { get; }

    public TestSmtpSink Sink { get; }

    public RelayConfig Config { get; }

    public RelayProcess Relay { get; private set; }

    public int Port => Config.Port;

    public string Hostname => Config.Hostname;

    /// <summary>
    /// Starts a sink (configure it in <paramref name="configureSink"/>, before the relay runs) and a
    /// relay delivering to it, with retryInitialSeconds 1 and retryMaxSeconds 2.
    /// </summary>
    public static async Task<RelayHarness> StartAsync(ITestOutputHelper log, Action<TestSmtpSink>? configureSink = null)
    {
        var dir = new TempDir();
        TestSmtpSink? sink = null;
        try
        {
            sink = new TestSmtpSink();
            configureSink?.Invoke(sink);
            var config = RelayConfig.For(dir, sink.Endpoint);
            var relay = await RelayProcess.StartWithConfigAsync(config, dir, log).ConfigureAwait(false);
            return new RelayHarness(dir, sink, config, relay);
        }
        catch
        {
            if (sink is not null)
            {
                await sink.DisposeAsync().ConfigureAwait(false);
            }

            dir.Dispose();
            throw;
        }
    }

    /// <summary>Connects to the relay and reads its 220 greeting.</summary>
    public Task<TestSmtpClient> ConnectAsync() => TestSmtpClient.ConnectAndGreetAsync(Port);

    /// <summary>Connects, sends EHLO, and returns the client ready for a transaction.</summary>
    public async Task<TestSmtpClient> ConnectEhloAsync()
    {
        var client = await ConnectAsync().ConfigureAwait(false);
        await client.EhloAsync().ConfigureAwait(false);
        return client;
    }

    /// <summary>Relay output and sink state, for assertion messages.</summary>
    public string Describe() => Relay.Describe() + "\n" + Sink.Describe();

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

    /// <summary>Stops the running relay (SIGKILL if still running) and starts a new one on the same spool and a new port.</summary>
    public async Task RestartAsync(ITestOutputHelper log)
    {
        Relay.Dispose();
        Config.Listen = new List<string> { $"127.0.0.1:{FreePort.Get()}" };
        Relay = await RelayProcess.StartWithConfigAsync(Config, Dir, log, $"relay-{Guid.NewGuid():N}.json").ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        Relay.Dispose();
        await Sink.DisposeAsync().ConfigureAwait(false);
        Dir.Dispose();
    }
}
