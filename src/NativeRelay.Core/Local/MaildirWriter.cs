using System.Buffers;
using System.Runtime.InteropServices;
using System.Text;
using NativeRelay.Interop;
using NativeRelay.Message;

namespace NativeRelay.Local;

/// <summary>
/// Delivers into Maildirs (https://cr.yp.to/proto/maildir.html): the message is written to tmp/
/// under a name no other delivery can have (time.M&lt;usec&gt;P&lt;pid&gt;Q&lt;seq&gt;.&lt;host&gt;), the file is
/// fsynced, moved into new/ (so a reader sees a whole message or none), and new/ is fsynced so the
/// move survives a power loss. Lines end in LF on disk, as Maildir readers expect. A user's
/// Maildir (tmp, new, cur) is made on first use with mode 0700, files with 0600.
/// </summary>
public sealed class MaildirWriter
{
    private const UnixFileMode DirectoryMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    private const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    private const int BufferSize = 64 * 1024;

    private static long s_sequence;
    private readonly string _host;
    private readonly int _pid = Environment.ProcessId;

    public MaildirWriter(string hostname) => _host = SafeHost(hostname);

    /// <summary>
    /// Writes one message: <paramref name="prefix"/> (header fields to add, CRLF line ends) and then
    /// the message. Returns the path of the file in new/. Throws IOException (or
    /// UnauthorizedAccessException) when it could not; nothing is left in new/ then.
    /// </summary>
    public string Deliver(string maildir, ReadOnlySpan<byte> prefix, MessageBuffer body)
    {
        EnsureMaildir(maildir);
        string tmpDir = Path.Combine(maildir, "tmp");
        string newDir = Path.Combine(maildir, "new");
        for (int attempt = 0; ; attempt++)
        {
            string name = UniqueName();
            string tmp = Path.Combine(tmpDir, name);
            FileStream file;
            try
            {
                var options = new FileStreamOptions
                {
                    Mode = System.IO.FileMode.CreateNew,
                    Access = FileAccess.Write,
                    Share = FileShare.None,
                    BufferSize = 0,
                };
                if (!OperatingSystem.IsWindows())
                    options.UnixCreateMode = FileMode;
                file = new FileStream(tmp, options);
            }
            catch (IOException) when (attempt < 5 && File.Exists(tmp))
            {
                continue; // the name is taken (a clock step back); the next sequence number differs
            }
            try
            {
                using (file)
                {
                    WriteLf(file, prefix, body);
                    file.Flush(flushToDisk: true);
                }
                string final = Path.Combine(newDir, name);
                // Without overwrite .NET links then unlinks, as the Maildir spec has it; either way
                // the file appears in new/ whole, under a name nothing else uses.
                File.Move(tmp, final, overwrite: false);
                FsyncDirectory(newDir);
                return final;
            }
            catch
            {
                TryDelete(tmp);
                throw;
            }
        }
    }

    /// <summary>Makes ROOT/user/{tmp,new,cur} when missing and syncs the directories that got new entries.</summary>
    public static void EnsureMaildir(string maildir)
    {
        if (Directory.Exists(Path.Combine(maildir, "tmp")) && Directory.Exists(Path.Combine(maildir, "new")) && Directory.Exists(Path.Combine(maildir, "cur")))
            return;
        string parent = Path.GetDirectoryName(maildir)!;
        bool parentExisted = Directory.Exists(parent);
        CreateDirectory(maildir);
        foreach (var sub in (ReadOnlySpan<string>)["tmp", "new", "cur"])
            CreateDirectory(Path.Combine(maildir, sub));
        FsyncDirectory(maildir);
        FsyncDirectory(parent);
        if (!parentExisted && Path.GetDirectoryName(parent) is { } grandParent)
            FsyncDirectory(grandParent);
    }

    private static void CreateDirectory(string path)
    {
        if (OperatingSystem.IsWindows())
            Directory.CreateDirectory(path);
        else
            Directory.CreateDirectory(path, DirectoryMode);
    }

