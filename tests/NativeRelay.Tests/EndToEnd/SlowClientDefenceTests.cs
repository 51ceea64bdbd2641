using System.Net;
using System.Net.Sockets;
using System.Text;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// The internet-facing listener's defence against clients that do not speak SMTP as a real MTA
/// does (Postfix's postscreen): a client that talks before the (delayed) greeting is refused, and
/// a connection that sends no command at all is closed after limits.idleBeforeCommandSeconds,
/// well before the command timeout. Trusted clients are not delayed.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class SlowClientDefenceTests(ITestOutputHelper log)
{
    private static async Task<(TempDir Dir, RelayProcess Relay, int Port)> StartAsync(ITestOutputHelper log, string limits, string relayNetworks)
    {
        var dir = new TempDir();
        int port = FreePort.Get();
        string config = dir.File("relay.json");
        File.WriteAllText(config, $$"""
            { "hostname": "relay.test", "listen": ["127.0.0.1:{{port}}"], "spool": "{{dir.Spool}}", "relayTo": "127.0.0.1:1",
              "relayNetworks": {{relayNetworks}}, "acceptedDomains": ["example.test"], "limits": {{limits}} }
            """);
        var relay = await RelayProcess.StartServeAsync(["--config", config], port, dir.Path, log);
        return (dir, relay, port);
    }

    private static async Task<string> ReadAllAsync(Socket socket)
    {
        var text = new StringBuilder();
        var buffer = new byte[1024];
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (true)
        {
            int n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
            if (n == 0)
                return text.ToString();
            text.Append(Encoding.ASCII.GetString(buffer, 0, n));
        }
    }

    [Fact]
    public async Task A_client_that_talks_before_the_delayed_greeting_is_refused_and_a_patient_one_is_served()
    {
        var (dir, relay, port) = await StartAsync(log, """{ "greetingDelaySeconds": 2 }""", "[]");
        using (dir)
        using (relay)
        {
            // The greeting-probe of StartServeAsync was patient; now a bot that does not wait.
            using var bot = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await bot.ConnectAsync(IPAddress.Loopback, port);
            await bot.SendAsync(Encoding.ASCII.GetBytes("EHLO bot\r\nMAIL FROM:<spam@bot.test>\r\n"));
            string said = await ReadAllAsync(bot);
            Assert.Equal("554 5.5.1 Protocol error: talked before the greeting\r\n", said);

            await using var patient = await TestSmtpClient.ConnectAndGreetAsync(port);
            await patient.EhloAsync();
            await relay.WaitForOutputAsync("talked before the greeting", Waits.Delivery);
        }
    }

    [Fact]
    public async Task Trusted_clients_are_greeted_at_once_and_may_pipeline_early()
    {
        var (dir, relay, port) = await StartAsync(log, """{ "greetingDelaySeconds": 30 }""", """["127.0.0.0/8"]""");
        using (dir)
        using (relay)
        {
            using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await client.ConnectAsync(IPAddress.Loopback, port);
            await client.SendAsync(Encoding.ASCII.GetBytes("EHLO trusted\r\nQUIT\r\n"));
            string said = await ReadAllAsync(client);
            Assert.StartsWith("220 ", said);
            Assert.Contains("\r\n250", said);
            Assert.EndsWith("221 2.0.0 Bye\r\n", said);
        }
    }

    [Fact]
    public async Task A_connection_that_sends_no_command_is_closed_after_idleBeforeCommandSeconds_but_a_talking_one_is_not()
    {
        var (dir, relay, port) = await StartAsync(log, """{ "idleBeforeCommandSeconds": 1, "commandTimeoutSeconds": 300 }""", """["127.0.0.0/8"]""");
        using (dir)
        using (relay)
        {
            await using var talking = await TestSmtpClient.ConnectAndGreetAsync(port);
            await talking.EhloAsync();

            using var silent = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            await silent.ConnectAsync(IPAddress.Loopback, port);
            string said = await ReadAllAsync(silent); // ends when the relay closes it
            Assert.StartsWith("220 ", said);
            Assert.EndsWith("421 4.4.2 Timeout exceeded; closing connection\r\n", said);

            // The one that said EHLO is under the command timeout (300 s), so it is still served.
            Assert.Equal(250, (await talking.CommandAsync("NOOP")).Code);
            await relay.WaitForOutputAsync("no command, closing", Waits.Delivery);
        }
    }
}
