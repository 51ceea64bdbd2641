using System.Net.Sockets;
using Xunit.Abstractions;

namespace NativeRelay.Tests.Support;

/// <summary>
/// A private Postfix instance for interoperability tests: its own config, queue and log under a
/// temp dir, listening on one loopback port, relaying everything to <c>relayhost</c> (the relay
/// under test). It is started with <c>postfix -c DIR</c> and stopped the same way; the machine's
/// default Postfix instance is never touched (no file under /etc/postfix is written).
/// </summary>
public sealed class PrivatePostfix : IAsyncDisposable
{
    private readonly string _postfix;
    private readonly ITestOutputHelper _log;
    private bool _started;

    private PrivatePostfix(string postfix, string directory, int port, ITestOutputHelper log)
    {
        _postfix = postfix;
        Directory = directory;
        Port = port;
        _log = log;
    }

    public string Directory { get; }

    public int Port { get; }

    public string ConfigDirectory => Path.Combine(Directory, "etc");

    public string MailLog => Path.Combine(Directory, "maillog");

    /// <summary>Starts Postfix relaying to 127.0.0.1:<paramref name="relayPort"/>; with <paramref name="requireTls"/> its smtp client must use STARTTLS.</summary>
    public static async Task<PrivatePostfix> StartAsync(string parentDirectory, int relayPort, bool requireTls, ITestOutputHelper log)
    {
        string postfix = ExternalTool.Require("postfix", "postfix");
        if (Environment.UserName != "root")
        {
            Assert.Fail("The Postfix interoperability tests start a private Postfix instance, which needs root (as in CI, where .ci/run runs as root).");
        }

        // Short paths: Postfix's UNIX-domain sockets live under the queue directory.
        string dir = Path.Combine(parentDirectory, "pf");
        var instance = new PrivatePostfix(postfix, dir, FreePort.Get(), log);
        System.IO.Directory.CreateDirectory(Path.Combine(dir, "etc"));
        System.IO.Directory.CreateDirectory(Path.Combine(dir, "spool"));
        System.IO.Directory.CreateDirectory(Path.Combine(dir, "data"));
        var chown = await ExternalTool.RunAsync("chown", ["postfix", Path.Combine(dir, "data")], TimeSpan.FromSeconds(30));
        Assert.True(chown.ExitCode == 0, chown.Describe("chown postfix data"));

        File.WriteAllText(Path.Combine(dir, "etc", "main.cf"), $"""
            compatibility_level = 3.6
            queue_directory = {dir}/spool
            data_directory = {dir}/data
            maillog_file = {dir}/maillog
            maillog_file_prefixes = {parentDirectory}
            myhostname = postfix.test
            mydomain = postfix.test
            myorigin = postfix.test
            inet_interfaces = 127.0.0.1
            inet_protocols = ipv4
            mydestination =
            local_transport = error:local delivery is disabled
            alias_maps =
            alias_database =
            relayhost = [127.0.0.1]:{relayPort}
            mynetworks = 127.0.0.0/8
            smtpd_relay_restrictions = permit_mynetworks, reject
            smtp_host_lookup = native
            smtp_tls_security_level = {(requireTls ? "encrypt" : "none")}
            smtp_tls_loglevel = 1
            queue_run_delay = 2s
            minimal_backoff_time = 2s
            maximal_backoff_time = 4s
            """);
        File.WriteAllText(Path.Combine(dir, "etc", "master.cf"), $"""
            127.0.0.1:{instance.Port} inet n - n - - smtpd
            pickup    unix  n       -       n       60      1       pickup
            cleanup   unix  n       -       n       -       0       cleanup
            qmgr      unix  n       -       n       300     1       qmgr
            tlsmgr    unix  -       -       n       1000?   1       tlsmgr
            rewrite   unix  -       -       n       -       -       trivial-rewrite
            bounce    unix  -       -       n       -       0       bounce
            defer     unix  -       -       n       -       0       bounce
            trace     unix  -       -       n       -       0       bounce
            verify    unix  -       -       n       -       1       verify
            flush     unix  n       -       n       1000?   0       flush
            proxymap  unix  -       -       n       -       -       proxymap
            proxywrite unix -       -       n       -       1       proxymap
            smtp      unix  -       -       n       -       -       smtp
            relay     unix  -       -       n       -       -       smtp
            showq     unix  n       -       n       -       -       showq
            error     unix  -       -       n       -       -       error
            retry     unix  -       -       n       -       -       error
            discard   unix  -       -       n       -       -       discard
            local     unix  -       n       n       -       -       local
            virtual   unix  -       n       n       -       -       virtual
            lmtp      unix  -       -       n       -       -       lmtp
            anvil     unix  -       -       n       -       1       anvil
            scache    unix  -       -       n       -       1       scache
            postlog   unix-dgram n  -       n       -       1       postlogd
            """);

        var start = await instance.RunAsync("start");
        instance._started = true;
        if (start.ExitCode != 0)
        {
            await instance.DisposeAsync();
            Assert.Fail(start.Describe("postfix start") + "\n" + instance.ReadMailLog());
        }

        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (true)
        {
            try
            {
                await using var probe = await TestSmtpClient.ConnectAsync(instance.Port, TimeSpan.FromSeconds(5));
                var greeting = await probe.TryReadReplyAsync();
                if (greeting?.Code == 220)
                {
                    await probe.SendRawAsync("QUIT\r\n");
                    return instance;
                }
            }
            catch (Exception e) when (e is SocketException or IOException or TimeoutException)
            {
            }

            if (DateTime.UtcNow > deadline)
            {
                await instance.DisposeAsync();
                Assert.Fail($"Postfix did not greet on 127.0.0.1:{instance.Port} within 60 s.\n{instance.ReadMailLog()}");
            }

            await Task.Delay(200);
        }
    }

    public string ReadMailLog()
    {
        try
        {
            return $"--- postfix maillog ---\n{File.ReadAllText(MailLog)}--- end of maillog ---";
        }
        catch (IOException e)
        {
            return $"(no postfix maillog: {e.Message})";
        }
    }

    private Task<ToolResult> RunAsync(string command) =>
        ExternalTool.RunAsync(_postfix, ["-c", ConfigDirectory, command], TimeSpan.FromSeconds(60));

    public async ValueTask DisposeAsync()
    {
        if (!_started)
        {
            return;
        }

        _started = false;
        string pidFile = Path.Combine(Directory, "spool", "pid", "master.pid");
        int pid = 0;
        try
        {
            pid = int.Parse(File.ReadAllText(pidFile).Trim());
        }
        catch (Exception e) when (e is IOException or FormatException)
        {
        }

        var stop = await RunAsync("stop");
        try
        {
            _log.WriteLine(stop.Describe("postfix stop") + "\n" + ReadMailLog());
        }
        catch (InvalidOperationException)
        {
        }

        // Wait (bounded) for this instance's master to go; if it will not, kill that pid only.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(15);
        while (pid > 0 && System.IO.Directory.Exists($"/proc/{pid}") && DateTime.UtcNow < deadline)
        {
            await Task.Delay(100);
        }

        if (pid > 0 && System.IO.Directory.Exists($"/proc/{pid}"))
        {
            await ExternalTool.RunAsync("kill", ["-9", pid.ToString()], TimeSpan.FromSeconds(10));
        }
    }
}
