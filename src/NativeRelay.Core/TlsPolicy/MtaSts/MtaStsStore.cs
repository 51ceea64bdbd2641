using System.Globalization;
using System.Text;

namespace NativeRelay.TlsPolicies.MtaSts;

/// <summary>A policy as cached: the record id it was fetched under, when, and the policy.</summary>
public sealed record CachedMtaStsPolicy(string Id, DateTimeOffset Fetched, MtaStsPolicy Policy)
{
    public DateTimeOffset Expires => Fetched.AddSeconds(Policy.MaxAge);

    public bool IsFresh(DateTimeOffset now) => now < Expires;
}

/// <summary>
/// The policies on disk, one file per policy domain in SPOOL/mta-sts/ ("DOMAIN.policy": a
/// header with the record id and the fetch time, a blank line, the policy as served), so a
/// restart keeps enforcing what was fetched for its max_age (RFC 8461 5.1) without asking the
/// policy host again. Written to a temporary name, fsynced, renamed, and the directory fsynced:
/// a crash leaves the old file or the new, never half of one. A file that does not parse is
/// ignored (and replaced by the next fetch). Not on the message path: read once per domain per
/// process, written once per fetch.
/// </summary>
public sealed class MtaStsStore
{
    private const string Magic = "nativerelay-mta-sts 1";

    public MtaStsStore(string directory) => Directory = directory;

    public string Directory { get; }

    public string PathOf(string domain) => Path.Combine(Directory, domain + ".policy");

    /// <summary>True when a policy file exists for the domain (the router asks, to keep a domain apart whose TXT record went away).</summary>
    public bool Has(string domain) => File.Exists(PathOf(domain));

    public CachedMtaStsPolicy? Load(string domain)
    {
        string text;
        try
        {
            text = File.ReadAllText(PathOf(domain), Encoding.UTF8);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
        return Parse(text);
    }

    internal static CachedMtaStsPolicy? Parse(string text)
    {
        int blank = text.IndexOf("\n\n", StringComparison.Ordinal);
        if (blank < 0)
            return null;
        var header = text[..blank].Split('\n');
        if (header.Length != 3 || header[0] != Magic || !header[1].StartsWith("id: ", StringComparison.Ordinal)
            || !header[2].StartsWith("fetched: ", StringComparison.Ordinal)
            || !long.TryParse(header[2].AsSpan(9), NumberStyles.None, CultureInfo.InvariantCulture, out long fetched))
            return null;
        var record = MtaStsRecord.TryParse($"v=STSv1; id={header[1][4..]}", out _);
        var policy = MtaStsPolicy.TryParse(text[(blank + 2)..], out _);
        return record is null || policy is null ? null
            : new CachedMtaStsPolicy(record.Id, DateTimeOffset.FromUnixTimeSeconds(fetched), policy);
    }

    internal static string Format(CachedMtaStsPolicy cached) =>
        $"{Magic}\nid: {cached.Id}\nfetched: {cached.Fetched.ToUnixTimeSeconds().ToString(CultureInfo.InvariantCulture)}\n\n{cached.Policy.Text}";

    /// <summary>Writes the domain's file atomically and durably.</summary>
    public void Save(string domain, CachedMtaStsPolicy cached)
    {
        System.IO.Directory.CreateDirectory(Directory);
        string path = PathOf(domain);
        string temporary = path + ".tmp";
        using (var file = new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            file.Write(Encoding.UTF8.GetBytes(Format(cached)));
            file.Flush(flushToDisk: true);
        }
        File.Move(temporary, path, overwrite: true);
        NativeRelay.Local.MaildirWriter.TryFsyncDirectory(Directory, out _);
    }
}
