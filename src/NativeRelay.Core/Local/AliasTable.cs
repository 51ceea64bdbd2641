using NativeRelay.Config;

namespace NativeRelay.Local;

/// <summary>
/// An aliases file, as /etc/aliases but for addresses only:
/// <code>
/// # comment
/// postmaster: root
/// root: alice, bob@example.org
/// team: alice,
///       carol          (a line starting with white space continues the one before)
/// sales@example.com: dave
/// </code>
/// A name without '@' applies to every local domain that uses the file; a target without '@' is
/// in the same domain as the address being expanded. Pipes, files and :include: are refused.
/// </summary>
public sealed class AliasTable
{
    public static AliasTable Empty { get; } = new(new Dictionary<string, string[]>(), "(none)");

    private readonly Dictionary<string, string[]> _entries;

    private AliasTable(Dictionary<string, string[]> entries, string source)
    {
        _entries = entries;
        Source = source;
    }

    public string Source { get; }

    public int Count => _entries.Count;

    /// <summary>Targets of a lower-case name ("user" or "user@domain").</summary>
    public bool TryGet(string name, out string[] targets) => _entries.TryGetValue(name, out targets!);

    public static AliasTable Load(string path)
    {
        string text;
        try
        {
            text = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"cannot read aliases file {path}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
        return Parse(text, path);
    }

    public static AliasTable Parse(string text, string source)
    {
        var entries = new Dictionary<string, string[]>(StringComparer.Ordinal);
        string? name = null;
        int nameLine = 0;
        var targets = new List<string>();
        var lines = text.Split('\n');
        for (int n = 0; n < lines.Length; n++)
        {
            var line = lines[n].TrimEnd('\r');
            var trimmed = line.Trim();
            if (trimmed.Length == 0 || trimmed[0] == '#')
                continue;
            if (char.IsWhiteSpace(line[0]))
            {
                if (name is null)
                    throw Error(source, n, "a continuation line without an alias before it");
                AddTargets(trimmed, targets, source, n);
                continue;
            }
            Finish();
            int colon = line.IndexOf(':');
            if (colon <= 0)
                throw Error(source, n, "expected 'name: target, target'");
            name = line[..colon].Trim().ToLowerInvariant();
            nameLine = n;
            if (name.Length == 0 || name.Any(char.IsWhiteSpace) || name.StartsWith('@') || name.EndsWith('@'))
                throw Error(source, n, $"'{line[..colon]}' is not an alias name");
            if (entries.ContainsKey(name))
                throw Error(source, n, $"alias '{name}' is defined twice");
            AddTargets(line[(colon + 1)..], targets, source, n);
        }
        Finish();
        return new AliasTable(entries, source);

        void Finish()
        {
            if (name is null)
                return;
            if (targets.Count == 0)
                throw Error(source, nameLine, $"alias '{name}' has no target");
            entries[name] = targets.Distinct(StringComparer.Ordinal).ToArray();
            targets.Clear();
            name = null;
        }
    }

    private static void AddTargets(string text, List<string> targets, string source, int line)
    {
        foreach (var part in text.Split(','))
        {
            var t = part.Trim();
            if (t.Length == 0)
                continue;
            if (t.StartsWith('<') && t.EndsWith('>'))
                t = t[1..^1].Trim();
            // "<>" (or "< >") is no address: without this, t[0] below threw IndexOutOfRangeException.
            if (t.Length == 0)
                throw Error(source, line, $"target '{part.Trim()}' is not an address");
            if (t[0] is '|' or '/' || t.StartsWith(":include:", StringComparison.OrdinalIgnoreCase))
                throw Error(source, line, $"target '{t}': only addresses are supported (no pipes, files or :include:)");
            if (t.Any(c => char.IsWhiteSpace(c) || char.IsControl(c) || c is '"' or '<' or '>' or '(' or ')' or ';' or ':')
                || t.StartsWith('@') || t.EndsWith('@'))
                throw Error(source, line, $"target '{t}' is not an address");
            targets.Add(t.ToLowerInvariant());
        }
    }

    private static ConfigException Error(string source, int line, string message) =>
        new($"aliases file {source} line {line + 1}: {message}");
}
