using System.Net;
using System.Text;
using NativeRelay.Config;

namespace NativeRelay.Local;

/// <summary>How a local domain's mail is handed over.</summary>
public enum LocalTransport : byte
{
    Maildir,
    Lmtp,
}

/// <summary>A mail server to talk to (an LMTP server, the relay itself): TCP HOST:PORT, or a Unix domain socket path.</summary>
public sealed record MailEndpoint(string? Host, int Port, string? UnixPath)
{
    public bool IsUnix => UnixPath is not null;

    public override string ToString() => UnixPath is not null ? "unix:" + UnixPath
        : Host!.Contains(':') ? $"[{Host}]:{Port}" : $"{Host}:{Port}";

    public static MailEndpoint Parse(string text, string what)
    {
        text = text.Trim();
        if (text.StartsWith("unix:", StringComparison.Ordinal))
        {
            var path = text["unix:".Length..];
            if (path.Length == 0 || path[0] != '/')
                throw new ConfigException($"{what}: '{text}' needs an absolute socket path (unix:/run/dovecot/lmtp)");
            return new MailEndpoint(null, 0, path);
        }
        if (text.StartsWith('/'))
            return new MailEndpoint(null, 0, text);
        try
        {
            var hop = NextHop.Parse(text, what);
            return new MailEndpoint(hop.Host, hop.Port, null);
        }
        catch (ConfigException)
        {
            throw new ConfigException($"{what}: '{text}' is not HOST:PORT or unix:/path (e.g. 127.0.0.1:24 or unix:/run/dovecot/lmtp)");
        }
    }
}

/// <summary>One validated local domain.</summary>
public sealed class LocalDomain
{
    /// <summary>Lower-case.</summary>
    public required string Name { get; init; }
    public required LocalTransport Transport { get; init; }
    /// <summary>Absolute; set for <see cref="LocalTransport.Maildir"/>.</summary>
    public string? MaildirRoot { get; init; }
    /// <summary>Set for <see cref="LocalTransport.Lmtp"/>.</summary>
    public MailEndpoint? Lmtp { get; init; }
    /// <summary>Absolute path of the aliases file, or null.</summary>
    public string? AliasesFile { get; init; }
    /// <summary>The catch-all as a full lower-case address, or null.</summary>
    public string? CatchAll { get; init; }
    /// <summary>Lower-case mailbox names; empty means "see <see cref="LocalDomainOptions.Users"/>".</summary>
    public required IReadOnlySet<string> Users { get; init; }
    /// <summary>0 when off.</summary>
    public char RecipientDelimiter { get; init; }

    internal byte[] NameBytes { get; init; } = [];

    public string Describe()
    {
        var sb = new StringBuilder();
        sb.Append(Transport == LocalTransport.Maildir ? $"maildir {MaildirRoot}/<user>/" : $"lmtp {Lmtp}");
        if (AliasesFile is not null)
            sb.Append($", aliases {AliasesFile}");
        if (CatchAll is not null)
            sb.Append($", catch-all {CatchAll}");
        if (Users.Count > 0)
            sb.Append($", {Users.Count} user{(Users.Count == 1 ? "" : "s")}");
        else if (Transport == LocalTransport.Maildir)
            sb.Append(CatchAll is null ? ", any user (Maildir made on first use)" : ", users whose Maildir exists");
        if (RecipientDelimiter != 0)
            sb.Append($", user{RecipientDelimiter}tag");
        return sb.ToString();
    }
}

/// <summary>
/// The validated <c>localDomains</c>: which domains are delivered on this host and how. Files are
/// not opened here; <see cref="LocalDeliveryAgent.Create"/> loads the aliases files.
/// </summary>
public sealed class LocalDeliverySettings
{
    public static LocalDeliverySettings Empty { get; } = new([]);

    private LocalDeliverySettings(IReadOnlyList<LocalDomain> domains) => Domains = domains;

    public IReadOnlyList<LocalDomain> Domains { get; }

    public bool IsEmpty => Domains.Count == 0;

    /// <summary>Whether mail for this domain (bytes as in the envelope) is delivered here.</summary>
    public bool IsLocal(ReadOnlySpan<byte> domain) => Find(domain) is not null;

    public LocalDomain? Find(ReadOnlySpan<byte> domain)
    {
        foreach (var d in Domains)
            if (System.Text.Ascii.EqualsIgnoreCase(domain, d.NameBytes))
                return d;
        return null;
    }

    public LocalDomain? Find(string domain)
    {
        foreach (var d in Domains)
            if (string.Equals(domain, d.Name, StringComparison.OrdinalIgnoreCase))
                return d;
        return null;
    }

