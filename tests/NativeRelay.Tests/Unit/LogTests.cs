using System.Text;
using System.Text.Json;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Tests.Unit;

/// <summary>The relay's log: UTF-8 lines formatted in place, levels, the JSON form, a bounded backlog.</summary>
public sealed class LogTests
{
    [Fact]
    public void Interpolated_values_are_written_as_utf8_text()
    {
        var output = new MemoryStream();
        using (var log = new Log(output))
        {
            byte[] sender = Encoding.UTF8.GetBytes("jörg@exämple.test");
            log.Info($"{new QueueIdText(0x0191F0C2A3B40001)}: queued from={new Utf8Text(sender)} rcpts={3} size={1024L} ratio={0.5:0.00} {"tls"}{(string?)null}|{ConsoleColor.Red}|{new Version(1, 2)}");
        }

        string line = Encoding.UTF8.GetString(output.ToArray());
        Assert.Matches(@"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info  ", line);
        Assert.EndsWith(" info  0191F0C2A3B40001: queued from=jörg@exämple.test rcpts=3 size=1024 ratio=0.50 tls|Red|1.2\n", line);
    }

    [Fact]
    public void A_line_below_the_level_is_not_formatted_at_all()
    {
        var output = new MemoryStream();
        var counted = new CountsToString();
        using (var log = new Log(output, LogLevel.Warn))
        {
            log.Info($"skipped {counted}");
            log.Debug($"skipped {counted}");
            log.Write(LogLevel.Info, $"skipped {counted}");
            log.Warn($"written {counted}");
            log.Write(LogLevel.Error, $"written {counted}");
        }

        Assert.Equal(2, counted.Calls);
        var lines = Encoding.UTF8.GetString(output.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        Assert.EndsWith(" warn  written 1", lines[0]);
        Assert.EndsWith(" error written 2", lines[1]);
    }

    [Fact]
    public void Long_lines_grow_the_buffer_and_arrive_whole()
    {
        var output = new MemoryStream();
        string big = new('x', 5000);
        using (var log = new Log(output))
        {
            log.Info($"{big}|{big}|{12345}");
        }
        Assert.EndsWith($" info  {big}|{big}|12345\n", Encoding.UTF8.GetString(output.ToArray()));
    }

    [Fact]
    public void Json_lines_escape_client_text_and_survive_invalid_utf8()
    {
        var output = new StringWriter();
        using (var log = new Log(output, LogLevel.Info, LogFormat.Json))
        {
            log.Info($"from={new Utf8Text("a\"b\r\n"u8)} size={7}");
            log.Info($"bad={new Utf8Text([0x61, 0xFF, 0x62])}");
        }

        var lines = output.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal(2, lines.Length);
        using (var first = JsonDocument.Parse(lines[0]))
            Assert.Equal("from=a\"b\r\n size=7", first.RootElement.GetProperty("message").GetString());
        using (var second = JsonDocument.Parse(lines[1]))
            Assert.Equal("bad=a\uFFFDb", second.RootElement.GetProperty("message").GetString());
    }

    [Fact]
    public void A_line_allocates_nothing_once_warm()
    {
        using var log = new Log(Stream.Null);
        byte[] sender = "someone@example.test"u8.ToArray();
        string client = "[127.0.0.1]:40000";
        string? tls = null, user = null;
        // The relay's own "queued" line (SmtpServerSession), hole for hole.
        void OneLine(ulong id) =>
            log.Info($"{new QueueIdText(id)}: queued from={new Utf8Text(sender)} rcpts={1} size={1024L} client={client}{(tls is null ? "" : " tls")}{(user is null ? "" : " auth=")}{user}");

        for (ulong i = 0; i < 100; i++)
            OneLine(i);
        log.Flush();
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (ulong i = 0; i < 1000; i++)
        {
            OneLine(i);
            if (i % 50 == 49)
                log.Flush(); // the pending buffer keeps its size, as it does under a steady load
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        // A string per line would be well over 100 KB for these 1,000 lines.
        Assert.True(allocated < 1000, $"{allocated} bytes allocated for 1,000 lines");
    }

    [Fact]
    public void When_the_output_falls_behind_lines_are_dropped_counted_and_reported()
    {
        // The output blocks until released, so whatever the flush timer does meanwhile, at most
        // one batch is stuck in the output and one pending buffer fills: twice the cap and more
        // must drop lines.
        var output = new StalledStream();
        int lines = 2 * Log.MaxPendingBytes / 1000 + 100;
        using (var log = new Log(output))
        {
            string line = new('y', 1000);
            for (int i = 0; i < lines; i++)
                log.Info($"{i} {line}");
            output.Release();
            log.Flush();
            log.Info("after");
        }

        // One notice per batch that had drops: one, or two when the log's own timer swapped a full
        // buffer while the lines were still coming (its write then stuck in the output).
        var text = Encoding.UTF8.GetString(output.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var notices = text.Where(t => t.Contains("line(s) dropped")).ToArray();
        Assert.InRange(notices.Length, 1, 2);
        Assert.All(notices, n => Assert.Contains(" warn  log: ", n));
        int dropped = notices.Sum(n => int.Parse(n.Split("log: ")[1].Split(' ')[0]));
        var kept = text.Where(t => t.EndsWith("yyy")).Select(t => int.Parse(t.Split("info  ")[1].Split(' ')[0])).ToArray();
        Assert.True(dropped > 0);
        Assert.True(kept.Length * 1000 <= 2 * Log.MaxPendingBytes, $"{kept.Length} lines written");
        Assert.Equal(lines, kept.Length + dropped);
        Assert.Equal(0, kept[0]); // the first lines are the ones kept, and in order
        Assert.True(kept.Zip(kept.Skip(1)).All(p => p.First < p.Second), "lines out of order");
        Assert.All(notices, n => Assert.True(Array.IndexOf(text, n) > 0)); // after the lines that got out first
        Assert.EndsWith(" info  after", text[^1]);
    }

    [Fact]
    public void Dropped_lines_are_reported_whatever_the_level_and_even_at_shutdown()
    {
        var output = new StalledStream();
        int lines = 2 * Log.MaxPendingBytes / 1000 + 100;
        using (var log = new Log(output, LogLevel.Error))
        {
            string line = new('z', 1000);
            for (int i = 0; i < lines; i++)
                log.Error($"{i} {line}");
            output.Release();
            // No flush here: the one at shutdown must still say what was lost.
        }

        // The log's own timer may have flushed (and put a notice in line) while the lines were still
        // coming, so a notice need not be the last line; what must hold is that by the end of
        // Dispose every line is either written or counted in a notice.
        var text = Encoding.UTF8.GetString(output.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var notices = text.Where(t => t.Contains(" warn  log: ")).ToArray();
        Assert.NotEmpty(notices);
        int dropped = notices.Sum(n => int.Parse(n.Split("log: ")[1].Split(' ')[0]));
        Assert.Equal(lines, text.Count(t => t.EndsWith("zzz")) + dropped);
    }

    /// <summary>An output that does not take a byte until <see cref="Release"/> (at most 30 s).</summary>
    private sealed class StalledStream : MemoryStream
    {
        private readonly ManualResetEventSlim _released = new();

        public void Release() => _released.Set();

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            _released.Wait(TimeSpan.FromSeconds(30));
            base.Write(buffer);
        }
    }

    private sealed class CountsToString
    {
        public int Calls;
        public override string ToString() => (++Calls).ToString();
    }
}
