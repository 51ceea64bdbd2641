using System.Diagnostics;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using System.Text;
using Xunit.Abstractions;

namespace NativeRelay.Tests.Support;

/// <summary>What a run of the binary that was expected to exit produced.</summary>
public sealed record RelayRunResult(int ExitCode, IReadOnlyList<string> StdoutLines, IReadOnlyList<string> StderrLines, string Output);

/// <summary>
/// The published nativerelay binary running as a child process. Captures stdout and stderr (for
/// failure messages and the test log), and stops only the process it started, by its pid.
/// </summary>
public sealed class RelayProcess : IDisposable
{
    public const int SIGINT = 2;
    public const int SIGKILL = 9;
    public const int SIGTERM = 15;

    private readonly Process _process;
    private readonly ITestOutputHelper? _log;
    private readonly object _lock = new();
    private readonly List<string> _stdout = new();
    private readonly List<string> _stderr = new();
    private readonly StringBuilder _combined = new();
    private readonly Stopwatch _clock = Stopwatch.StartNew();
    private bool _disposed;

    private RelayProcess(IReadOnlyList<string> arguments, string workingDirectory, ITestOutputHelper? log,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        _log = log;
        Arguments = arguments;
        var psi = new ProcessStartInfo(InheritsIgnoredSigint ? "/usr/bin/env" : RelayBinary.Path)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        if (InheritsIgnoredSigint)
        {
            // env resets SIGINT to its default and then execs the relay (same pid).
            psi.ArgumentList.Add("--default-signal=INT");
            psi.ArgumentList.Add(RelayBinary.Path);
        }
        foreach (var arg in arguments)
        {
            psi.ArgumentList.Add(arg);
        }

        foreach (var (name, value) in environment ?? new Dictionary<string, string>())
        {
            psi.Environment[name] = value;
        }

        _process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        _process.OutputDataReceived += (_, e) => Capture(e.Data, _stdout, "out");
        _process.ErrorDataReceived += (_, e) => Capture(e.Data, _stderr, "err");
        if (!_process.Start())
        {
            throw new InvalidOperationException($"Could not start {psi.FileName}");
        }

        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
        Pid = _process.Id;
        AppendCombined($"[test] started pid {Pid}: nativerelay {string.Join(' ', arguments)}");
    }

    public int Pid { get; }

    /// <summary>
    /// Whether this test process ignores SIGINT, which every relay it starts would inherit: a
    /// shell without job control starts its background jobs so (`make test &amp;` in a script), and
    /// .NET, like a shell, leaves an inherited ignored SIGINT ignored, so the relay's SIGINT
    /// shutdown could not be tested. The relay is then started through <c>env
    /// --default-signal=INT</c>, as from a terminal.
    /// </summary>
    private static readonly bool InheritsIgnoredSigint = ReadInheritsIgnoredSigint();