    /// <summary>The Maildir unique name: seconds.M&lt;microseconds&gt;P&lt;pid&gt;Q&lt;n&gt;.host.</summary>
    public string UniqueName()
    {
        long ticks = DateTime.UtcNow.Ticks - DateTime.UnixEpoch.Ticks;
        long seconds = ticks / TimeSpan.TicksPerSecond;
        long micros = ticks % TimeSpan.TicksPerSecond / 10;
        long seq = Interlocked.Increment(ref s_sequence);
        return $"{seconds}.M{micros}P{_pid}Q{seq}.{_host}";
    }

    // '/' and ':' cannot be in the host part (the spec replaces them with \057 and \072).
    private static string SafeHost(string host)
    {
        var sb = new StringBuilder(host.Length);
        foreach (char c in host)
        {
            if (c == '/') sb.Append("\\057");
            else if (c == ':') sb.Append("\\072");
            else if (c > ' ' && c < 127) sb.Append(c);
        }
        return sb.Length == 0 ? "localhost" : sb.ToString();
    }

    // CRLF becomes LF; a CR without LF stays as it is.
    private static void WriteLf(FileStream file, ReadOnlySpan<byte> prefix, MessageBuffer body)
    {
        var buffer = ArrayPool<byte>.Shared.Rent(BufferSize);
        try
        {
            int used = 0;
            bool pendingCr = false;
            Convert(prefix, buffer, ref used, ref pendingCr, file);
            foreach (var segment in body.GetSegments())
                Convert(segment.Span, buffer, ref used, ref pendingCr, file);
            if (pendingCr)
                Put((byte)'\r', buffer, ref used, file);
            file.Write(buffer, 0, used);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
    }

    private static void Convert(ReadOnlySpan<byte> src, byte[] buffer, ref int used, ref bool pendingCr, FileStream file)
    {
        int i = 0;
        while (i < src.Length)
        {
            if (pendingCr)
            {
                pendingCr = false;
                if (src[i] != '\n')
                    Put((byte)'\r', buffer, ref used, file);
            }
            int cr = src[i..].IndexOf((byte)'\r');
            var run = cr < 0 ? src[i..] : src.Slice(i, cr);
            while (!run.IsEmpty)
            {
                if (used == buffer.Length)
                {
                    file.Write(buffer, 0, used);
                    used = 0;
                }
                int n = Math.Min(run.Length, buffer.Length - used);
                run[..n].CopyTo(buffer.AsSpan(used));
                used += n;
                run = run[n..];
            }
            if (cr < 0)
                break;
            i += cr + 1;
            pendingCr = true;
        }
    }

    private static void Put(byte b, byte[] buffer, ref int used, FileStream file)
    {
        if (used == buffer.Length)
        {
            file.Write(buffer, 0, used);
            used = 0;
        }
        buffer[used++] = b;
    }

    private static void TryDelete(string path)
    {
        try { File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    /// <summary>fsync(2) on a directory, so the entries made in it are on disk.</summary>
    public static void FsyncDirectory(string path)
    {
        if (!TryFsyncDirectory(path, out int errno))
            throw new IOException($"cannot open directory {path} to sync it (errno {errno})");
    }

    /// <summary>
    /// As <see cref="FsyncDirectory"/>, but false (with the errno) when the directory cannot be
    /// opened at all, e.g. by a user who may write into it but not read it; a failed fsync throws.
    /// </summary>
    public static bool TryFsyncDirectory(string path, out int errno)
    {
        int fd = Libc.Open(path, Libc.O_RDONLY | Libc.O_CLOEXEC);
        if (fd < 0)
        {
            errno = Marshal.GetLastPInvokeError();
            return false;
        }
        errno = 0;
        try
        {
            if (Libc.Fsync(fd) != 0)
                throw new IOException($"fsync of directory {path} failed (errno {Marshal.GetLastPInvokeError()})");
        }
        finally
        {
            Libc.Close(fd);
        }
        return true;
    }
}
