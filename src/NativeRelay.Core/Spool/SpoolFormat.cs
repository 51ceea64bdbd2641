using NativeRelay.Config;
using NativeRelay.Telemetry;

namespace NativeRelay.Spool;

/// <summary>
/// The layout a spool was created with, kept in <c>spool.format</c> beside the log. A FasterLog
/// record never crosses a page, and the segment files are named by their size, so a log written
/// with one page or segment size cannot be read with another: records would be split at the new
/// page boundaries and replayed as garbage. The file pins those two sizes for the life of the
/// spool; changing <c>spoolTuning</c> afterwards applies to new spools only (with a warning), the
/// way Postfix keeps a queue's hash depth in the queue itself. The in-memory ring
/// (<see cref="SpoolOptions.MemorySizeBits"/>) and the disk reserve are free to change.
/// </summary>
internal static class SpoolFormat
{
    public const string FileName = "spool.format";

    /// <summary>
    /// The options to open <paramref name="directory"/> with: the configured ones for a new spool
    /// (recorded now), the recorded layout for an existing one.
    /// </summary>
    public static SpoolOptions Reconcile(string directory, SpoolOptions configured, Log log)
    {
        string path = Path.Combine(directory, FileName);
        if (!File.Exists(path))
        {
            // A spool without the file is new, or was written before the file existed, in which
            // case the configured sizes are the only ones it can have been opened with.
            Write(path, configured);
            return configured;
        }
        var (pageBits, segmentBits) = Read(path);
        if (pageBits == configured.PageSizeBits && segmentBits == configured.SegmentSizeBits)
            return configured;
        if (segmentBits < pageBits)
            throw new ConfigException($"{path}: segmentSizeBits {segmentBits} is smaller than pageSizeBits {pageBits}; the file is damaged");
        log.Warn($"spool {directory} was created with pageSizeBits {pageBits} and segmentSizeBits {segmentBits}; "
                 + $"using them (spoolTuning {configured.PageSizeBits}/{configured.SegmentSizeBits} applies to new spools only)");
        return new SpoolOptions
        {
            PageSizeBits = pageBits,
            SegmentSizeBits = segmentBits,
            MemorySizeBits = Math.Max(configured.MemorySizeBits, pageBits + 1),
            MinFreeBytes = configured.MinFreeBytes,
            DirectWrites = configured.DirectWrites,
        };
    }

    private static (int PageBits, int SegmentBits) Read(string path)
    {
        int page = -1, segment = -1;
        foreach (var raw in File.ReadAllLines(path))
        {
            var line = raw.Trim();
            if (line.Length == 0 || line[0] == '#')
                continue;
            int eq = line.IndexOf('=');
            if (eq < 0 || !int.TryParse(line.AsSpan(eq + 1).Trim(), out int value))
                throw new ConfigException($"{path}: cannot read line '{line}' (expected name=number)");
            switch (line[..eq].Trim())
            {
                case "pageSizeBits":
                    page = value;
                    break;
                case "segmentSizeBits":
                    segment = value;
                    break;
            }
        }
        if (page is < 12 or > 30 || segment is < 12 or > 40)
            throw new ConfigException($"{path}: pageSizeBits and segmentSizeBits are missing or out of range; restore the file (the log cannot be read without them)");
        return (page, segment);
    }

    private static void Write(string path, SpoolOptions options)
    {
        // Written once, atomically: a crash leaves either no file (the next start writes it again
        // from the same configuration) or a complete one.
        string temp = path + ".tmp";
        using (var file = new FileStream(temp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            var text = System.Text.Encoding.ASCII.GetBytes(
                "# The layout this spool's log was written with. Do not edit: the log cannot be read with other values.\n"
                + $"pageSizeBits={options.PageSizeBits}\nsegmentSizeBits={options.SegmentSizeBits}\n");
            file.Write(text);
            file.Flush(flushToDisk: true);
        }
        File.Move(temp, path, overwrite: true);
    }
}
