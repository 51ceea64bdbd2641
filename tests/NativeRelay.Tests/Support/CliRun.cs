using System.Diagnostics;
using System.Text;
using Xunit.Abstractions;

namespace NativeRelay.Tests.Support;

/// <summary>What one run of the binary with standard input produced.</summary>
public sealed record CliResult(int ExitCode, string Stdout, string Stderr)
{
    public override string ToString() => $"exit {ExitCode}\n--- stdout ---\n{Stdout}--- stderr ---\n{Stderr}--- end ---";
}

/// <summary>
/// Runs the published binary to completion with bytes on standard input (RelayProcess keeps its
/// stdin to itself), optionally under another argv[0] through a symlink, as /usr/sbin/sendmail
/// would be. Bounded: a run that does not finish in time is killed by its pid and fails the test.
/// </summary>
public static class CliRun
{
    public static async Task<CliResult> RunAsync(IEnumerable<string> arguments, byte[]? stdin, string workingDirectory,
        ITestOutputHelper? log = null, string? executable = null, IDictionary<string, string?>? environment = null, TimeSpan? timeout = null)
    {
        var psi = new ProcessStartInfo(executable ?? RelayBinary.Path)
        {
            WorkingDirectory = workingDirectory,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var a in arguments)
            psi.ArgumentList.Add(a);
        if (environment is not null)
            foreach (var (k, v) in environment)
                psi.Environment[k] = v;
        using var process = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {psi.FileName}");
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        try
        {
            if (stdin is not null)
                await process.StandardInput.BaseStream.WriteAsync(stdin);
            process.StandardInput.Close();
        }
        catch (IOException)
        {
            // The process exited without reading everything (a usage error): its output says why.
        }
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(60));
        try
        {
            await process.WaitForExitAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: false);
            throw new Xunit.Sdk.XunitException($"{psi.FileName} {string.Join(' ', psi.ArgumentList)} (pid {process.Id}) did not exit in time");
        }
        var result = new CliResult(process.ExitCode, await stdout, await stderr);
        log?.WriteLine($"[cli] {Path.GetFileName(psi.FileName)} {string.Join(' ', psi.ArgumentList)}\n{result}");
        return result;
    }

    /// <summary>The repository root (the directory holding NativeRelay.sln), found from the test assembly.</summary>
    public static string RepoRoot
    {
        get
        {
            for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
                if (File.Exists(Path.Combine(dir.FullName, "NativeRelay.sln")))
                    return dir.FullName;
            throw new Xunit.Sdk.XunitException($"cannot find NativeRelay.sln above {AppContext.BaseDirectory}");
        }
    }

    public static byte[] Latin1(string s) => Encoding.Latin1.GetBytes(s);
}
