using System.Net;
using System.Text;
using NativeRelay.Config;
using NativeRelay.Smtp;
using NativeRelay.Telemetry;

namespace NativeRelay.Policy;

/// <summary>What the relay policy says about one RCPT.</summary>
public enum RecipientVerdict : byte
{
    Accept,

    /// <summary>Not for an accepted domain, and the client may not relay: 554 5.7.1.</summary>
    RelayDenied,

    /// <summary>For an accepted domain, but not in the list of local recipients: 550 5.1.1.</summary>
    UnknownUser,
}

/// <summary>What a local delivery stage knows about a recipient (see <see cref="RecipientPolicy.LocalLookup"/>).</summary>
public enum LocalRecipientLookup : byte
{
    /// <summary>Not a domain delivered on this host: the ordinary policy decides.</summary>
    NotLocal,

    /// <summary>A local domain, and the recipient exists (mailbox, alias, catch-all): accepted from anyone.</summary>
    Exists,

    /// <summary>A local domain without such a recipient: 550 5.1.1.</summary>
    Unknown,

    /// <summary>
    /// A local domain whose users this host cannot know (LMTP without a user list, a Maildir root
    /// taking any user): accepted, unless the local recipient list names the domain
    /// (<c>user@domain</c> or <c>@domain</c> entries); then only listed recipients are.
    /// </summary>
    Unverified,
}

/// <summary>
/// Asks the local delivery stage about one recipient. It runs per RCPT, so it must be cheap and
/// never wait on the network; a lookup in memory and, for some Maildir domains, one stat of a
/// directory is what it may cost.
/// </summary>
public delegate LocalRecipientLookup LocalRecipientLookupHandler(ReadOnlySpan<byte> address, ReadOnlySpan<byte> localPart, ReadOnlySpan<byte> domain);

/// <summary>
/// The relay policy, applied at RCPT: mail for an accepted domain is taken from anyone (and,
/// when a recipient list exists, only for known recipients); mail for any other domain only from
/// clients in the relay networks or authenticated users. Out of the box there are no accepted
/// domains and the relay networks are loopback, so the relay is never open by default.
/// </summary>
/// <remarks>
/// Lookups are allocation-free: the address is decoded into a stack buffer of chars and looked
/// up through the sets' span-keyed alternate lookups (case-insensitive, as Postfix does).
/// The recipient list can be replaced at run time (<see cref="ReloadRecipientsFile"/>); the
/// swap is one reference write, so sessions never see a half-loaded list.
/// </remarks>
public sealed class RecipientPolicy
{
    private readonly IReadOnlyList<IPNetwork> _relayNetworks;
    private readonly HashSet<string> _exactDomains = new(StringComparer.OrdinalIgnoreCase);
    private readonly HashSet<string> _parentDomains = new(StringComparer.OrdinalIgnoreCase); // ".example.com"
    private readonly IReadOnlyList<string> _inlineRecipients;
    private readonly string? _recipientsFile;
    private FileStamp _recipientsStamp;
    private volatile RecipientList _recipients;

    public RecipientPolicy(IReadOnlyList<IPNetwork> relayNetworks, IReadOnlyList<string> acceptedDomains,
        IReadOnlyList<string> localRecipients, string? localRecipientsFile)
    {
        _relayNetworks = relayNetworks;
        foreach (var d in acceptedDomains)
        {
            if (d.StartsWith('.'))
                _parentDomains.Add(d);
            else
                _exactDomains.Add(d);
        }
        _inlineRecipients = localRecipients;
        _recipientsFile = localRecipientsFile;
        _recipients = BuildRecipients(localRecipientsFile is null ? [] : ReadRecipientsFile(localRecipientsFile, out _recipientsStamp));
    }

    public static RecipientPolicy FromSettings(RelaySettings settings) =>
        new(settings.RelayNetworks, settings.AcceptedDomains, settings.LocalRecipients, settings.LocalRecipientsFile);

    /// <summary>
    /// Set by the host when local delivery is configured: domains delivered on this host are
    /// accepted from anyone, and their unknown users refused, without listing them again in
    /// acceptedDomains. Null: no local domains.
    /// </summary>
    public LocalRecipientLookupHandler? LocalLookup { get; set; }

    /// <summary>Number of entries in the local recipient list (0: recipients are not checked).</summary>
    public int RecipientCount => _recipients.Entries.Count;

