using System.Diagnostics;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;

namespace NativeRelay.Tests.Support;

/// <summary>
/// One redis-server process the test started (a TLS server, a Sentinel, a Redis Cluster node):
/// its own loopback port, no persistence, stopped by its pid. Settings that must not be seen in
/// a process list come in as config on stdin ("-").
/// </summary>
public sealed class RedisProcess : IAsyncDisposable
{
    private Process? _process;

    private RedisProcess(int port, Process process)
    {
        Port = port;
        _process = process;
    }

    public int Port { get; }

    /// <summary>Starts redis-server with <paramref name="args"/> (and <paramref name="stdinConfig"/> if given); does not wait for it.</summary>
    public static RedisProcess Start(int port, IEnumerable<string> args, string? stdinConfig = null)
    {
        string server = ExternalTool.Require("redis-server", "redis-server");
        var psi = new ProcessStartInfo(server)
        {
            UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true, RedirectStandardInput = stdinConfig is not null,
        };
        foreach (var arg in args)
            psi.ArgumentList.Add(arg);
        if (stdinConfig is not null)
            psi.ArgumentList.Add("-");
        var process = Process.Start(psi)!;
        process.OutputDataReceived += (_, _) => { };
        process.ErrorDataReceived += (_, _) => { };
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (stdinConfig is not null)
        {
            process.StandardInput.Write(stdinConfig);
            process.StandardInput.Close();
        }
        return new RedisProcess(port, process);
    }

    /// <summary>The usual flags of a private server: loopback only, nothing on disk, quiet.</summary>
    public static string[] Private(string directory) =>
        ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning", "--dir", directory];

    /// <summary>Waits (bounded) until <paramref name="ready"/> says yes; fails the test if the process exits first.</summary>
    public async Task WaitAsync(Func<Task<bool>> ready, string what, int seconds = 20)
    {
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        while (DateTime.UtcNow < deadline)
        {
            if (_process is null || _process.HasExited)
                Assert.Fail($"redis-server on port {Port} exited before {what}");
            try
            {
                if (await ready())
                    return;
            }
            catch (Exception e) when (e is SocketException or IOException or System.Security.Authentication.AuthenticationException)
            {
            }
            await Task.Delay(50);
        }
        Assert.Fail($"redis-server on port {Port}: not {what} within {seconds} s");
    }

    public async ValueTask DisposeAsync()
    {
        await TestRedis.KillAsync(_process);
        _process = null;
    }
}

/// <summary>A test's own look into a Redis server over RESP, in plain TCP or in TLS trusting one CA.</summary>
public static class RedisCommand
{
    public static async Task<string> RunAsync(int port, string[] args, X509Certificate2? ca = null, string? sslHost = null, string? password = null)
    {
        using var client = new TcpClient();
        await client.ConnectAsync("127.0.0.1", port);
        Stream stream = client.GetStream();
        if (ca is not null)
        {
            var tls = new SslStream(stream, false, (_, certificate, _, errors) =>
            {
                if (certificate is null || (errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != 0)
                    return false;
                using var chain = new X509Chain();
                chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
                chain.ChainPolicy.CustomTrustStore.Add(ca);
                chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
                return chain.Build(new X509Certificate2(certificate));
            });
            await tls.AuthenticateAsClientAsync(sslHost ?? "localhost");
            stream = tls;
        }
        await using var owned = stream;
        string request = (password is null ? "" : TestRedis.Resp("AUTH", password)) + TestRedis.Resp(args);
        await stream.WriteAsync(System.Text.Encoding.UTF8.GetBytes(request));
        using var reader = new StreamReader(stream);
        if (password is not null)
            await TestRedis.ReadReplyAsync(reader);
        return await TestRedis.ReadReplyAsync(reader);
    }
}

/// <summary>redis-server speaking only TLS (--port 0 --tls-port P) with a certificate for one name from the test's CA.</summary>
public sealed class TlsRedis : IAsyncDisposable
{
    private readonly RedisProcess _server;

    private TlsRedis(RedisProcess server, X509Certificate2 ca, string name)
    {
        _server = server;
        Ca = ca;
        Name = name;
    }

    public X509Certificate2 Ca { get; }
    public string Name { get; }
    public int Port => _server.Port;

    public static async Task<TlsRedis> StartAsync(TestPki pki, string directory, string name)
    {
        using var certificate = pki.Issue([name]);
        string cert = Path.Combine(directory, "redis.crt"), key = Path.Combine(directory, "redis.key");
        File.WriteAllText(cert, certificate.ExportCertificatePem() + "\n");
        File.WriteAllText(key, certificate.GetECDsaPrivateKey()!.ExportPkcs8PrivateKeyPem() + "\n");
        string ca = pki.WriteRoot(directory);
        int port = FreePort.Get();
        var server = RedisProcess.Start(port, [.. RedisProcess.Private(directory), "--port", "0", "--tls-port", port.ToString(),
            "--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no"]);
        var redis = new TlsRedis(server, pki.Root, name);
        await server.WaitAsync(async () => await redis.CommandAsync("PING") == "PONG", "answering PING over TLS");
        return redis;
    }

    public Task<string> CommandAsync(params string[] args) => RedisCommand.RunAsync(Port, args, Ca, Name);

