using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// A file the relay cannot read is named with the reason in words. The native binary carries the
/// runtime's messages as resource keys only ("IO_FileNotFound_FileName, /x": UseSystemResourceKeys),
/// so the relay says the common reasons itself; a key must never reach the operator.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class FileErrorTextTests(ITestOutputHelper log)
{
    [Fact]
    public async Task A_missing_shaping_file_or_users_directory_is_named_with_its_reason_in_words()
    {
        using var dir = new TempDir();
        string shaping = dir.File("no-such-shaping.json");
        var missingFile = await CliRun.RunAsync(["serve", "--listen", $"127.0.0.1:{FreePort.Get()}", "--spool", dir.Spool, "--shaping", shaping], null, dir.Path, log);
        Assert.True(missingFile.ExitCode == 2, missingFile.ToString());
        Assert.Equal($"nativerelay: traffic.shaping: cannot read {shaping}: no such file", missingFile.Stderr.Trim());

        string users = Path.Combine(dir.Path, "no-such-dir", "users");
        var missingDirectory = await CliRun.RunAsync(["serve", "--listen", $"127.0.0.1:{FreePort.Get()}", "--spool", dir.Spool, "--users", users], null, dir.Path, log);
        Assert.True(missingDirectory.ExitCode == 2, missingDirectory.ToString());
        Assert.Equal($"nativerelay: cannot read the users file {users}: no such directory", missingDirectory.Stderr.Trim());

        foreach (var run in new[] { missingFile, missingDirectory })
            Assert.DoesNotContain("_FileName", run.Stderr + run.Stdout);
    }
}
