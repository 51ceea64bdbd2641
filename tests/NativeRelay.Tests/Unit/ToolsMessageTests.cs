using System.Buffers;
using System.Text;
using NativeRelay.Message;
using NativeRelay.Tools;

namespace NativeRelay.Tests.Unit;

public class ToolsMessageTests
{
    private const string From = "blast@example.org";
    private const string Rcpt = "sink@example.com";
    private static readonly DateTimeOffset Date = new(2026, 1, 12, 3, 4, 5, TimeSpan.Zero);

    private static int Minimum => BlastMessage.MinimumSize(From, Rcpt);

    public static IEnumerable<object[]> Sizes()
    {
        int min = BlastMessage.MinimumSize(From, Rcpt);
        foreach (int extra in new[] { 0, 1, 2, 3, 77, 78, 79, 80, 81, 155, 156, 157, 1000, 4000, 100 * 1024 })
            yield return [min + extra];
        yield return [1024];
        yield return [100 * 1024];
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void The_message_has_exactly_the_requested_size_and_round_trips_through_the_data_codec(int size)
    {
        var m = BlastMessage.Create(size, From, Rcpt, Date, "run00001");
        Assert.Equal(size, m.Size);

        var header = m.NewHeaderCopy();
        m.Stamp(header, 42);
        byte[] wire = [.. header, .. m.BodyWire];
        Assert.Equal(m.WireLength, wire.Length);
        Assert.EndsWith("\r\n.\r\n", Encoding.ASCII.GetString(wire));

        var unstuffer = new DotUnstuffer();
        var output = new ArrayBufferWriter<byte>();
        Assert.Equal(DataStatus.Complete, unstuffer.Process(wire, output, out int consumed));
        Assert.Equal(wire.Length, consumed);
        Assert.False(unstuffer.LineTooLong);
        Assert.Equal(size, output.WrittenCount);
        Assert.Equal(m.ToMessage(42), output.WrittenSpan.ToArray());
    }

    [Fact]
    public void The_message_is_valid_rfc5322_with_crlf_lines_of_at_most_78_octets()
    {
        var m = BlastMessage.Create(20_000, From, Rcpt, Date, "run00001");
        Assert.True(BlastMessage.Create(Minimum, From, Rcpt, new DateTimeOffset(2026, 1, 31, 0, 0, 0, TimeSpan.FromHours(-5)), "abcdef01").Size == Minimum);
        var message = m.ToMessage(7);
        var text = Encoding.ASCII.GetString(message);
        Assert.EndsWith("\r\n", text);
        Assert.DoesNotContain("\n", text.Replace("\r\n", ""));
        Assert.DoesNotContain("\r", text.Replace("\r\n", ""));
        foreach (var line in text.Split("\r\n"))
            Assert.True(line.Length <= 78, $"line of {line.Length}: {line}");

        var names = new List<string>();
        var scanner = new HeaderScanner(message);
        while (scanner.TryReadNext(out var field))
            names.Add(Encoding.ASCII.GetString(field.Name(message)));
        Assert.Equal(HeaderScanStatus.EndOfHeaders, scanner.Status);
        Assert.Equal(["Date", "From", "To", "Subject", "Message-ID", "MIME-Version", "Content-Type", "X-Mailer"], names);
        Assert.True(HeaderScanner.TryFindFirst(message, "Message-ID"u8, out var id));
        Assert.Equal(" <blast.run00001.000000000007@example.org>", Encoding.ASCII.GetString(id.RawValue(message)));
        Assert.True(HeaderScanner.TryFindFirst(message, "Date"u8, out var date));
        Assert.Equal(" Mon, 12 Jan 2026 03:04:05 +0000", Encoding.ASCII.GetString(date.RawValue(message)));
    }

    [Fact]
    public void Some_body_lines_start_with_a_dot_and_are_stuffed_on_the_wire()
    {
        var m = BlastMessage.Create(20_000, From, Rcpt, Date, "run00001");
        var plain = Encoding.ASCII.GetString(m.ToMessage(0));
        var wire = Encoding.ASCII.GetString(m.BodyWire);
        int dotted = plain.Split("\r\n").Count(l => l.StartsWith('.'));
        Assert.True(dotted >= 4, $"{dotted} dotted lines");
        Assert.Equal(dotted, wire.Split("\r\n").Count(l => l.StartsWith("..")));
        Assert.Equal(m.Size + dotted + 3, m.WireLength);
    }

    [Fact]
    public void Stamping_changes_only_the_sequence_digits()
    {
        var m = BlastMessage.Create(2000, From, Rcpt, Date, "abcd");
        var a = m.NewHeaderCopy();
        var b = m.NewHeaderCopy();
        m.Stamp(a, 1);
        m.Stamp(b, 999_999_999_999);
        Assert.Contains("<blast.abcd.000000000001@example.org>", Encoding.ASCII.GetString(a));
        Assert.Contains("<blast.abcd.999999999999@example.org>", Encoding.ASCII.GetString(b));
        int differing = a.Zip(b).Count(p => p.First != p.Second);
        Assert.InRange(differing, 1, BlastMessage.SequenceDigits);
        Assert.Equal(m.HeaderTemplate.Length, a.Length);
        Assert.All(m.HeaderTemplate.AsSpan(m.SequenceOffset, BlastMessage.SequenceDigits).ToArray(), d => Assert.Equal((byte)'0', d));
    }

    [Fact]
    public void Stamping_allocates_nothing()
    {
        var m = BlastMessage.Create(1024, From, Rcpt, Date, "run00001");
        var header = m.NewHeaderCopy();
        m.Stamp(header, 1);
        long before = GC.GetAllocatedBytesForCurrentThread();
        for (int i = 0; i < 10_000; i++)
            m.Stamp(header, i);
        // Less than a byte per stamp: the runtime's own tiering work may land on this thread
        // once (about 1.5 KB seen under load), but any allocation per stamp would be 240 KB or more.
        Assert.InRange(GC.GetAllocatedBytesForCurrentThread() - before, 0, 9_999);
    }

    [Fact]
    public void Too_small_a_size_is_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => BlastMessage.Create(Minimum - 1, From, Rcpt, Date, "00000000"));
    }
}
