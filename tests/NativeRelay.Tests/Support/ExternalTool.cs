using System.Diagnostics;
using System.Text;

namespace NativeRelay.Tests.Support;

/// <summary>What a run of an external program produced.</summary>
public sealed record ToolResult(int ExitCode, string Stdout, string Stderr)
{
    public string Describe(string what) => $"--- {what}: exit {ExitCode} ---\nstdout:\n{Stdout}\nstderr:\n{Stderr}\n--- end ---";
}

/// <summary>
/// Runs the interoperability tools (python3, swaks, postfix). A missing tool FAILS the test with a
/// pointer to .ci/run, which installs them: these tests must never pass by skipping.
/// </summary>
public static class ExternalTool
{
    /// <summary>The full path of a program on PATH (or in /usr/sbin, /sbin), failing the test if it is not installed.</summary>
    public static string Require(string name, string package)
    {
        var found = Find(name);
        if (found is null)
        {
            Assert.Fail($"'{name}' is not installed, and the interoperability tests need it. Run `bash .ci/run` (it installs {package} with apt-get), or `apt-get install {package}`.");
        }

        return found!;
    }

    public static string? Find(string name)
    {
        var path = Environment.GetEnvironmentVariable("PATH") ?? "";
        foreach (var dir in path.Split(':').Concat(["/usr/sbin", "/sbin", "/usr/bin", "/usr/local/bin"]))
        {
            if (dir.Length == 0)
            {
                continue;
            }

            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        return null;
    }

    /// <summary>Runs a program to its end (killed at the timeout), feeding <paramref name="stdin"/>.</summary>
    public static async Task<ToolResult> RunAsync(string file, IEnumerable<string> arguments, TimeSpan timeout, string? stdin = null,
        string? workingDirectory = null, IDictionary<string, string>? environment = null)
    {
        var psi = new ProcessStartInfo(file)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            WorkingDirectory = workingDirectory ?? Environment.CurrentDirectory,
        };
        foreach (var a in arguments)
        {
            psi.ArgumentList.Add(a);
        }

        if (environment is not null)
        {
            foreach (var (k, v) in environment)
            {
                psi.Environment[k] = v;
            }
        }

        using var process = new Process { StartInfo = psi };
        var stdout = new StringBuilder();
        var stderr = new StringBuilder();
        process.OutputDataReceived += (_, e) => { if (e.Data is not null) { lock (stdout) { stdout.AppendLine(e.Data); } } };
        process.ErrorDataReceived += (_, e) => { if (e.Data is not null) { lock (stderr) { stderr.AppendLine(e.Data); } } };
        process.Start();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        if (stdin is not null)
        {
            await process.StandardInput.WriteAsync(stdin).ConfigureAwait(false);
        }

        process.StandardInput.Close();
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync().ConfigureAwait(false);
            lock (stdout)
            {
                stdout.AppendLine($"[test] killed after {timeout.TotalSeconds:0} s");
            }
        }

        process.WaitForExit();
        string o, e;
        lock (stdout) { o = stdout.ToString(); }
        lock (stderr) { e = stderr.ToString(); }
        return new ToolResult(process.ExitCode, o, e);
    }
}
