using System.Diagnostics;
using System.Net.Sockets;

namespace NativeRelay.Tests.Support;

/// <summary>
/// A private redis-server (Debian's package, installed by .ci/run) on a loopback port of its own,
/// with no persistence and no config file: started by the test, stopped by its pid. It can be
/// stopped and started again on the same port (Redis away, then back) and be given a password.
/// </summary>
public sealed class TestRedis : IAsyncDisposable
{
    private readonly string _server;
    private readonly string? _password;
    private Process? _process;

    private TestRedis(string server, int port, string? password)
    {
        _server = server;
        Port = port;
        _password = password;
    }

    public int Port { get; }

    /// <summary>The connection string a relay is given (no password: that goes in a file).</summary>
    public string ConnectionString => $"127.0.0.1:{Port}";

    public bool Running => _process is { HasExited: false };

    public static async Task<TestRedis> StartAsync(string? password = null)
    {
        string server = ExternalTool.Require("redis-server", "redis-server");
        var redis = new TestRedis(server, FreePort.Get(), password);
        await redis.StartAgainAsync();
        return redis;
    }

    /// <summary>Starts the server (again, on the same port) and waits until it answers PING.</summary>
    public async Task StartAgainAsync()
    {
        if (Running)
            return;
        var psi = new ProcessStartInfo(_server) { UseShellExecute = false, RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[] { "--port", Port.ToString(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--daemonize", "no", "--protected-mode", "no", "--loglevel", "warning" })
            psi.ArgumentList.Add(arg);
        if (_password is not null)
        {
            // Not on the command line (ps would show it): the server reads it as config from stdin.
            psi.ArgumentList.Add("-");
            psi.RedirectStandardInput = true;
        }
        _process = Process.Start(psi)!;
        _process.OutputDataReceived += (_, _) => { };
        _process.ErrorDataReceived += (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        if (_password is not null)
        {
            await _process.StandardInput.WriteLineAsync($"requirepass \"{_password}\"");
            _process.StandardInput.Close();
        }
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited)
                Assert.Fail($"redis-server exited at start with code {_process.ExitCode}");
            if (await PingAsync())
                return;
            await Task.Delay(50);
        }
        Assert.Fail($"redis-server on port {Port} did not answer within 20 s");
    }

    /// <summary>Stops the server at once (SIGKILL: Redis gone as after a crash or a partition).</summary>
    public async Task StopAsync()
    {
        await KillAsync(_process);
        _process = null;
    }

    /// <summary>SIGKILL to a redis-server this test started (if still running), waited for and disposed.</summary>
    internal static async Task KillAsync(System.Diagnostics.Process? process)
    {
        if (process is null)
            return;
        if (!process.HasExited)
        {
            process.Kill();
            await process.WaitForExitAsync();
        }
        process.Dispose();
    }

    /// <summary>Runs a command with redis-cli semantics over RESP (a test's own look at what the fleet stored).</summary>
    public async Task<string> CommandAsync(params string[] args)
    {
        using var client = new TcpClient();
        await client.ConnectAsync("127.0.0.1", Port);
        var stream = client.GetStream();
        var request = new System.Text.StringBuilder();
        if (_password is not null)
            request.Append(Resp("AUTH", _password));
        request.Append(Resp(args));
        var bytes = System.Text.Encoding.UTF8.GetBytes(request.ToString());
        await stream.WriteAsync(bytes);
        using var reader = new StreamReader(stream);
        if (_password is not null)
            await ReadReplyAsync(reader);
        return await ReadReplyAsync(reader);
    }

    internal static string Resp(params string[] args)
    {
        var sb = new System.Text.StringBuilder($"*{args.Length}\r\n");
        foreach (var a in args)
            sb.Append($"${System.Text.Encoding.UTF8.GetByteCount(a)}\r\n{a}\r\n");
        return sb.ToString();
    }

    /// <summary>One reply, flattened: arrays as their elements one per line, nil as "(nil)", errors as "ERR ...".</summary>
    internal static async Task<string> ReadReplyAsync(StreamReader reader)
    {
        string line = await reader.ReadLineAsync() ?? throw new IOException("redis closed the connection");
        switch (line[0])
        {
            case '+':
            case '-':
            case ':':
                return line[1..];
            case '$':
                int length = int.Parse(line[1..]);
                if (length < 0)
                    return "(nil)";
                var buffer = new char[length + 2];
                int read = 0;
                while (read < buffer.Length)
                    read += await reader.ReadAsync(buffer, read, buffer.Length - read);
                return new string(buffer, 0, length);
            case '*':
                int count = int.Parse(line[1..]);
                var parts = new List<string>();
                for (int i = 0; i < count; i++)
                    parts.Add(await ReadReplyAsync(reader));
                return string.Join("\n", parts);
            default:
                throw new IOException($"unexpected RESP line '{line}'");
        }
    }

    private async Task<bool> PingAsync()
    {
        try
        {
            string reply = await CommandAsync("PING");
            return reply == "PONG";
        }
        catch (Exception e) when (e is SocketException or IOException)
        {
            return false;
        }
    }

    public async ValueTask DisposeAsync() => await StopAsync();
}
