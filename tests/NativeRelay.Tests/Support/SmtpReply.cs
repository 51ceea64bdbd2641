using System.Text.RegularExpressions;

namespace NativeRelay.Tests.Support;

/// <summary>One SMTP reply: the code and the text of every line (without "250-" / "250 ").</summary>
public sealed partial record SmtpReply(int Code, IReadOnlyList<string> Lines)
{
    public string FirstLine => Lines.Count > 0 ? Lines[0] : "";

    /// <summary>The enhanced status code (RFC 3463) at the start of the first line, or null.</summary>
    public string? EnhancedCode
    {
        get
        {
            var m = EnhancedRegex().Match(FirstLine);
            return m.Success ? m.Value : null;
        }
    }

    /// <summary>The last word of the last line, e.g. the queue id of "250 2.0.0 Ok: queued as ABC".</summary>
    public string LastWord
    {
        get
        {
            string last = Lines.Count > 0 ? Lines[^1].TrimEnd() : "";
            int space = last.LastIndexOf(' ');
            return space < 0 ? last : last[(space + 1)..];
        }
    }

    public override string ToString() =>
        string.Join(" | ", Lines.Select((l, i) => $"{Code}{(i == Lines.Count - 1 ? ' ' : '-')}{l}"));

    [GeneratedRegex(@"^[245]\.\d{1,3}\.\d{1,3}(?=\s|$)")]
    private static partial Regex EnhancedRegex();
}

/// <summary>Thrown when the server closed the connection where a reply was expected.</summary>
public sealed class SmtpConnectionClosedException(string message) : IOException(message);
