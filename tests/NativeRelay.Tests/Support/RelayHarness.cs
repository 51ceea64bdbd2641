using System.Text;
using System.Text.RegularExpressions;
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

/// <summary>Checks on what the relay delivered.</summary>
public static class DeliveryAssert
{
    /// <summary>
    /// The delivered data must be exactly one new "Received:" header field followed by the
    /// original message, byte for byte. The field starts "Received: from ", names "by hostname"
    /// and, when given, "id queueId". Returns the unfolded Received field.
    /// </summary>
    public static string IsReceivedPlusOriginal(ReceivedMessage delivered, byte[] original, string hostname, string? queueId)
    {
        if (!MessageText.TrySplitFirstField(delivered.Data, out var field, out var rest))
        {
            Assert.Fail($"The delivered data has no complete first header field:\n{MessageText.Show(delivered.Data)}");
        }

        string received = Encoding.Latin1.GetString(field);
        if (!received.StartsWith("Received: from ", StringComparison.Ordinal))
        {
            Assert.Fail($"The delivered data must start with a new 'Received: from ' header, but starts:\n{MessageText.Show(delivered.Data, 600)}");
        }

        for (int i = 0; i < field.Length; i++)
        {
            bool bareLf = field[i] == '\n' && (i == 0 || field[i - 1] != '\r');
            bool bareCr = field[i] == '\r' && (i + 1 >= field.Length || field[i + 1] != '\n');
            if (bareLf || bareCr)
            {
                Assert.Fail($"The Received header has a bare {(bareLf ? "LF" : "CR")} at offset {i}:\n{MessageText.Show(field)}");
            }
        }

        foreach (var line in received.Split("\r\n"))
        {
            Assert.True(line.Length <= 998, $"A Received header line is longer than 998 octets:\n{line}");
        }

        string unfolded = MessageText.Unfold(received);
        Assert.True(Regex.IsMatch(unfolded, $@"\bby {Regex.Escape(hostname)}(?=[\s;(]|$)"),
            $"The Received header does not contain 'by {hostname}': {unfolded}");
        if (queueId is not null)
        {
            Assert.True(Regex.IsMatch(unfolded, $@"\bid {Regex.Escape(queueId)}(?=[\s;]|$)"),
                $"The Received header does not contain 'id {queueId}' (the queue id from the 250 reply): {unfolded}");
        }

        int diff = MessageText.FirstDifference(original, rest);
        if (diff >= 0)
        {
            Assert.Fail(
                $"After the Received header, the delivered bytes differ from the original at offset {diff} " +
                $"(original {original.Length} bytes, delivered {rest.Length} bytes after the header).\n" +
                $"--- original ---\n{MessageText.Show(original)}\n--- delivered (after Received) ---\n{MessageText.Show(rest)}");
        }

        return unfolded;
    }
}
