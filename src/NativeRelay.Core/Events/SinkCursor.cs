using System.Globalization;

namespace NativeRelay.Events;

/// <summary>
/// What a sink has acknowledged: the sequence number of the first event it has not, in
/// <c>events/cursor.NAME</c>, replaced durably after each acknowledged batch (<see cref="DurableFile"/>).
/// A crash between a 2xx and the cursor's write sends that batch again, with the same ids.
/// </summary>
internal sealed class SinkCursor(string path)
{
    public string Path { get; } = path;

    public static SinkCursor For(string journalDirectory, string sinkName) =>
        new(System.IO.Path.Combine(journalDirectory, "cursor." + sinkName));

    /// <summary>The stored position, or null for a sink that has none yet (new).</summary>
    public long? Read()
    {
        if (!File.Exists(Path))
            return null;
        var text = File.ReadAllText(Path).Trim();
        if (long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long seq))
            return seq;
        throw new NativeRelay.Config.ConfigException($"{Path}: not a cursor (one decimal number); remove it to start the webhook at the newest event");
    }

    public void Write(long seq) => DurableFile.Write(Path, seq.ToString(CultureInfo.InvariantCulture) + "\n");
}
