using System.Globalization;
using System.Reflection;
using System.Text;

namespace NativeRelay.MailAuth;

/// <summary>
/// The Public Suffix List (https://publicsuffix.org/list/): which names are registries ("com",
/// "co.uk", "*.kobe.jp") so that DMARC can find a domain's organizational domain (RFC 7489 3.2):
/// the public suffix plus one label. The list ships inside the assembly (MailAuth/Data, an
/// embedded resource, read once on first use) and a newer copy can be loaded from a file without a
/// rebuild (<see cref="LoadFile"/>, the <c>inboundAuth.publicSuffixListFile</c> option).
/// <para>
/// Both sections (ICANN and private) are used, as the list's own algorithm says: a private
/// suffix such as "blogspot.com" separates owners just as "co.uk" does, which is what DMARC's
/// alignment needs. Rules are kept in their A-label (punycode) form in one dictionary; a lookup
/// walks the name's suffixes right to left, costs one hash probe per label and allocates only
/// the answer.
/// </para>
/// </summary>
public sealed class PublicSuffixList
{
    private const string ResourceName = "NativeRelay.MailAuth.public_suffix_list.dat";

    [Flags]
    private enum Rule : byte
    {
        None = 0,
        /// <summary>"name": the name is a public suffix.</summary>
        Exact = 1,
        /// <summary>"*.name": every child of the name is a public suffix.</summary>
        Wildcard = 2,
        /// <summary>"!name": the name is not a public suffix, whatever a wildcard says.</summary>
        Exception = 4,
    }

    private static readonly Lazy<PublicSuffixList> Embedded = new(LoadEmbedded, LazyThreadSafetyMode.ExecutionAndPublication);

    private readonly Dictionary<string, Rule> _rules;
    private readonly Dictionary<string, Rule>.AlternateLookup<ReadOnlySpan<char>> _lookup;

    private PublicSuffixList(Dictionary<string, Rule> rules)
    {
        _rules = rules;
        _lookup = rules.GetAlternateLookup<ReadOnlySpan<char>>();
    }

    /// <summary>The list built into the binary, parsed on first use.</summary>
    public static PublicSuffixList Default => Embedded.Value;

    /// <summary>How many rules were read.</summary>
    public int RuleCount { get; private set; }

    /// <summary>Reads a list in the publicsuffix.org format (UTF-8, one rule per line, // comments).</summary>
    public static PublicSuffixList Parse(TextReader reader)
    {
        var rules = new Dictionary<string, Rule>(16384, StringComparer.Ordinal);
        var idn = new IdnMapping();
        int count = 0;
        string? line;
        while ((line = reader.ReadLine()) is not null)
        {
            // A rule is the first run of non-white-space on a line; the rest of the line is ignored.
            var text = line.AsSpan().Trim();
            if (text.Length == 0 || text.StartsWith("//"))
                continue;
            int space = text.IndexOfAny(' ', '\t');
            if (space >= 0)
                text = text[..space];
            Rule kind = Rule.Exact;
            if (text.StartsWith("!"))
            {
                kind = Rule.Exception;
                text = text[1..];
            }
            else if (text.StartsWith("*."))
            {
                kind = Rule.Wildcard;
                text = text[2..];
            }
            else if (text is "*")
            {
                continue; // the implied default rule
            }
            string? name = Normalize(text.ToString(), idn);
            if (name is null)
                throw new FormatException($"public suffix list: '{line.Trim()}' is not a rule");
            rules[name] = rules.GetValueOrDefault(name) | kind;
            count++;
        }
        if (count == 0)
            throw new FormatException("public suffix list: no rules");
        return new PublicSuffixList(rules) { RuleCount = count };
    }

    /// <summary>Reads a list from a file (a newer list than the one built in). Throws IOException or FormatException.</summary>
    public static PublicSuffixList LoadFile(string path)
    {
        using var reader = new StreamReader(path, Encoding.UTF8);
        return Parse(reader);
    }

