using NativeRelay.Policy;
using NativeRelay.Smtp;

namespace NativeRelay.Local;

/// <summary>Where one address ends up: a mailbox of a local domain, or an address elsewhere (forwarded).</summary>
public readonly record struct FinalTarget(string Address, LocalDomain? Domain, string? Mailbox)
{
    public bool IsLocal => Domain is not null;
}

/// <summary>The expansion of one envelope recipient.</summary>
public sealed class Resolution
{
    /// <summary>Mailboxes and remote addresses to deliver to (no duplicates).</summary>
    public List<FinalTarget> Targets { get; } = [];

    /// <summary>Branches of the expansion that lead nowhere (unknown user, bad name), with their reply.</summary>
    public List<(string Address, SmtpReply Reply)> Failures { get; } = [];

    /// <summary>Set when the whole recipient is refused (an alias loop, too deep or too large).</summary>
    public SmtpReply? Refusal { get; set; }
}

/// <summary>
/// Expands a recipient of a local domain through the aliases (recursively, across local domains),
/// applies the recipient delimiter and the catch-all, and says which mailboxes it reaches. An alias
/// chain that comes back to an alias already on the path is a loop: the recipient is refused with
/// 554 5.4.6. An alias naming itself ("bob: bob, bob-archive") means its own mailbox, as in
/// /etc/aliases.
/// </summary>
public sealed class LocalRecipientResolver
{
    public const int MaxDepth = 20;
    public const int MaxTargets = 1000;

    private readonly LocalDeliverySettings _settings;
    private readonly IReadOnlyDictionary<LocalDomain, AliasTable> _aliases;

    public LocalRecipientResolver(LocalDeliverySettings settings, IReadOnlyDictionary<LocalDomain, AliasTable> aliases)
    {
        _settings = settings;
        _aliases = aliases;
    }

    public LocalDeliverySettings Settings => _settings;

    /// <summary>Loads every domain's aliases file (each file once). Throws a one-line ConfigException.</summary>
    public static LocalRecipientResolver Load(LocalDeliverySettings settings)
    {
        var byFile = new Dictionary<string, AliasTable>(StringComparer.Ordinal);
        var aliases = new Dictionary<LocalDomain, AliasTable>();
        foreach (var d in settings.Domains)
        {
            if (d.AliasesFile is null)
            {
                aliases[d] = AliasTable.Empty;
                continue;
            }
            if (!byFile.TryGetValue(d.AliasesFile, out var table))
                byFile[d.AliasesFile] = table = AliasTable.Load(d.AliasesFile);
            aliases[d] = table;
        }
        return new LocalRecipientResolver(settings, aliases);
    }

    public AliasTable AliasesOf(LocalDomain domain) => _aliases.TryGetValue(domain, out var t) ? t : AliasTable.Empty;

    /// <summary>Expands one lower-case address.</summary>
    public Resolution Resolve(string address)
    {
        var result = new Resolution();
        var path = new List<string>();
        Expand(address, path, result, catchAllUsed: false);
        if (result.Refusal is not null)
            result.Targets.Clear();
        return result;
    }

    /// <summary>
    /// What RCPT can know about an address before the message exists, by the rules delivery will
    /// apply: <see cref="LocalRecipientLookup.Unknown"/> exactly when delivery would find nothing to
    /// deliver to (no such user, no alias, no catch-all; or a name that cannot be a mailbox).
    /// A domain that takes any user (LMTP without <c>users</c>, whose server decides; a Maildir
    /// root without <c>users</c> or <c>catchAll</c>) answers <see cref="LocalRecipientLookup.Unverified"/>
    /// for a plausible name, so the relay's recipient list may still narrow it.
    /// </summary>
    public LocalRecipientLookup Lookup(ReadOnlySpan<byte> address, ReadOnlySpan<byte> domainName)
    {
        var domain = _settings.Find(domainName);
        if (domain is null)
            return LocalRecipientLookup.NotLocal;
        var normalized = LocalAddress.Normalize(address);
        if (!LocalAddress.TrySplit(normalized, out var local, out _) || local.Length == 0)
            return LocalRecipientLookup.Unknown;
        if (TakesAnyUser(domain))
        {
            if (FindAlias(AliasesOf(domain), local, domain) is not null)
                return LocalRecipientLookup.Exists;
            return LocalAddress.IsSafeMailboxName(BaseName(local, domain)) ? LocalRecipientLookup.Unverified : LocalRecipientLookup.Unknown;
        }
        var resolution = Resolve(normalized);
        // A refusal (an alias loop) is left to delivery, whose bounce says what is wrong.
        return resolution.Refusal is not null || resolution.Targets.Count > 0 ? LocalRecipientLookup.Exists : LocalRecipientLookup.Unknown;
    }