    /// <summary>True when the client's address is in one of the relay networks.</summary>
    public bool IsRelayClient(IPAddress client)
    {
        if (client.IsIPv4MappedToIPv6)
            client = client.MapToIPv4();
        foreach (var network in _relayNetworks)
            if (network.Contains(client))
                return true;
        return false;
    }

    /// <summary>Decides one recipient.</summary>
    /// <param name="address">As parsed from RCPT (no brackets), possibly UTF-8.</param>
    /// <param name="mayRelay">The client is in the relay networks or has authenticated.</param>
    public RecipientVerdict Check(ReadOnlySpan<byte> address, bool mayRelay)
    {
        // RFC 5321 4.5.1: "postmaster" without a domain is always accepted.
        if (!MailboxPath.TrySplit(address, out var local, out var domain))
            return MailboxPath.IsPostmaster(address) ? RecipientVerdict.Accept : RecipientVerdict.RelayDenied;

        if (LocalLookup is { } lookup)
        {
            switch (lookup(address, local, domain))
            {
                case LocalRecipientLookup.Exists:
                    return RecipientVerdict.Accept;
                case LocalRecipientLookup.Unknown:
                    return MailboxPath.IsPostmaster(local) ? RecipientVerdict.Accept : RecipientVerdict.UnknownUser;
                case LocalRecipientLookup.Unverified:
                    var list = _recipients;
                    if (list.Entries.Count == 0 || MailboxPath.IsPostmaster(local) || !NamesDomain(list.Domains, domain))
                        return RecipientVerdict.Accept;
                    return IsListed(list.Entries, address, domain) ? RecipientVerdict.Accept : RecipientVerdict.UnknownUser;
            }
        }

        if (!IsAcceptedDomain(domain))
            return mayRelay ? RecipientVerdict.Accept : RecipientVerdict.RelayDenied;

        var recipients = _recipients.Entries;
        if (recipients.Count == 0 || MailboxPath.IsPostmaster(local))
            return RecipientVerdict.Accept;
        return IsListed(recipients, address, domain) ? RecipientVerdict.Accept : RecipientVerdict.UnknownUser;
    }

    /// <summary>True for a domain of <c>acceptedDomains</c>, or a subdomain of a ".domain" entry.</summary>
    public bool IsAcceptedDomain(ReadOnlySpan<byte> domain)
    {
        if (_exactDomains.Count == 0 && _parentDomains.Count == 0)
            return false;
        Span<char> chars = stackalloc char[MailboxPath.MaxDomainLength + 1];
        if (!TryDecode(domain, chars, out int length))
            return false;
        ReadOnlySpan<char> name = chars[..length];
        if (_exactDomains.Count > 0 && _exactDomains.GetAlternateLookup<ReadOnlySpan<char>>().Contains(name))
            return true;
        if (_parentDomains.Count == 0)
            return false;
        var parents = _parentDomains.GetAlternateLookup<ReadOnlySpan<char>>();
        // "a.b.example.com" tries ".b.example.com", ".example.com", ".com".
        for (int dot = name.IndexOf('.'); dot >= 0; dot = NextDot(name, dot))
            if (parents.Contains(name[dot..]))
                return true;
        return false;
    }

    private static int NextDot(ReadOnlySpan<char> name, int dot)
    {
        int next = name[(dot + 1)..].IndexOf('.');
        return next < 0 ? -1 : dot + 1 + next;
    }

    private static bool IsListed(HashSet<string> recipients, ReadOnlySpan<byte> address, ReadOnlySpan<byte> domain)
    {
        Span<char> chars = stackalloc char[MailboxPath.MaxPathLength + 2];
        var lookup = recipients.GetAlternateLookup<ReadOnlySpan<char>>();
        if (TryDecode(address, chars, out int length) && lookup.Contains(chars[..length]))
            return true;
        chars[0] = '@';
        return TryDecode(domain, chars[1..], out length) && lookup.Contains(chars[..(length + 1)]);
    }

    private static bool NamesDomain(HashSet<string> domains, ReadOnlySpan<byte> domain)
    {
        if (domains.Count == 0)
            return false;
        Span<char> chars = stackalloc char[MailboxPath.MaxDomainLength + 1];
        return TryDecode(domain, chars, out int length) && domains.GetAlternateLookup<ReadOnlySpan<char>>().Contains(chars[..length]);
    }

