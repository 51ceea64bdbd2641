using System.Text;
using System.Text.RegularExpressions;

namespace NativeRelay.Tests.Support;

/// <summary>Checks on what the relay delivered.</summary>
public static class DeliveryAssert
{
    /// <summary>
    /// The delivered data must be exactly one new "Received:" header field followed by the
    /// original message, byte for byte. The field starts "Received: from ", names "by hostname"
    /// and, when given, "id queueId". Returns the unfolded Received field.
    /// </summary>
    public static string IsReceivedPlusOriginal(ReceivedMessage delivered, byte[] original, string hostname, string? queueId)
    {
        if (!MessageText.TrySplitFirstField(delivered.Data, out var field, out var rest))
        {
            Assert.Fail($"The delivered data has no complete first header field:\n{MessageText.Show(delivered.Data)}");
        }

        string received = Encoding.Latin1.GetString(field);
        if (!received.StartsWith("Received: from ", StringComparison.Ordinal))
        {
            Assert.Fail($"The delivered data must start with a new 'Received: from ' header, but starts:\n{MessageText.Show(delivered.Data, 600)}");
        }

        for (int i = 0; i < field.Length; i++)
        {
            bool bareLf = field[i] == '\n' && (i == 0 || field[i - 1] != '\r');
            bool bareCr = field[i] == '\r' && (i + 1 >= field.Length || field[i + 1] != '\n');
            if (bareLf || bareCr)
            {
                Assert.Fail($"The Received header has a bare {(bareLf ? "LF" : "CR")} at offset {i}:\n{MessageText.Show(field)}");
            }
        }

        foreach (var line in received.Split("\r\n"))
        {
            Assert.True(line.Length <= 998, $"A Received header line is longer than 998 octets:\n{line}");
        }

        string unfolded = MessageText.Unfold(received);
        Assert.True(Regex.IsMatch(unfolded, $@"\bby {Regex.Escape(hostname)}(?=[\s;(]|$)"),
            $"The Received header does not contain 'by {hostname}': {unfolded}");
        if (queueId is not null)
        {
            Assert.True(Regex.IsMatch(unfolded, $@"\bid {Regex.Escape(queueId)}(?=[\s;]|$)"),
                $"The Received header does not contain 'id {queueId}' (the queue id from the 250 reply): {unfolded}");
        }

        int diff = MessageText.FirstDifference(original, rest);
        if (diff >= 0)
        {
            Assert.Fail(
                $"After the Received header, the delivered bytes differ from the original at offset {diff} " +
                $"(original {original.Length} bytes, delivered {rest.Length} bytes after the header).\n" +
                $"--- original ---\n{MessageText.Show(original)}\n--- delivered (after Received) ---\n{MessageText.Show(rest)}");
        }

        return unfolded;
    }
}