    public ValueTask DisposeAsync() => _server.DisposeAsync();
}

/// <summary>A master (plain <see cref="TestRedis"/>) watched by one Sentinel under the service name "nativerelay".</summary>
public sealed class SentinelRedis : IAsyncDisposable
{
    public const string Service = "nativerelay";
    private readonly RedisProcess _sentinel;

    private SentinelRedis(TestRedis master, RedisProcess sentinel)
    {
        Master = master;
        _sentinel = sentinel;
    }

    public TestRedis Master { get; }
    public int SentinelPort => _sentinel.Port;

    /// <summary>What a node is given: the sentinel and the service, never the master's address.</summary>
    public string ConnectionString => $"127.0.0.1:{SentinelPort},serviceName={Service}";

    /// <summary>
    /// With a password, the master requires it, Sentinel uses it to watch the master (auth-pass)
    /// and requires it of its own clients too (the client library sends one password to both).
    /// </summary>
    public static async Task<SentinelRedis> StartAsync(string directory, string? password = null)
    {
        var master = await TestRedis.StartAsync(password);
        try
        {
            int port = FreePort.Get();
            // Sentinel rewrites its config file (what it learnt): a file of its own in the test's
            // directory. The password goes in that file (mode 0600), never on the command line.
            string config = Path.Combine(directory, $"sentinel-{port}.conf");
            File.WriteAllText(config, $"""
                bind 127.0.0.1
                protected-mode no
                dir {directory}
                sentinel monitor {Service} 127.0.0.1 {master.Port} 1
                sentinel down-after-milliseconds {Service} 5000

                """ + (password is null ? "" : $"""
                sentinel auth-pass {Service} "{password}"
                requirepass "{password}"

                """));
            if (!OperatingSystem.IsWindows())
                File.SetUnixFileMode(config, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            var sentinel = RedisProcess.Start(port, [config, "--sentinel", "--port", port.ToString(), "--daemonize", "no", "--loglevel", "warning"]);
            var deployment = new SentinelRedis(master, sentinel);
            try
            {
                await sentinel.WaitAsync(async () =>
                        (await RedisCommand.RunAsync(port, ["SENTINEL", "get-master-addr-by-name", Service], password: password)).EndsWith("\n" + master.Port, StringComparison.Ordinal),
                    "naming the master");
                return deployment;
            }
            catch
            {
                await deployment.DisposeAsync();
                throw;
            }
        }
        catch
        {
            await master.DisposeAsync();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _sentinel.DisposeAsync();
        await Master.DisposeAsync();
    }
}

/// <summary>
/// A Redis Cluster of three masters on loopback (no replicas): slots 0-5460, 5461-10922 and
/// 10923-16383, met through CLUSTER MEET, ready when every node says cluster_state:ok.
/// </summary>
public sealed class RedisClusterTrio : IAsyncDisposable
{
    private readonly List<RedisProcess> _nodes = new();

    public IReadOnlyList<int> Ports => _nodes.Select(n => n.Port).ToArray();

    /// <summary>What a node is given: the three seeds (the client library learns the slots itself).</summary>
    public string ConnectionString => string.Join(',', Ports.Select(p => $"127.0.0.1:{p}"));

    public static async Task<RedisClusterTrio> StartAsync(string directory)
    {
        var trio = new RedisClusterTrio();
        try
        {
            var buses = new List<int>();
            for (int i = 0; i < 3; i++)
            {
                int port = FreePort.Get(), bus = FreePort.Get();
                buses.Add(bus);
                var node = RedisProcess.Start(port, [.. RedisProcess.Private(directory), "--port", port.ToString(),
                    "--cluster-enabled", "yes", "--cluster-config-file", $"nodes-{port}.conf", "--cluster-port", bus.ToString(),
                    "--cluster-node-timeout", "5000"]);
                trio._nodes.Add(node);
                await node.WaitAsync(async () => await RedisCommand.RunAsync(port, ["PING"]) == "PONG", "answering PING");
            }
            string[][] ranges = [["0", "5460"], ["5461", "10922"], ["10923", "16383"]];
            for (int i = 0; i < 3; i++)
            {
                string added = await RedisCommand.RunAsync(trio._nodes[i].Port, ["CLUSTER", "ADDSLOTSRANGE", .. ranges[i]]);
                Assert.True(added == "OK", $"CLUSTER ADDSLOTSRANGE on node {i}: {added}");
            }
            for (int i = 1; i < 3; i++)
            {
                string met = await RedisCommand.RunAsync(trio._nodes[0].Port,
                    ["CLUSTER", "MEET", "127.0.0.1", trio._nodes[i].Port.ToString(), buses[i].ToString()]);
                Assert.True(met == "OK", $"CLUSTER MEET node {i}: {met}");
            }
            foreach (var node in trio._nodes)
                await node.WaitAsync(async () => (await RedisCommand.RunAsync(node.Port, ["CLUSTER", "INFO"])).Contains("cluster_state:ok")
                                                 && (await RedisCommand.RunAsync(node.Port, ["CLUSTER", "INFO"])).Contains("cluster_known_nodes:3"),
                    "in a cluster of three with every slot served");
            return trio;
        }
        catch
        {
            await trio.DisposeAsync();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var node in _nodes)
            await node.DisposeAsync();
        _nodes.Clear();
    }
}
