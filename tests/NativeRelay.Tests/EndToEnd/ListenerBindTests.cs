using System.Net;
using System.Net.Sockets;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// One relay per address: a second instance started by mistake on a port in use fails at start
/// with the address in its error, instead of sharing the port (SO_REUSEPORT) and taking half the
/// mail into another spool; and a restart right after a stop still binds at once (TIME_WAIT).
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class ListenerBindTests(ITestOutputHelper log)
{
    [Fact]
    public async Task A_second_relay_on_the_same_smtp_port_refuses_to_start_and_the_first_keeps_all_the_mail()
    {
        using var dirA = new TempDir();
        using var dirB = new TempDir();
        int port = FreePort.Get();
        using var first = await RelayProcess.StartServeAsync(["--listen", $"127.0.0.1:{port}", "--spool", dirA.Spool, "--relay-to", "127.0.0.1:1"], port, dirA.Path, log);

        var second = await RelayProcess.RunToExitAsync(["serve", "--listen", $"127.0.0.1:{port}", "--spool", dirB.Spool, "--relay-to", "127.0.0.1:1"], dirB.Path, log);

        Assert.True(second.ExitCode == 2, second.Output);
        var error = Assert.Single(second.StderrLines);
        Assert.Equal($"nativerelay: cannot listen on 127.0.0.1:{port}: the address is already in use (another relay or server is listening there)", error);
        // Every connection still reaches the first relay.
        for (int i = 0; i < 20; i++)
        {
            await using var client = await TestSmtpClient.ConnectAndGreetAsync(port);
            await client.EhloAsync();
        }
        Assert.False(first.HasExited);
    }

    [Fact]
    public async Task A_second_relay_on_the_same_metrics_port_refuses_to_start()
    {
        using var dirA = new TempDir();
        using var dirB = new TempDir();
        int port = FreePort.Get();
        int metrics = FreePort.Get();
        using var first = await RelayProcess.StartServeAsync(["--listen", $"127.0.0.1:{port}", "--spool", dirA.Spool, "--metrics", $"127.0.0.1:{metrics}"], port, dirA.Path, log);

        var second = await RelayProcess.RunToExitAsync(["serve", "--listen", $"127.0.0.1:{FreePort.Get()}", "--spool", dirB.Spool, "--metrics", $"127.0.0.1:{metrics}"], dirB.Path, log);

        Assert.True(second.ExitCode == 2, second.Output);
        Assert.Contains($"metrics.listen: cannot listen on 127.0.0.1:{metrics}: the address is already in use", Assert.Single(second.StderrLines));
    }

    [Fact]
    public async Task A_restart_right_after_a_stop_binds_at_once_despite_connections_in_time_wait()
    {
        using var dir = new TempDir();
        int port = FreePort.Get();
        string[] args = ["--listen", $"127.0.0.1:{port}", "--spool", dir.Spool, "--relay-to", "127.0.0.1:1"];
        using (var relay = await RelayProcess.StartServeAsync(args, port, dir.Path, log))
        {
            // The server closes first after QUIT, so the server side of each connection is left in TIME_WAIT.
            for (int i = 0; i < 5; i++)
            {
                await using var client = await TestSmtpClient.ConnectAndGreetAsync(port);
                await client.EhloAsync();
                await client.ExpectAsync("QUIT", 221);
                await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(10));
            }
            relay.Terminate();
            Assert.Equal(0, await relay.WaitForExitAsync(Waits.Exit));
        }
        Assert.Contains($"127.0.0.1:{port}", TimeWaitSockets());

        using var restarted = await RelayProcess.StartServeAsync(args, port, dir.Path, log);
        Assert.False(restarted.HasExited);
    }

    /// <summary>The local addresses of sockets in TIME_WAIT (/proc/net/tcp state 06), as IP:PORT.</summary>
    private static string TimeWaitSockets()
    {
        var found = new List<string>();
        foreach (var line in File.ReadLines("/proc/net/tcp").Skip(1))
        {
            var fields = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length < 4 || fields[3] != "06")
                continue;
            var local = fields[1].Split(':');
            var ip = new IPAddress(BitConverter.GetBytes(Convert.ToUInt32(local[0], 16)));
            found.Add($"{ip}:{Convert.ToInt32(local[1], 16)}");
        }
        return string.Join(' ', found);
    }
}
