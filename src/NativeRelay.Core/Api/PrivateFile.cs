namespace NativeRelay.Api;

/// <summary>How the API's own files (idempotency journal, unsubscribes, the unsubscribe key) are opened for writing: mode 0600 when created.</summary>
internal static class PrivateFile
{
    public static FileStreamOptions Write(FileMode mode)
    {
        var options = new FileStreamOptions { Mode = mode, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows())
            options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        return options;
    }
}
