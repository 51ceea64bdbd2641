namespace NativeRelay.Tests.Support;

/// <summary>Finds the published binary the end-to-end tests run.</summary>
public static class RelayBinary
{
    /// <summary>
    /// NATIVERELAY_BIN if set, else out/nativerelay under the repository root (the directory
    /// holding NativeRelay.sln, found by walking up from the test assembly). Fails the test with
    /// instructions when the file is not there.
    /// </summary>
    public static string Path
    {
        get
        {
            string? fromEnv = Environment.GetEnvironmentVariable("NATIVERELAY_BIN");
            string path;
            if (!string.IsNullOrWhiteSpace(fromEnv))
            {
                path = System.IO.Path.GetFullPath(fromEnv);
            }
            else
            {
                string? root = FindRepoRoot();
                if (root is null)
                {
                    Assert.Fail($"Cannot find NativeRelay.sln above {AppContext.BaseDirectory}; set NATIVERELAY_BIN to the published nativerelay binary.");
                }

                path = System.IO.Path.Combine(root!, "out", "nativerelay");
            }

            if (!File.Exists(path))
            {
                Assert.Fail($"The nativerelay binary was not found at {path}. Run `make publish` first (or set NATIVERELAY_BIN).");
            }

            return path;
        }
    }

    private static string? FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(System.IO.Path.Combine(dir.FullName, "NativeRelay.sln")))
            {
                return dir.FullName;
            }
        }

        return null;
    }
}