    /// <summary>A domain that accepts every well-formed user name (see <see cref="Exists"/>).</summary>
    private static bool TakesAnyUser(LocalDomain domain) =>
        domain.Users.Count == 0 && (domain.Transport == LocalTransport.Lmtp || domain.CatchAll is null);

    private void Expand(string address, List<string> path, Resolution result, bool catchAllUsed)
    {
        if (result.Refusal is not null)
            return;
        if (!LocalAddress.TrySplit(address, out var local, out var domainName) || local.Length == 0 || domainName.Length == 0)
        {
            result.Failures.Add((address, SmtpReply.Local(553, $"5.1.3 <{address}> is not an address")));
            return;
        }
        var domain = _settings.Find(domainName);
        if (domain is null)
        {
            AddTarget(result, new FinalTarget(address, null, null));
            return;
        }

        var canonical = local + "@" + domain.Name;
        var aliases = AliasesOf(domain);
        string? aliasKey = FindAlias(aliases, local, domain);
        if (aliasKey is not null)
        {
            if (path.Contains(canonical))
            {
                result.Refusal = SmtpReply.Local(554, $"5.4.6 alias loop: {string.Join(" -> ", path)} -> {canonical}");
                return;
            }
            if (path.Count >= MaxDepth)
            {
                result.Refusal = SmtpReply.Local(554, $"5.4.6 aliases nested deeper than {MaxDepth} at {canonical}");
                return;
            }
            aliases.TryGet(aliasKey, out var targets);
            path.Add(canonical);
            foreach (var t in targets)
            {
                var target = t.Contains('@') ? t : t + "@" + domain.Name;
                if (target == canonical)
                    DeliverToMailbox(canonical, local, domain, path, result, catchAllUsed);
                else
                    Expand(target, path, result, catchAllUsed);
                if (result.Refusal is not null)
                    return;
            }
            path.RemoveAt(path.Count - 1);
            return;
        }
        DeliverToMailbox(canonical, local, domain, path, result, catchAllUsed);
    }

    private void DeliverToMailbox(string canonical, string local, LocalDomain domain, List<string> path, Resolution result, bool catchAllUsed)
    {
        string mailbox = BaseName(local, domain);
        if (!LocalAddress.IsSafeMailboxName(mailbox))
        {
            result.Failures.Add((canonical, SmtpReply.Local(553, $"5.1.3 <{canonical}>: the user name cannot be a mailbox")));
            return;
        }
        if (Exists(domain, mailbox))
        {
            AddTarget(result, new FinalTarget(mailbox + "@" + domain.Name, domain, mailbox));
            return;
        }
        if (domain.CatchAll is not null && !catchAllUsed)
        {
            // The catch-all may itself be an alias; it is expanded once, never for itself.
            Expand(domain.CatchAll, path, result, catchAllUsed: true);
            return;
        }
        result.Failures.Add((canonical, SmtpReply.Local(550, $"5.1.1 <{canonical}>: no such user here")));
    }

    private static string? FindAlias(AliasTable aliases, string local, LocalDomain domain)
    {
        if (aliases.Count == 0)
            return null;
        string full = local + "@" + domain.Name;
        if (aliases.TryGet(full, out _))
            return full;
        if (aliases.TryGet(local, out _))
            return local;
        var b = BaseName(local, domain);
        if (b != local)
        {
            full = b + "@" + domain.Name;
            if (aliases.TryGet(full, out _))
                return full;
            if (aliases.TryGet(b, out _))
                return b;
        }
        return null;
    }

    private static string BaseName(string local, LocalDomain domain)
    {
        if (domain.RecipientDelimiter == 0)
            return local;
        int cut = local.IndexOf(domain.RecipientDelimiter);
        return cut > 0 ? local[..cut] : local;
    }

    /// <summary>Whether the mailbox exists (or may be made) for this domain.</summary>
    private static bool Exists(LocalDomain domain, string mailbox)
    {
        if (domain.Users.Contains(mailbox))
            return true;
        if (domain.Transport == LocalTransport.Lmtp)
            return domain.Users.Count == 0;
        if (Directory.Exists(Path.Combine(domain.MaildirRoot!, mailbox)))
            return true;
        return domain.Users.Count == 0 && domain.CatchAll is null;
    }

    private static void AddTarget(Resolution result, FinalTarget target)
    {
        foreach (var t in result.Targets)
            if (t.Address == target.Address)
                return;
        if (result.Targets.Count >= MaxTargets)
        {
            result.Refusal = SmtpReply.Local(554, $"5.4.6 aliases expand to more than {MaxTargets} addresses");
            return;
        }
        result.Targets.Add(target);
    }
}
