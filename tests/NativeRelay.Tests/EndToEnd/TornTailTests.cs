using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Spool;
using NativeRelay.Tests.Support;

/// <summary>
/// A relay killed with SIGKILL whose log tail is then damaged as a power cut would leave it (the
/// last page cut short, or bytes in it changed): it must start, deliver everything committed
/// before the damage byte for byte, never deliver a damaged record as a message, say what it
/// dropped, and keep working: mail accepted afterwards survives the next crash too.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class TornTailTests(ITestOutputHelper log)
{
    private const int Count = 30;

    [Theory]
    [InlineData("truncate")]
    [InlineData("flip")]
    public async Task A_damaged_tail_is_detected_and_the_relay_starts_with_everything_before_it(string damage)
    {
        using var dir = new TempDir();
        int sinkPort = FreePort.Get(); // the destination is down while the messages are queued
        var config = RelayConfig.For(dir, $"127.0.0.1:{sinkPort}");
        var sent = new Dictionary<string, byte[]>();

        using (var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log))
        {
            await SendAsync(config.Port, "before", Count, sent);
            relay.Kill();
            await relay.WaitForExitAsync(Waits.Exit);
        }

        // The last segment file: find where its data ends and damage the last record there.
        var segment = new DirectoryInfo(dir.Spool).EnumerateFiles("queue.log.*")
            .OrderBy(f => int.Parse(f.Name["queue.log.".Length..])).Last();
        long end = LastNonZero(segment.FullName) + 1;
        Assert.True(end > 2000, $"the log holds the messages ({end} bytes)");
        if (damage == "truncate")
        {
            using var file = new FileStream(segment.FullName, FileMode.Open, FileAccess.Write);
            file.SetLength(end - 700); // cuts into the last message's record
        }
        else
        {
            using var file = new FileStream(segment.FullName, FileMode.Open, FileAccess.ReadWrite);
            file.Position = end - 700;
            int b = file.ReadByte();
            file.Position = end - 700;
            file.WriteByte((byte)(b ^ 0xFF));
        }

        await using var sink = new CountingSink(sinkPort) { Keep = _ => true };
        config.Listen = [$"127.0.0.1:{FreePort.Get()}"];
        using (var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log))
        {
            // Everything but the damaged last message(s) is delivered, unchanged.
            await SpoolEndToEnd.WaitUntilAsync(() => sink.Distinct >= Count - 2, Waits.Delivery, "delivery of the undamaged messages", relay.Describe);
            await Task.Delay(2000); // anything else that is coming
            AssertIntact(sink, sent);
            Assert.True(sink.Distinct < Count, $"the damaged message must not be delivered: {sink.Distinct} of {Count} arrived\n{relay.Describe()}");
            Assert.Contains(relay.StdoutLines, l => l.Contains("spool:", StringComparison.Ordinal)
                && (l.Contains("torn or damaged record", StringComparison.Ordinal) || l.Contains("unreadable", StringComparison.Ordinal)));

            // The log goes on: new mail is accepted, survives a crash and is delivered.
            await SendAsync(config.Port, "after", 5, sent);
            relay.Kill();
            await relay.WaitForExitAsync(Waits.Exit);
        }
        config.Listen = [$"127.0.0.1:{FreePort.Get()}"];
        using (var relay = await SpoolEndToEnd.StartRelayAsync(config, dir, log))
        {
            await SpoolEndToEnd.WaitUntilAsync(() => Enumerable.Range(0, 5).All(i => sink.Has($"after-{i}@torn.test")),
                Waits.Delivery, "delivery of the mail accepted after the damage", relay.Describe);
            AssertIntact(sink, sent);
        }
    }

    private static async Task SendAsync(int port, string prefix, int count, Dictionary<string, byte[]> sent)
    {
        await using var client = await TestSmtpClient.ConnectAndGreetAsync(port);
        await client.EhloAsync();
        for (int i = 0; i < count; i++)
        {
            string id = $"{prefix}-{i}@torn.test";
            var data = SpoolEndToEnd.Message(id, 1500, i);
            await client.SendAcceptedAsync("sender@example.test", ["rcpt@example.test"], data);
            sent[id] = data;
        }
    }

    /// <summary>Every delivered message is exactly what was sent (after the relay's Received header).</summary>
    private static void AssertIntact(CountingSink sink, Dictionary<string, byte[]> sent)
    {
        foreach (var (id, data) in sent)
        {
            var got = sink.Kept(id);
            if (got is null)
                continue;
            Assert.True(got.AsSpan().EndsWith(data), $"message {id} arrived changed");
            Assert.StartsWith("Received:", System.Text.Encoding.ASCII.GetString(got, 0, 9));
        }
    }

    private static long LastNonZero(string path)
    {
        var bytes = File.ReadAllBytes(path);
        for (long i = bytes.Length - 1; i >= 0; i--)
            if (bytes[i] != 0)
                return i;
        return -1;
    }
}
