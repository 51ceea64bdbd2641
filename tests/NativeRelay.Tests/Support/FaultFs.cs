using System.Diagnostics;

namespace NativeRelay.Tests.Support;

/// <summary>
/// The faultfs preload (Support/FaultFs/faultfs.c), built once per test run with the machine's C
/// compiler, and one relay's switch for it: the test writes a fault ("write EIO 0.3") into the
/// control file while the relay runs, and clears it to let the disk heal. See the C file for
/// the control file's format.
/// </summary>
public sealed class FaultFs
{
    private static readonly Lazy<string> s_library = new(Build);

    public FaultFs(TempDir dir, string prefix)
    {
        Prefix = prefix;
        ControlFile = dir.File("faultfs.control");
        LogFile = dir.File("faultfs.log");
    }

    public string Prefix { get; }
    public string ControlFile { get; }
    public string LogFile { get; }

    /// <summary>The environment that puts the preload under the relay.</summary>
    public IReadOnlyDictionary<string, string> Environment => new Dictionary<string, string>
    {
        ["LD_PRELOAD"] = s_library.Value,
        ["FAULTFS_PREFIX"] = Prefix,
        ["FAULTFS_CONTROL"] = ControlFile,
        ["FAULTFS_LOG"] = LogFile,
    };

    /// <summary>From now on, fail matching calls: "OPS ERRNO RATE [SEED]", for example "write EIO 1".</summary>
    public void Set(string spec)
    {
        // Written whole and renamed into place: the preload never reads half a line.
        string temp = ControlFile + ".tmp";
        File.WriteAllText(temp, spec + "\n");
        File.Move(temp, ControlFile, overwrite: true);
    }

    public void Clear() => File.Delete(ControlFile);

    /// <summary>The faults injected so far, one line each ("pwrite64 EIO /path").</summary>
    public IReadOnlyList<string> Injected => File.Exists(LogFile) ? File.ReadAllLines(LogFile) : [];

    private static string Build()
    {
        string source = Path.Combine(AppContext.BaseDirectory, "FaultFs", "faultfs.c");
        string compiler = ExternalTool.Find("clang") ?? ExternalTool.Find("gcc") ?? ExternalTool.Require("cc", "clang");
        // One file per version of the source, reused by later runs (the machine's compiler makes the same one).
        string hash = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(source)))[..16].ToLowerInvariant();
        string output = Path.Combine(Path.GetTempPath(), $"nativerelay-faultfs-{hash}.so");
        if (File.Exists(output))
            return output;
        var psi = new ProcessStartInfo(compiler) { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
        string building = output + $".{System.Environment.ProcessId}.tmp";
        foreach (var arg in new[] { "-shared", "-fPIC", "-O2", "-Wall", "-o", building, source, "-ldl" })
            psi.ArgumentList.Add(arg);
        using var process = Process.Start(psi)!;
        string errors = process.StandardError.ReadToEnd();
        if (!process.WaitForExit(60_000) || process.ExitCode != 0)
            throw new InvalidOperationException($"building the faultfs preload failed: {errors}");
        File.Move(building, output, overwrite: true);
        return output;
    }
}
