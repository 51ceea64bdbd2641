namespace NativeRelay.Events;

/// <summary>Small files replaced whole and durably: written beside, fsynced, renamed over, the directory fsynced. A crash leaves the old content or the new, never a mix.</summary>
internal static class DurableFile
{
    public static void Write(string path, string content)
    {
        string temporary = path + ".tmp";
        using (var file = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None, 1))
        {
            file.Write(System.Text.Encoding.UTF8.GetBytes(content));
            file.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
        NativeRelay.Local.MaildirWriter.TryFsyncDirectory(Path.GetDirectoryName(path)!, out _);
    }
}
