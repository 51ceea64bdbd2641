using System.Security.Cryptography;
using System.Text;
using NativeRelay.Config;

namespace NativeRelay.Api;

/// <summary>
/// The tokens file: one line per token, <c>NAME:$sha256$HEX [pools=a,b] [senderDomains=x.com,.y.com] [rate=N]</c>,
/// '#' comments. Only the SHA-256 of a token is stored: a token is 32 random bytes, so unlike a
/// password it needs no slow hash, and a lookup is one hash and one dictionary probe per request.
/// Immutable: a reload builds a new store and swaps it in.
/// </summary>
public sealed class TokenStore
{
    /// <summary>What every token starts with, so a leaked one is easy to recognize (and to search for).</summary>
    public const string Prefix = "nrt_";
    private const string HashScheme = "$sha256$";

    private readonly Dictionary<string, ApiToken> _byHash;

    private TokenStore(string path, Dictionary<string, ApiToken> byHash)
    {
        Path = path;
        _byHash = byHash;
    }

    public string Path { get; }
    public int Count => _byHash.Count;

    public static TokenStore Empty(string path) => new(path, new Dictionary<string, ApiToken>(StringComparer.Ordinal));

    /// <exception cref="ConfigException">The file cannot be read or a line is malformed (the line number, never a hash, is named).</exception>
    public static TokenStore Load(string path)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"tokens file {path}: {e.Message}");
        }
        var byHash = new Dictionary<string, ApiToken>(StringComparer.Ordinal);
        var names = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        for (int i = 0; i < lines.Length; i++)
        {
            var line = lines[i].Trim();
            if (line.Length == 0 || line.StartsWith('#'))
                continue;
            if (!TryParseLine(line, out var hash, out var token, out var error))
                throw new ConfigException($"tokens file {path}, line {i + 1}: {error}");
            if (!names.Add(token.Name))
                throw new ConfigException($"tokens file {path}, line {i + 1}: token name '{token.Name}' appears twice");
            byHash[hash] = token;
        }
        return new TokenStore(path, byHash);
    }

    /// <summary>The token a bearer credential names, or null. The credential is hashed, never kept.</summary>
    public ApiToken? Find(ReadOnlySpan<char> bearer)
    {
        if (!bearer.StartsWith(Prefix, StringComparison.Ordinal) || bearer.Length > 128)
            return null;
        return _byHash.GetValueOrDefault(Hash(bearer));
    }

    /// <summary>A new random token (shown once) and its line for the file.</summary>
    public static (string Token, string Line) Create(string name, IReadOnlyList<string> pools, IReadOnlyList<string> senderDomains, int? rate)
    {
        if (!IsValidName(name))
            throw new ConfigException($"token name '{name}' may only contain letters, digits, '.', '_' and '-'");
        var token = Prefix + Base64Url(RandomNumberGenerator.GetBytes(32));
        var line = new StringBuilder().Append(name).Append(':').Append(HashScheme).Append(Hash(token));
        if (pools.Count > 0)
            line.Append(" pools=").Append(string.Join(',', pools));
        if (senderDomains.Count > 0)
            line.Append(" senderDomains=").Append(string.Join(',', senderDomains));
        if (rate is { } r)
            line.Append(" rate=").Append(r);
        var text = line.ToString();
        if (!TryParseLine(text, out _, out _, out var error))
            throw new ConfigException(error);
        return (token, text);
    }

    public static bool IsValidName(string name) =>
        name.Length is > 0 and <= 64 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-');

    /// <summary>The name of the token on a line of the file, or null (comments, malformed lines).</summary>
    public static string? NameOf(string line)
    {
        var t = line.TrimStart();
        int colon = t.IndexOf(':');
        return t.StartsWith('#') || colon <= 0 ? null : t[..colon];
    }

    private static bool TryParseLine(string line, out string hash, out ApiToken token, out string error)
    {
        hash = "";
        token = null!;
        var fields = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
        int colon = fields[0].IndexOf(':');
        if (colon <= 0 || !IsValidName(fields[0][..colon]))
        {
            error = "expected NAME:$sha256$HEX (a line made by 'nativerelay token add')";
            return false;
        }
        var name = fields[0][..colon];
        var stored = fields[0][(colon + 1)..];
        if (!stored.StartsWith(HashScheme, StringComparison.Ordinal) || stored.Length != HashScheme.Length + 64
            || stored.AsSpan(HashScheme.Length).ContainsAnyExcept("0123456789abcdef"))
        {
            error = $"token '{name}': the hash is not $sha256$ and 64 lower-case hex digits";
            return false;
        }
        hash = stored[HashScheme.Length..];
        string[] pools = [], domains = [];
        int? rate = null;
        foreach (var field in fields.Skip(1))
        {
            int eq = field.IndexOf('=');
            var key = eq > 0 ? field[..eq] : field;
            var value = eq > 0 ? field[(eq + 1)..] : "";
            var list = value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            switch (key)
            {
                case "pools":
                    pools = list;
                    break;
                case "senderDomains":
                    domains = list.Select(d => d.ToLowerInvariant()).ToArray();
                    if (domains.Any(d => !RelaySettings.IsValidHostname(d.TrimStart('.'))))
                    {
                        error = $"token '{name}': senderDomains has a name that is not a domain";
                        return false;
                    }
                    break;
                case "rate":
                    if (!int.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int r))
                    {
                        error = $"token '{name}': rate={value} is not a number of requests per second (0: unlimited)";
                        return false;
                    }
                    rate = r;
                    break;
                default:
                    error = $"token '{name}': unknown attribute '{key}' (pools=, senderDomains=, rate=)";
                    return false;
            }
        }
        token = new ApiToken(name, pools, domains, rate);
        error = "";
        return true;
    }

    private static string Hash(ReadOnlySpan<char> token)
    {
        Span<byte> utf8 = stackalloc byte[256];
        int n = Encoding.UTF8.GetBytes(token, utf8);
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(utf8[..n], digest);
        return Convert.ToHexStringLower(digest);
    }

    internal static string Base64Url(ReadOnlySpan<byte> bytes) => Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_');
}