    /// <summary>
    /// The quick-start flags of <c>serve</c>: each <c>--local-domain</c> becomes a local domain
    /// delivering to <c>--maildir-root</c>/&lt;user&gt;/ (a domain already in the file keeps its
    /// entry, with the root replaced when the flag is given). A root without a domain is an error.
    /// </summary>
    public static void ApplyFlags(RelayOptions options, IReadOnlyList<string>? domains, string? maildirRoot)
    {
        if (domains is null || domains.Count == 0)
        {
            if (maildirRoot is not null)
                throw new ConfigException("--maildir-root needs at least one --local-domain");
            return;
        }
        foreach (var domain in domains)
        {
            var entry = options.LocalDomains.Find(d => string.Equals(d.Domain?.Trim(), domain.Trim(), StringComparison.OrdinalIgnoreCase));
            if (entry is null)
            {
                if (maildirRoot is null)
                    throw new ConfigException($"--local-domain {domain}: give --maildir-root DIR (or configure the domain in the file)");
                options.LocalDomains.Add(new LocalDomainOptions { Domain = domain, MaildirRoot = maildirRoot });
            }
            else if (maildirRoot is not null)
            {
                entry.MaildirRoot = maildirRoot;
                entry.Lmtp = null;
            }
        }
    }

    public static LocalDeliverySettings Validate(IReadOnlyList<LocalDomainOptions>? list)
    {
        if (list is null || list.Count == 0)
            return Empty;
        var domains = new List<LocalDomain>();
        for (int i = 0; i < list.Count; i++)
        {
            var o = list[i];
            string what = $"localDomains[{i}]";
            var name = (o.Domain ?? "").Trim().TrimEnd('.').ToLowerInvariant();
            if (!RelaySettings.IsValidHostname(name) || IPAddress.TryParse(name, out _))
                throw new ConfigException($"{what}.domain: '{o.Domain}' is not a domain name");
            foreach (var d in domains)
                if (d.Name == name)
                    throw new ConfigException($"{what}.domain: {name} is listed twice");
            what = $"localDomains[{i}] ({name})";

            bool maildir = !string.IsNullOrWhiteSpace(o.MaildirRoot);
            bool lmtp = !string.IsNullOrWhiteSpace(o.Lmtp);
            if (maildir == lmtp)
                throw new ConfigException($"{what}: give exactly one of maildirRoot and lmtp");

            var users = new HashSet<string>(StringComparer.Ordinal);
            foreach (var u in o.Users)
            {
                var user = u.Trim().ToLowerInvariant();
                if (!LocalAddress.IsSafeMailboxName(user))
                    throw new ConfigException($"{what}.users: '{u}' is not a usable mailbox name (letters, digits and . _ - + = only, not starting with a dot)");
                users.Add(user);
            }

            char delimiter = (o.RecipientDelimiter ?? "").Length switch
            {
                0 => '\0',
                1 when "+-_=".Contains(o.RecipientDelimiter![0]) => o.RecipientDelimiter[0],
                _ => throw new ConfigException($"{what}.recipientDelimiter: one of + - _ = or empty (got '{o.RecipientDelimiter}')"),
            };

            string? catchAll = null;
            if (!string.IsNullOrWhiteSpace(o.CatchAll))
            {
                var c = o.CatchAll.Trim().ToLowerInvariant();
                if (!c.Contains('@'))
                    c = c + "@" + name;
                if (!LocalAddress.TrySplit(c, out var local, out var domain) || local.Length == 0 || !RelaySettings.IsValidHostname(domain))
                    throw new ConfigException($"{what}.catchAll: '{o.CatchAll}' is not a user or an address");
                if (lmtp && users.Count == 0)
                    throw new ConfigException($"{what}.catchAll: an lmtp domain needs its users listed to know who does not exist");
                catchAll = c;
            }

            domains.Add(new LocalDomain
            {
                Name = name,
                NameBytes = Encoding.ASCII.GetBytes(name),
                Transport = maildir ? LocalTransport.Maildir : LocalTransport.Lmtp,
                MaildirRoot = maildir ? Path.GetFullPath(o.MaildirRoot!.Trim()) : null,
                Lmtp = lmtp ? MailEndpoint.Parse(o.Lmtp!, $"{what}.lmtp") : null,
                AliasesFile = string.IsNullOrWhiteSpace(o.Aliases) ? null : Path.GetFullPath(o.Aliases.Trim()),
                CatchAll = catchAll,
                Users = users,
                RecipientDelimiter = delimiter,
            });
        }
        return new LocalDeliverySettings(domains);
    }
}
