using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using NativeRelay.Config;
using NativeRelay.Local;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;
using static NativeRelay.Tests.Support.LocalDeliveryFixtures;

/// <summary>
/// Interoperability with a real Dovecot LMTP server (Debian's dovecot-core and dovecot-lmtpd,
/// installed by .ci/run): a private Dovecot instance on a loopback port and a Unix socket, with its
/// own configuration in a temp dir, a static user database of two users and Maildirs under the
/// temp dir. The LMTP client delivers through it and the test reads the file Dovecot wrote.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class LmtpDovecotTests(ITestOutputHelper log) : IAsyncLifetime
{
    private const string DovecotBinary = "/usr/sbin/dovecot";
    private readonly TempDir _dir = new("nativerelay-dovecot");
    private Process? _dovecot;
    private int _port;

    private string Mail => _dir.File("mail");
    private string RunDir => _dir.File("run");

    public async Task InitializeAsync()
    {
        Assert.True(File.Exists(DovecotBinary) && File.Exists("/usr/lib/dovecot/lmtp"),
            "Dovecot is not installed: apt-get install dovecot-core dovecot-lmtpd (.ci/run does this)");
        Directory.CreateDirectory(RunDir);
        Directory.CreateDirectory(Mail);
        bool root = Environment.UserName == "root";
        if (!OperatingSystem.IsWindows())
            File.SetUnixFileMode(Mail, (UnixFileMode)0x1FF); // 0777: Dovecot writes as the mail user
        File.WriteAllText(_dir.File("users"), "alice::::::\nbob::::::\n");
        _port = FreePort.Get();
        string user = Environment.UserName;
        string uid = root ? "65534" : Run("id", "-u");
        string gid = root ? "65534" : Run("id", "-g");
        File.WriteAllText(_dir.File("dovecot.conf"), $$"""
            instance_name = nativerelay-test-{{_port}}
            base_dir = {{RunDir}}
            state_dir = {{RunDir}}
            log_path = {{_dir.File("dovecot.log")}}
            protocols = lmtp
            listen = 127.0.0.1
            ssl = no
            first_valid_uid = 1
            default_internal_user = {{(root ? "dovecot" : user)}}
            default_login_user = {{(root ? "dovenull" : user)}}
            mail_location = maildir:{{Mail}}/%n
            passdb {
              driver = static
              args = nopassword=y
            }
            userdb {
              driver = passwd-file
              args = username_format=%n {{_dir.File("users")}}
              default_fields = uid={{uid}} gid={{gid}} home={{Mail}}/%n
            }
            service lmtp {
              inet_listener lmtp {
                address = 127.0.0.1
                port = {{_port}}
              }
              unix_listener lmtp {
                mode = 0666
              }
            }
            """);
        _dovecot = Process.Start(new ProcessStartInfo(DovecotBinary)
        {
            ArgumentList = { "-F", "-c", _dir.File("dovecot.conf") },
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        })!;
        log.WriteLine($"[test] started dovecot pid {_dovecot.Id} on 127.0.0.1:{_port}");

        // Bounded wait for the LMTP listener.
        for (int i = 0; ; i++)
        {
            try
            {
                using var probe = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
                await probe.ConnectAsync("127.0.0.1", _port);
                if (File.Exists(Path.Combine(RunDir, "lmtp")))
                    break;
            }
            catch (SocketException) when (i < 300 && !_dovecot.HasExited)
            {
            }
            if (_dovecot.HasExited || i >= 300)
                Assert.Fail($"Dovecot did not start listening (exited: {_dovecot.HasExited}).\n{Describe()}");
            await Task.Delay(100);
        }
    }

    [Fact]
    public async Task Delivers_through_dovecot_lmtp_over_tcp_with_per_recipient_replies()
    {
        var agent = Agent(null, new LocalDomainOptions { Domain = "local.test", Lmtp = $"127.0.0.1:{_port}" });
        var envelope = Envelope("sender@example.test", "alice@local.test", "nobody@local.test", "bob@local.test");
        string id = $"dovecot-{Guid.NewGuid():N}@example.test";
        var body = Buffer($"From: sender@example.test\r\nTo: alice@local.test\r\nSubject: via dovecot\r\nMessage-ID: <{id}>\r\n\r\n.a line starting with a dot\r\nend\r\n");

        var results = await agent.DeliverAsync(envelope, body, All(envelope));

        Assert.True(results[0].Reply.Code == 250, $"{results[0]}\n{Describe()}");
        Assert.Equal(550, results[1].Reply.Code); // Dovecot: unknown user
        Assert.Contains("5.1.1", results[1].Reply.Text);
        Assert.Equal(250, results[2].Reply.Code);
        Assert.Contains("Saved", results[0].Reply.Text);

        string file = Assert.Single(Directory.GetFiles(Path.Combine(Mail, "alice", "new")));
        string text = File.ReadAllText(file, Encoding.Latin1);
        log.WriteLine(text);
        Assert.StartsWith("Return-Path: <sender@example.test>\n", text); // Dovecot's own, from our MAIL FROM
        Assert.Contains($"Message-ID: <{id}>\n", text);
        Assert.EndsWith("\n\n.a line starting with a dot\nend\n", text);
        Assert.Single(Directory.GetFiles(Path.Combine(Mail, "bob", "new")));
        Assert.False(Directory.Exists(Path.Combine(Mail, "nobody")));
        body.Release();
    }

    [Fact]
    public async Task Delivers_through_dovecot_lmtp_over_its_unix_socket()
    {
        var agent = Agent(null, new LocalDomainOptions { Domain = "local.test", Lmtp = "unix:" + Path.Combine(RunDir, "lmtp") });
        var envelope = Envelope("", "bob@local.test");
        var body = Buffer("Subject: bounce-like\r\n\r\nnull sender\r\n");

        var result = Assert.Single(await agent.DeliverAsync(envelope, body, [0]));

        Assert.True(result.Reply.Code == 250, $"{result}\n{Describe()}");
        string file = Assert.Single(Directory.GetFiles(Path.Combine(Mail, "bob", "new")));
        string text = File.ReadAllText(file);
        Assert.StartsWith("Return-Path: <>\n", text);
        Assert.EndsWith("\n\nnull sender\n", text);
        body.Release();
    }

    private string Describe()
    {
        string logText = File.Exists(_dir.File("dovecot.log")) ? File.ReadAllText(_dir.File("dovecot.log")) : "(no log)";
        return $"--- dovecot.log ---\n{logText}--- end ---";
    }

    private static string Run(string file, string args)
    {
        using var p = Process.Start(new ProcessStartInfo(file, args) { RedirectStandardOutput = true, UseShellExecute = false })!;
        string output = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit(10_000);
        return output;
    }

    public async Task DisposeAsync()
    {
        if (_dovecot is { HasExited: false })
        {
            // SIGTERM to the master (by its pid): it stops its own children.
            if (NativeMethods.Kill(_dovecot.Id, 15) != 0)
                _dovecot.Kill(entireProcessTree: false);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
            try
            {
                await _dovecot.WaitForExitAsync(cts.Token);
            }
            catch (OperationCanceledException)
            {
                _dovecot.Kill(entireProcessTree: true);
            }
        }
        _dovecot?.Dispose();
        log.WriteLine(Describe());
        _dir.Dispose();
    }

    private static class NativeMethods
    {
        [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
        public static extern int Kill(int pid, int sig);
    }
}
