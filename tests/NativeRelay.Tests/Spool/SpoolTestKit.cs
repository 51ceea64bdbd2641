using System.Runtime.InteropServices;
using System.Text;
using NativeRelay.Config;
using NativeRelay.Message;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Tests.Spool;

/// <summary>A spool directory of real FasterLog files for one test, with helpers to write, damage and read it.</summary>
public sealed class SpoolTestKit : IDisposable
{
    public SpoolTestKit(SpoolOptions? options = null, string? directory = null)
    {
        Directory = directory ?? Path.Combine(Path.GetTempPath(), "nr-spool-" + Guid.NewGuid().ToString("N"));
        Options = options ?? new SpoolOptions();
    }

    public string Directory { get; }
    public SpoolOptions Options { get; }
    private readonly StringWriter _logText = new();
    private readonly object _logLock = new();

    private readonly List<Log> _logs = new();

    /// <summary>Everything the spools opened by this kit logged.</summary>
    public string LogText
    {
        get
        {
            lock (_logLock)
            {
                foreach (var log in _logs)
                    log.Flush();
                return _logText.ToString();
            }
        }
    }

    public SpoolLog Open(out Log log)
    {
        log = new Log(TextWriter.Synchronized(_logText), LogLevel.Debug);
        lock (_logLock)
            _logs.Add(log);
        return SpoolLog.Open(Directory, Options, log);
    }

    public SpoolLog Open() => Open(out _);

    public static Envelope Envelope(int recipients = 1, string sender = "alice@example.com") => new()
    {
        Sender = Encoding.ASCII.GetBytes(sender),
        Recipients = Enumerable.Range(0, recipients).Select(i => Encoding.ASCII.GetBytes($"rcpt{i}@example.org")).ToArray(),
        ClientAddress = "127.0.0.1",
        HeloName = "client.example",
        ArrivalUnixMs = 1_700_000_000_000,
    };

    public static byte[] Message(int size, int seed)
    {
        var random = new Random(seed);
        var bytes = new byte[size];
        for (int i = 0; i < size; i++)
            bytes[i] = (byte)('A' + random.Next(26));
        for (int i = 76; i + 1 < size; i += 78)
        {
            bytes[i] = (byte)'\r';
            bytes[i + 1] = (byte)'\n';
        }
        return bytes;
    }

    /// <summary>Appends a message and waits for its commit (as a session does before its 250).</summary>
    public static async Task<(long Head, long First)> AppendCommittedAsync(SpoolLog spool, ulong id, byte[] bytes, int recipients = 1)
    {
        var body = MessageBuffer.Rent();
        body.Write(bytes);
        try
        {
            var (head, first) = await spool.AppendMessageAsync(id, Envelope(recipients), body);
            await spool.WaitForCommitAsync(head);
            return (head, first);
        }
        finally
        {
            body.Release();
        }
    }

    public static byte[] Content(MessageBuffer body)
    {
        var copy = new byte[body.ContentLength];
        body.CopyTo(0, copy);
        return copy;
    }

    public static StatusRecord Status(ulong id, StatusFlags flags, int attempts, params (ushort, RecipientState)[] changes) => new()
    {
        Id = id,
        TimeUnixMs = 1_700_000_000_000,
        Flags = flags,
        Attempts = attempts,
        NextAttemptUnixMs = 1_700_000_060_000,
        Changes = changes,
    };

    public static Task<StatusRecord> Done(ulong id) => Task.FromResult(Status(id, StatusFlags.Done, 1, (0, RecipientState.Delivered)));

    public string SegmentFile(long address) => Path.Combine(Directory, $"queue.log.{address >> Options.SegmentSizeBits}");

    public long SegmentOffset(long address) => address & ((1L << Options.SegmentSizeBits) - 1);

    /// <summary>Flips one byte of the record payload that starts at <paramref name="address"/> (past FasterLog's 12-byte header).</summary>
    public void FlipPayloadByte(long address, int payloadOffset)
    {
        using var file = new FileStream(SegmentFile(address), FileMode.Open, FileAccess.ReadWrite);
        file.Position = SegmentOffset(address) + 12 + payloadOffset;
        int b = file.ReadByte();
        file.Position -= 1;
        file.WriteByte((byte)(b ^ 0x5A));
    }

    /// <summary>Cuts the segment file holding <paramref name="address"/> right there (a torn write).</summary>
    public void TruncateAt(long address)
    {
        using var file = new FileStream(SegmentFile(address), FileMode.Open, FileAccess.ReadWrite);
        file.SetLength(SegmentOffset(address));
    }

    public long SizeOnDisk()
    {
        long total = 0;
        foreach (var file in new DirectoryInfo(Directory).EnumerateFiles("queue.log.*"))
        {
            try
            {
                total += file.Length;
            }
            catch (FileNotFoundException)
            {
                // deleted by truncation while we looked
            }
        }
        return total;
    }

    public void Dispose()
    {
        foreach (var log in _logs)
            log.Dispose();
        try
        {
            System.IO.Directory.Delete(Directory, recursive: true);
        }
        catch (DirectoryNotFoundException)
        {
        }
    }

    [DllImport("libc", EntryPoint = "geteuid")]
    private static extern uint GetEffectiveUserId();

    public static bool IsRoot => OperatingSystem.IsLinux() && GetEffectiveUserId() == 0;
}

/// <summary>A fact that needs root (to mount a small tmpfs); skipped elsewhere.</summary>
public sealed class RootFactAttribute : FactAttribute
{
    public RootFactAttribute()
    {
        if (!SpoolTestKit.IsRoot)
            Skip = "needs root to mount a small tmpfs";
    }
}

/// <summary>A small filesystem (tmpfs with a size limit) mounted for one test and unmounted after it.</summary>
public sealed class SmallFilesystem : IDisposable
{
    public SmallFilesystem(int megabytes)
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "nr-tmpfs-" + Guid.NewGuid().ToString("N"));
        System.IO.Directory.CreateDirectory(Path);
        Run("mount", $"-t tmpfs -o size={megabytes}m nativerelay-test {Path}");
    }

    public string Path { get; }

    public long Free => new DriveInfo(Path).AvailableFreeSpace;

    /// <summary>Fills the filesystem with a file until fewer than <paramref name="leave"/> bytes are free (0: completely).</summary>
    public string Fill(long leave = 0, string name = "filler")
    {
        string file = System.IO.Path.Combine(Path, name);
        using var stream = new FileStream(file, FileMode.Append, FileAccess.Write);
        var block = new byte[64 * 1024];
        Array.Fill(block, (byte)'x');
        try
        {
            while (true)
            {
                long free = Free;
                if (free <= leave)
                    break;
                stream.Write(block, 0, (int)Math.Min(block.Length, Math.Max(4096, free - leave)));
                stream.Flush();
            }
        }
        catch (IOException)
        {
            // ENOSPC: full.
        }
        return file;
    }

    private static void Run(string command, string arguments)
    {
        using var process = System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo(command, arguments)
        {
            RedirectStandardError = true,
            RedirectStandardOutput = true,
        })!;
        if (!process.WaitForExit(30_000))
            throw new InvalidOperationException($"{command} {arguments} did not finish");
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"{command} {arguments} failed: {process.StandardError.ReadToEnd()}");
    }

    public void Dispose()
    {
        try
        {
            Run("umount", Path);
        }
        catch (InvalidOperationException)
        {
            Run("umount", $"-l {Path}");
        }
        System.IO.Directory.Delete(Path, recursive: true);
    }
}