    private static PublicSuffixList LoadEmbedded()
    {
        using var stream = typeof(PublicSuffixList).Assembly.GetManifestResourceStream(ResourceName)
                           ?? throw new InvalidOperationException($"the resource {ResourceName} is missing from the assembly");
        using var reader = new StreamReader(stream, Encoding.UTF8);
        return Parse(reader);
    }

    /// <summary>
    /// The public suffix of a domain (A-label form, lower case): "co.uk" for "www.example.co.uk",
    /// "com" for "com". Names not covered by a rule fall under the default rule "*" (their last
    /// label). Null for a name that is not a domain (empty, a leading dot, an empty label).
    /// </summary>
    public string? GetPublicSuffix(string domain)
    {
        string? name = Normalize(domain, null);
        if (name is null)
            return null;
        int labels = SuffixLabels(name, out _);
        return LastLabels(name, labels);
    }

    /// <summary>
    /// The registrable domain: the public suffix plus one label ("example.co.uk" for
    /// "www.example.co.uk"), in A-label form. Null when the name is itself a public suffix (or not
    /// a domain). This is publicsuffix.org's checkPublicSuffix.
    /// </summary>
    public string? GetRegistrableDomain(string domain) => Registrable(domain, orSelf: false);

    /// <summary>
    /// RFC 7489 3.2's organizational domain: the registrable domain, or, for a name that is itself
    /// a public suffix (which has no label to add), the name itself. Null for a name that is not a
    /// domain.
    /// </summary>
    public string? GetOrganizationalDomain(string domain) => Registrable(domain, orSelf: true);

    /// <summary>The public suffix plus one label; for a public suffix itself, the name (orSelf) or null.</summary>
    private string? Registrable(string domain, bool orSelf)
    {
        string? name = Normalize(domain, null);
        if (name is null)
            return null;
        int suffix = SuffixLabels(name, out int total);
        return total > suffix ? LastLabels(name, suffix + 1) : orSelf ? name : null;
    }

    /// <summary>How many labels on the right of <paramref name="name"/> make its public suffix.</summary>
    private int SuffixLabels(string name, out int total)
    {
        // Walk the suffixes from the last label leftwards: "uk", "co.uk", "example.co.uk", ...
        total = name.AsSpan().Count('.') + 1;
        int suffix = 1; // the default rule "*"
        int dot = name.Length;
        for (int k = 1; k <= total; k++)
        {
            dot = k == total ? -1 : name.LastIndexOf('.', dot - 1);
            if (!_lookup.TryGetValue(name.AsSpan(dot + 1), out Rule rule))
                continue;
            if ((rule & Rule.Exception) != 0)
                return k - 1; // "!city.kobe.jp": kobe.jp is the suffix, city.kobe.jp registrable
            if ((rule & Rule.Exact) != 0)
                suffix = Math.Max(suffix, k);
            if ((rule & Rule.Wildcard) != 0 && k < total)
                suffix = Math.Max(suffix, k + 1);
        }
        return suffix;
    }

    private static string LastLabels(string name, int labels)
    {
        int dot = name.Length;
        for (int i = 0; i < labels; i++)
        {
            dot = name.LastIndexOf('.', dot - 1);
            if (dot < 0)
                return name;
        }
        return name[(dot + 1)..];
    }

    /// <summary>Lower case, no trailing dot, A-labels; null if the text is not a domain name.</summary>
    internal static string? Normalize(string domain, IdnMapping? idn)
    {
        if (string.IsNullOrEmpty(domain))
            return null;
        var text = domain.AsSpan();
        if (text[^1] == '.')
            text = text[..^1];
        if (text.Length == 0 || text[0] == '.' || text.IndexOf("..") >= 0)
            return null;
        string name;
        if (Ascii.IsValid(text))
        {
            name = text.ToString().ToLowerInvariant();
        }
        else
        {
            try
            {
                name = (idn ?? new IdnMapping()).GetAscii(text.ToString().ToLowerInvariant());
            }
            catch (ArgumentException)
            {
                return null;
            }
        }
        return name;
    }
}
