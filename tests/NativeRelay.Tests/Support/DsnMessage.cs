using System.Text;
using System.Text.RegularExpressions;

namespace NativeRelay.Tests.Support;

/// <summary>One MIME part: its header fields (unfolded, names lower-case) and its body.</summary>
public sealed record MimePart(IReadOnlyDictionary<string, string> Headers, string Body)
{
    public string? ContentType => Headers.TryGetValue("content-type", out var v) ? v : null;
}

/// <summary>
/// A delivery status notification taken apart the way a mail client would: the top-level
/// header, the multipart/report parts split on the boundary of the Content-Type, and the
/// message/delivery-status part split into its per-message and per-recipient field groups
/// (RFC 3464 2.1). Throws with the whole message when the structure is not there.
/// </summary>
public sealed partial class DsnMessage
{
    private DsnMessage(string text, IReadOnlyDictionary<string, string> headers, IReadOnlyList<MimePart> parts,
        IReadOnlyDictionary<string, string> perMessage, IReadOnlyList<IReadOnlyDictionary<string, string>> perRecipient)
    {
        Text = text;
        Headers = headers;
        Parts = parts;
        PerMessage = perMessage;
        PerRecipient = perRecipient;
    }

    public string Text { get; }
    public IReadOnlyDictionary<string, string> Headers { get; }
    public IReadOnlyList<MimePart> Parts { get; }
    public IReadOnlyDictionary<string, string> PerMessage { get; }
    public IReadOnlyList<IReadOnlyDictionary<string, string>> PerRecipient { get; }

    public string Header(string name) => Headers.TryGetValue(name.ToLowerInvariant(), out var v) ? v : "";

    /// <summary>The per-recipient group whose Final-Recipient is this address.</summary>
    public IReadOnlyDictionary<string, string> Recipient(string address)
    {
        var group = PerRecipient.FirstOrDefault(g => g.TryGetValue("final-recipient", out var f)
                                                     && f.EndsWith(address, StringComparison.OrdinalIgnoreCase));
        return group ?? throw new Xunit.Sdk.XunitException($"The DSN has no Final-Recipient {address}.\n{Text}");
    }

    public static DsnMessage Parse(byte[] data)
    {
        string text = Encoding.UTF8.GetString(data);
        try
        {
            var (headers, body) = SplitHeader(text);
            var contentType = headers.TryGetValue("content-type", out var ct) ? ct : "";
            var boundary = BoundaryRegex().Match(contentType);
            if (!contentType.StartsWith("multipart/report", StringComparison.OrdinalIgnoreCase) || !boundary.Success)
                throw new InvalidDataException($"not a multipart/report with a boundary: {contentType}");
            string delimiter = "--" + boundary.Groups[1].Value;
            var chunks = body.Split(delimiter);
            // chunks[0] is the preamble; the last one starts with "--" (the close delimiter).
            var parts = new List<MimePart>();
            for (int i = 1; i < chunks.Length; i++)
            {
                var chunk = chunks[i];
                if (chunk.StartsWith("--", StringComparison.Ordinal))
                    break;
                if (!chunk.StartsWith("\r\n", StringComparison.Ordinal))
                    throw new InvalidDataException("a boundary line is not followed by CRLF");
                var (partHeaders, partBody) = SplitHeader(chunk[2..]);
                parts.Add(new MimePart(partHeaders, partBody));
            }
            var status = parts.FirstOrDefault(p => p.ContentType?.StartsWith("message/delivery-status", StringComparison.OrdinalIgnoreCase) == true
                                                   || p.ContentType?.StartsWith("message/global-delivery-status", StringComparison.OrdinalIgnoreCase) == true)
                         ?? throw new InvalidDataException("no message/delivery-status part");
            var groups = status.Body.Replace("\r\n", "\n").Split("\n\n", StringSplitOptions.RemoveEmptyEntries)
                .Select(g => Fields(g.Trim('\n').Replace("\n", "\r\n") + "\r\n"))
                .Where(g => g.Count > 0)
                .ToList();
            if (groups.Count < 2)
                throw new InvalidDataException("the delivery-status part needs a per-message group and at least one per-recipient group");
            return new DsnMessage(text, headers, parts, groups[0], groups.Skip(1).ToList());
        }
        catch (InvalidDataException e)
        {
            throw new Xunit.Sdk.XunitException($"Not a DSN: {e.Message}\n--- message ---\n{text}");
        }
    }

    private static (Dictionary<string, string> Headers, string Body) SplitHeader(string text)
    {
        int end = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        if (end < 0)
            return (Fields(text), "");
        return (Fields(text[..(end + 2)]), text[(end + 4)..]);
    }

    private static Dictionary<string, string> Fields(string head)
    {
        var fields = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
        string? name = null;
        var value = new StringBuilder();
        foreach (var line in head.Split("\r\n"))
        {
            if (line.Length > 0 && (line[0] == ' ' || line[0] == '\t'))
            {
                value.Append(' ').Append(line.Trim());
                continue;
            }
            if (name is not null)
                fields.TryAdd(name, value.ToString().Trim());
            name = null;
            value.Clear();
            int colon = line.IndexOf(':');
            if (colon > 0)
            {
                name = line[..colon].Trim().ToLowerInvariant();
                value.Append(line[(colon + 1)..].Trim());
            }
        }
        if (name is not null)
            fields.TryAdd(name, value.ToString().Trim());
        return fields;
    }

    [GeneratedRegex("boundary=\"?([^\";]+)\"?", RegexOptions.IgnoreCase)]
    private static partial Regex BoundaryRegex();
}