    private static bool ReadInheritsIgnoredSigint()
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("SigIgn:", StringComparison.Ordinal))
                return (Convert.ToUInt64(line["SigIgn:".Length..].Trim(), 16) & (1UL << (SIGINT - 1))) != 0; // bit n-1 is signal n
        return false;
    }

    public IReadOnlyList<string> Arguments { get; }

    public bool HasExited => _process.HasExited;

    public IReadOnlyList<string> StdoutLines
    {
        get { lock (_lock) { return _stdout.ToArray(); } }
    }

    public IReadOnlyList<string> StderrLines
    {
        get { lock (_lock) { return _stderr.ToArray(); } }
    }

    /// <summary>Everything the process printed, stdout and stderr interleaved, with times.</summary>
    public string Output
    {
        get { lock (_lock) { return _combined.ToString(); } }
    }

    /// <summary>A block to append to assertion messages.</summary>
    public string Describe() =>
        $"--- nativerelay pid {Pid} ({(HasExited ? "exited " + _process.ExitCode : "running")}), args: {string.Join(' ', Arguments)} ---\n{Output}--- end of relay output ---";

    /// <summary>Starts the binary with these arguments; does not wait for anything.</summary>
    public static RelayProcess Start(IEnumerable<string> arguments, string workingDirectory, ITestOutputHelper? log = null,
        IReadOnlyDictionary<string, string>? environment = null) =>
        new(arguments.ToArray(), workingDirectory, log, environment);

    /// <summary>Runs the binary expecting it to exit by itself within the timeout.</summary>
    public static async Task<RelayRunResult> RunToExitAsync(IEnumerable<string> arguments, string workingDirectory, ITestOutputHelper? log = null, TimeSpan? timeout = null)
    {
        using var relay = Start(arguments, workingDirectory, log);
        int code = await relay.WaitForExitAsync(timeout ?? TimeSpan.FromSeconds(30)).ConfigureAwait(false);
        return new RelayRunResult(code, relay.StdoutLines, relay.StderrLines, relay.Output);
    }

    /// <summary>
    /// Starts `nativerelay serve` with the given arguments and waits (bounded) until a client
    /// connecting to 127.0.0.1:port gets a 220 greeting. Fails with the relay's output otherwise.
    /// </summary>
    public static async Task<RelayProcess> StartServeAsync(IEnumerable<string> serveArguments, int port, string workingDirectory, ITestOutputHelper? log = null,
        IReadOnlyDictionary<string, string>? environment = null)
    {
        var relay = Start(new[] { "serve" }.Concat(serveArguments), workingDirectory, log, environment);
        try
        {
            await relay.WaitUntilGreetingAsync(port, TimeSpan.FromSeconds(60)).ConfigureAwait(false);
            return relay;
        }
        catch
        {
            relay.Dispose();
            throw;
        }
    }

    /// <summary>Writes the config into the dir and starts `nativerelay serve --config FILE`, waiting for the greeting.</summary>
    public static Task<RelayProcess> StartWithConfigAsync(RelayConfig config, TempDir dir, ITestOutputHelper? log = null, string fileName = "relay.json")
    {
        string path = config.WriteTo(dir.File(fileName));
        return StartServeAsync(new[] { "--config", path }, config.Port, dir.Path, log);
    }

    /// <summary>Polls 127.0.0.1:port until a 220 greeting arrives, the process exits, or the time is up.</summary>
    public Task WaitUntilGreetingAsync(int port, TimeSpan timeout) => WaitUntilGreetingAsync(System.Net.IPAddress.Loopback, port, timeout);

    /// <summary>Polls address:port until a 220 greeting arrives, the process exits, or the time is up.</summary>
    public async Task WaitUntilGreetingAsync(System.Net.IPAddress address, int port, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        string lastProblem = "no attempt made";
        while (DateTime.UtcNow < deadline)
        {
            if (HasExited)
            {
                WaitForOutputToDrain();
                throw new Xunit.Sdk.XunitException($"nativerelay exited with code {_process.ExitCode} before it greeted on port {port}.\n{Describe()}");
            }

            try
            {
                await using var client = await TestSmtpClient.ConnectAsync(address, port, TimeSpan.FromSeconds(5)).ConfigureAwait(false);
                client.ReplyTimeout = TimeSpan.FromSeconds(10);
                var greeting = await client.TryReadReplyAsync().ConfigureAwait(false);
                if (greeting?.Code == 220)
                {
                    // Wait for the relay to close this probe: it frees the connection's slot before
                    // it closes the socket, so a test that allows one connection per address and
                    // connects right after this returns is not refused with 421 for the probe's.
                    await client.SendRawAsync("QUIT\r\n").ConfigureAwait(false);
                    await client.ReadUntilClosedAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false);
                    return;
                }

                lastProblem = greeting is null ? "connection closed without greeting" : $"greeting was {greeting}";
            }
            catch (Exception ex) when (ex is SocketException or IOException or TimeoutException or OperationCanceledException)
            {
                lastProblem = $"{ex.GetType().Name}: {ex.Message}";
            }

            await Task.Delay(100).ConfigureAwait(false);
        }

        throw new Xunit.Sdk.XunitException($"nativerelay did not greet on 127.0.0.1:{port} within {timeout.TotalSeconds:0} s (last: {lastProblem}).\n{Describe()}");
    }

    /// <summary>Waits (bounded) until a line of stdout or stderr contains the text.</summary>
    public async Task WaitForOutputAsync(string text, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!StdoutLines.Concat(StderrLines).Any(l => l.Contains(text, StringComparison.Ordinal)))
        {
            if (DateTime.UtcNow >= deadline)
            {
                throw new Xunit.Sdk.XunitException($"nativerelay did not print '{text}' within {timeout.TotalSeconds:0} s.\n{Describe()}");
            }

            await Task.Delay(100).ConfigureAwait(false);
        }
    }

    /// <summary>SIGKILL (kill -9) to this process only.</summary>
    public void Kill()
    {
        if (!HasExited)
        {
            AppendCombined("[test] sending SIGKILL");
            _process.Kill(entireProcessTree: false);
        }
    }

    /// <summary>SIGTERM to this process only.</summary>
    public void Terminate() => Signal(SIGTERM);

    /// <summary>SIGINT to this process only.</summary>
    public void Interrupt() => Signal(SIGINT);

    public void Signal(int signal)
    {
        if (HasExited)
        {
            throw new Xunit.Sdk.XunitException($"Cannot send signal {signal}: nativerelay already exited with {_process.ExitCode}.\n{Describe()}");
        }

        AppendCombined($"[test] sending signal {signal}");
        try
        {
            if (NativeMethods.Kill(Pid, signal) != 0)
            {
                throw new InvalidOperationException($"kill({Pid}, {signal}) failed: errno {Marshal.GetLastPInvokeError()}");
            }
        }
        catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
        {
            // No libc under that name: fall back to the kill(1) command, still by pid.
            using var kill = Process.Start(new ProcessStartInfo("kill", $"-{signal} {Pid}") { UseShellExecute = false })!;
            if (!kill.WaitForExit(10_000) || kill.ExitCode != 0)
            {
                throw new InvalidOperationException($"kill -{signal} {Pid} failed");
            }
        }
    }

    /// <summary>Waits (bounded) for the process to exit and returns its exit code; fails with the output on timeout.</summary>
    public async Task<int> WaitForExitAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            throw new Xunit.Sdk.XunitException($"nativerelay (pid {Pid}) did not exit within {timeout.TotalSeconds:0} s.\n{Describe()}");
        }

        WaitForOutputToDrain();
        AppendCombined($"[test] exited with code {_process.ExitCode}");
        return _process.ExitCode;
    }

    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        try
        {
            if (!_process.HasExited)
            {
                AppendCombined("[test] still running at dispose: sending SIGKILL");
                _process.Kill(entireProcessTree: false);
                _process.WaitForExit(10_000);
            }

            WaitForOutputToDrain();
        }
        catch (InvalidOperationException)
        {
        }

        if (_log is not null)
        {
            try
            {
                _log.WriteLine(Describe());
            }
            catch (InvalidOperationException)
            {
                // The test already finished; nowhere to write.
            }
        }

        _process.Dispose();
    }

    private void WaitForOutputToDrain()
    {
        // After exit, the parameterless WaitForExit also waits for the redirected streams to reach EOF.
        if (_process.HasExited)
        {
            _process.WaitForExit();
        }
    }

    private void Capture(string? line, List<string> into, string stream)
    {
        if (line is null)
        {
            return;
        }

        lock (_lock)
        {
            into.Add(line);
            _combined.Append($"[{_clock.Elapsed.TotalSeconds,7:0.000} {stream}] {line}\n");
        }
    }

    private void AppendCombined(string line)
    {
        lock (_lock)
        {
            _combined.Append($"[{_clock.Elapsed.TotalSeconds,7:0.000} ---] {line}\n");
        }
    }

    private static class NativeMethods
    {
        [DllImport("libc", EntryPoint = "kill", SetLastError = true)]
        public static extern int Kill(int pid, int sig);
    }
}