    private static bool TryDecode(ReadOnlySpan<byte> utf8, Span<char> destination, out int length)
    {
        length = 0;
        return utf8.Length <= destination.Length && Encoding.UTF8.TryGetChars(utf8, destination, out length);
    }

    /// <summary>Re-reads the local recipients file if it changed (or when forced). Returns a line for the log, or null.</summary>
    public string? ReloadRecipientsFile(bool force)
    {
        if (_recipientsFile is null)
            return null;
        var stamp = FileStamp.Of(_recipientsFile);
        if (!force && stamp == _recipientsStamp)
            return null;
        try
        {
            var entries = ReadRecipientsFile(_recipientsFile, out var read);
            _recipients = BuildRecipients(entries);
            _recipientsStamp = read;
            return $"reloaded local recipients from {_recipientsFile}: {_recipients.Entries.Count} entries";
        }
        catch (ConfigException e)
        {
            _recipientsStamp = stamp; // do not repeat the warning until the file changes again
            return $"keeping the previous local recipients: {e.Message}";
        }
    }

    /// <summary>The recipient list and the domains it names ("user@d" or "@d"), swapped as one.</summary>
    private sealed record RecipientList(HashSet<string> Entries, HashSet<string> Domains);

    private RecipientList BuildRecipients(IEnumerable<string> fromFile)
    {
        var set = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var r in _inlineRecipients)
            set.Add(r);
        foreach (var r in fromFile)
            set.Add(r);
        var domains = new HashSet<string>(StringComparer.OrdinalIgnoreCase);
        foreach (var r in set)
            domains.Add(r[(r.LastIndexOf('@') + 1)..]);
        return new RecipientList(set, domains);
    }

    private static List<string> ReadRecipientsFile(string path, out FileStamp stamp)
    {
        string[] lines;
        try
        {
            stamp = FileStamp.Of(path);
            lines = File.ReadAllLines(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"cannot read localRecipientsFile {path}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
        var entries = new List<string>();
        for (int i = 0; i < lines.Length; i++)
        {
            var line = lines[i];
            int hash = line.IndexOf('#');
            if (hash >= 0)
                line = line[..hash];
            line = line.Trim();
            if (line.Length == 0)
                continue;
            entries.Add(NormalizeRecipientEntry(line)
                ?? throw new ConfigException($"{path} line {i + 1}: '{line}' is not user@domain or @domain"));
        }
        return entries;
    }

    /// <summary>"Example.COM" → "example.com", ".Example.com" → ".example.com"; null if not a domain.</summary>
    public static string? NormalizeDomainEntry(string? entry)
    {
        if (entry is null)
            return null;
        var text = entry.Trim().ToLowerInvariant();
        var name = text.StartsWith('.') ? text[1..] : text;
        if (name.Length == 0 || name.StartsWith('['))
            return null;
        return MailboxPath.ValidateDomain(Encoding.UTF8.GetBytes(name), allowUtf8: true) == PathError.None ? text : null;
    }

    /// <summary>"Alice@Example.com" → "alice@example.com", "@example.org" stays; null if neither form.</summary>
    public static string? NormalizeRecipientEntry(string? entry)
    {
        if (entry is null)
            return null;
        var text = entry.Trim();
        int at = text.LastIndexOf('@');
        if (at < 0 || text.Any(c => char.IsWhiteSpace(c) || char.IsControl(c) || c is '<' or '>'))
            return null;
        var domain = NormalizeDomainEntry(text[(at + 1)..]);
        if (domain is null || domain.StartsWith('.'))
            return null;
        return text[..at].ToLowerInvariant() + "@" + domain;
    }
}

/// <summary>Size and modification time of a file, to notice a change without reading it.</summary>
public readonly record struct FileStamp(long Length, DateTime WriteTimeUtc)
{
    public static FileStamp Of(string path)
    {
        try
        {
            // Follows a symbolic link to its target, so a renewed certificate behind a link is seen.
            var info = new FileInfo(path);
            var target = info.LinkTarget is null ? info : (info.ResolveLinkTarget(returnFinalTarget: true) as FileInfo ?? info);
            target.Refresh();
            return target.Exists ? new FileStamp(target.Length, target.LastWriteTimeUtc) : default;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return default;
        }
    }
}
