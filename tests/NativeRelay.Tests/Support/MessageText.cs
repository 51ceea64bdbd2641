using System.Text;

namespace NativeRelay.Tests.Support;

/// <summary>Small helpers to build test messages and to look inside delivered ones.</summary>
public static class MessageText
{
    /// <summary>Joins lines with CRLF and ends the last one with CRLF; Latin-1, one byte per char.</summary>
    public static byte[] Build(params string[] lines) =>
        Encoding.Latin1.GetBytes(string.Concat(lines.Select(l => l + "\r\n")));

    /// <summary>A simple message with a unique Message-ID.</summary>
    public static byte[] Simple(string messageId, string subject = "test", string body = "Hello from the end-to-end tests.") =>
        Build(
            "From: Sender <sender@example.test>",
            "To: Rcpt <rcpt@example.test>",
            $"Subject: {subject}",
            $"Message-ID: <{messageId}>",
            "Date: Mon, 1 Jan 2024 00:00:00 +0000",
            "",
            body);

    /// <summary>The unfolded value of the first header field with this name, or null.</summary>
    public static string? Header(string message, string name)
    {
        int end = message.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        string head = end < 0 ? message : message[..(end + 2)];
        foreach (var field in SplitFields(head))
        {
            int colon = field.IndexOf(':');
            if (colon > 0 && string.Equals(field[..colon].Trim(), name, StringComparison.OrdinalIgnoreCase))
            {
                return Unfold(field[(colon + 1)..]).Trim();
            }
        }

        return null;
    }

    /// <summary>Removes folding: CRLF followed by a space or tab becomes that space or tab.</summary>
    public static string Unfold(string s) => s.Replace("\r\n ", " ").Replace("\r\n\t", "\t").TrimEnd('\r', '\n');

    /// <summary>
    /// Splits data into its first header field (including the CRLF that ends it, with any folded
    /// continuation lines) and the rest. Returns false if there is no complete first field.
    /// </summary>
    public static bool TrySplitFirstField(byte[] data, out byte[] field, out byte[] rest)
    {
        for (int i = 0; i + 1 < data.Length; i++)
        {
            if (data[i] == '\r' && data[i + 1] == '\n')
            {
                bool continued = i + 2 < data.Length && (data[i + 2] == ' ' || data[i + 2] == '\t');
                if (!continued)
                {
                    field = data[..(i + 2)];
                    rest = data[(i + 2)..];
                    return true;
                }
            }
        }

        field = Array.Empty<byte>();
        rest = data;
        return false;
    }

    /// <summary>Shows bytes for failure messages: CR and LF made visible, long data cut.</summary>
    public static string Show(byte[] data, int max = 2000)
    {
        string s = Encoding.Latin1.GetString(data, 0, Math.Min(max, data.Length)).Replace("\r", "\\r").Replace("\n", "\\n\n");
        return data.Length > max ? s + $"... ({data.Length} bytes)" : s;
    }

    /// <summary>Index of the first byte where two arrays differ, or -1 when they are equal.</summary>
    public static int FirstDifference(byte[] a, byte[] b)
    {
        int n = Math.Min(a.Length, b.Length);
        for (int i = 0; i < n; i++)
        {
            if (a[i] != b[i])
            {
                return i;
            }
        }

        return a.Length == b.Length ? -1 : n;
    }

    private static IEnumerable<string> SplitFields(string head)
    {
        var current = new StringBuilder();
        foreach (var line in head.Split("\r\n"))
        {
            if (line.Length > 0 && (line[0] == ' ' || line[0] == '\t'))
            {
                current.Append("\r\n").Append(line);
                continue;
            }

            if (current.Length > 0)
            {
                yield return current.ToString();
            }

            current.Clear().Append(line);
        }

        if (current.Length > 0)
        {
            yield return current.ToString();
        }
    }
}
