using System.Net;
using System.Net.Sockets;
using NativeRelay.Routing;

namespace NativeRelay.MailAuth.Spf;

/// <summary>
/// RFC 7208's check_host(): fetches the domain's record (one TXT "v=spf1"; none is <c>none</c>,
/// two are <c>permerror</c>), evaluates its directives in order against the client's address,
/// follows include and redirect, and expands macros. The limits of section 4.6.4 hold for the
/// whole check: at most 10 DNS-querying terms (include, a, mx, ptr, exists, redirect), at most 2
/// void lookups (NXDOMAIN or no records), at most 10 MX names per mx and 10 PTR names per ptr;
/// an include or redirect back into a domain already being evaluated is a loop (permerror).
/// DNS failures are <c>temperror</c>; nothing here throws for DNS or record problems.
/// An IPv4-mapped IPv6 client (::ffff:192.0.2.1) is checked as the IPv4 address it is.
/// </summary>
public sealed class SpfEvaluator
{
    public const int MaxDnsTerms = 10;
    public const int MaxVoidLookups = 2;
    public const int MaxMxNames = 10;
    public const int MaxPtrNames = 10;

    private readonly IDnsResolver _dns;
    private readonly string _receiverName;

    /// <param name="dns">Where records come from (a <see cref="MailAuthDns"/> to cache them).</param>
    /// <param name="receiverName">This relay's name, for the %{r} macro of explanations.</param>
    public SpfEvaluator(IDnsResolver dns, string receiverName = "unknown")
    {
        _dns = dns;
        _receiverName = receiverName;
    }

    /// <summary>
    /// The check an SMTP receiver makes at MAIL: the MAIL FROM identity, or for a null sender
    /// (<paramref name="mailFrom"/> null or empty) the HELO identity, with the sender
    /// postmaster@HELO (RFC 7208 2.3, 2.4). An address literal as HELO has no SPF: <c>none</c>.
    /// </summary>
    public Task<SpfVerdict> CheckAsync(IPAddress client, string? mailFrom, string helo, CancellationToken cancel)
    {
        helo = helo.Trim().TrimEnd('.');
        if (string.IsNullOrEmpty(mailFrom))
        {
            string sender = "postmaster@" + helo;
            if (!IsDomainName(helo))
                return Task.FromResult(new SpfVerdict(SpfResult.None, "helo", helo, sender, Problem: "the HELO name is not a domain"));
            return CheckHostAsync(client, helo, sender, helo, "helo", cancel);
        }
        int at = mailFrom.LastIndexOf('@');
        string domain = (at >= 0 ? mailFrom[(at + 1)..] : mailFrom).TrimEnd('.');
        string fullSender = at > 0 ? mailFrom : "postmaster@" + domain;
        return CheckHostAsync(client, domain, fullSender, helo, "mailfrom", cancel);
    }

    /// <summary>check_host(ip, domain, sender) of RFC 7208 section 4.</summary>
    public async Task<SpfVerdict> CheckHostAsync(IPAddress ip, string domain, string sender, string helo, string identity, CancellationToken cancel)
    {
        if (ip.IsIPv4MappedToIPv6)
            ip = ip.MapToIPv4();
        // Lower case, and an internationalized domain (SMTPUTF8) in its A-label form for DNS.
        domain = PublicSuffixList.Normalize(domain, null) ?? domain.ToLowerInvariant();
        var context = new SpfMacroContext(ip, sender, domain, helo)
        {
            ReceiverName = _receiverName,
            Timestamp = DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
        };
        var state = new State(cancel);
        try
        {
            var (result, mechanism, explanation) = await CheckHostCoreAsync(state, context, domain, inInclude: false).ConfigureAwait(false);
            return new SpfVerdict(result, identity, domain, sender, mechanism, explanation);
        }
        catch (SpfAbort abort)
        {
            return new SpfVerdict(abort.Result, identity, domain, sender, Problem: abort.Message);
        }
        catch (OperationCanceledException) when (cancel.IsCancellationRequested)
        {
            return new SpfVerdict(SpfResult.TempError, identity, domain, sender, Problem: "timed out");
        }
        catch (ArgumentException e)
        {
            // A name the resolver cannot put in a query: the record asked for something impossible.
            return new SpfVerdict(SpfResult.PermError, identity, domain, sender, Problem: e.Message);
        }
    }

    private sealed class State(CancellationToken cancel)
    {
        public readonly CancellationToken Cancel = cancel;
        public int DnsTerms;
        public int VoidLookups;
        public readonly List<string> Chain = [];
    }

    /// <summary>A permerror or temperror ends the whole evaluation (RFC 7208 4.6.4, 5.2, 6.1).</summary>
    private sealed class SpfAbort(SpfResult result, string message) : Exception(message)
    {
        public SpfResult Result { get; } = result;
    }

    private static SpfAbort Perm(string message) => new(SpfResult.PermError, message);
    private static SpfAbort Temp(string message) => new(SpfResult.TempError, message);

    private async Task<(SpfResult Result, string? Mechanism, string? Explanation)> CheckHostCoreAsync(State state, SpfMacroContext context, string domain, bool inInclude)
    {
        if (!IsDomainName(domain))
            return (SpfResult.None, null, null);
        var answer = await _dns.QueryTxtAsync(domain, state.Cancel).ConfigureAwait(false);
        if (answer.Status == DnsStatus.TempFail)
            throw Temp($"DNS failure looking up the SPF record of {domain} ({answer.Error ?? "temporary"})");
        string? text = null;
        foreach (var record in answer.Records)
        {
            if (!SpfRecord.IsSpfRecord(record))
                continue;
            if (text is not null)
                throw Perm($"{domain} has more than one SPF record");
            text = record;
        }
        if (text is null)
            return (SpfResult.None, null, null);
        if (!SpfRecord.TryParse(text, out var spf, out string? error))
            throw Perm($"the SPF record of {domain} is invalid: {error}");

        state.Chain.Add(domain);
        try
        {
            foreach (var mechanism in spf.Mechanisms)
            {
                if (mechanism.QueriesDns)
                    CountTerm(state);
                if (await MatchesAsync(state, context, mechanism).ConfigureAwait(false))
                {
                    string? explanation = mechanism.Qualifier == SpfResult.Fail && !inInclude && spf.Explanation is not null
                        ? await ExplainAsync(state, context, spf.Explanation).ConfigureAwait(false)
                        : null;
                    return (mechanism.Qualifier, mechanism.Text, explanation);
                }
            }
            if (spf.Redirect is not null)
            {
                // An "all" anywhere would have matched already, so here redirect applies (RFC 7208 6.1).
                CountTerm(state);
                string target = await ExpandDomainAsync(state, context, spf.Redirect).ConfigureAwait(false)
                                ?? throw Perm($"redirect={spf.Redirect} does not expand to a domain name");
                if (state.Chain.Contains(target))
                    throw Perm($"redirect loop at {target}");
                var redirected = await CheckHostCoreAsync(state, context.WithDomain(target), target, inInclude).ConfigureAwait(false);
                if (redirected.Result == SpfResult.None)
                    throw Perm($"redirect to {target}, which has no SPF record");
                return redirected;
            }
            return (SpfResult.Neutral, null, null);
        }
        finally
        {
            state.Chain.RemoveAt(state.Chain.Count - 1);
        }
    }

    private static void CountTerm(State state)
    {
        if (++state.DnsTerms > MaxDnsTerms)
            throw Perm($"more than {MaxDnsTerms} DNS-querying terms");
    }

    private static void CountVoid(State state, string name)
    {
        if (++state.VoidLookups > MaxVoidLookups)
            throw Perm($"more than {MaxVoidLookups} void lookups (the last: {name})");
    }

    private async Task<bool> MatchesAsync(State state, SpfMacroContext context, SpfMechanism mechanism)
    {
        var ip = context.Ip;
        bool six = ip.AddressFamily == AddressFamily.InterNetworkV6;
        switch (mechanism.Kind)
        {
            case SpfMechanismKind.All:
                return true;
            case SpfMechanismKind.Ip4:
                return !six && InNetwork(ip, mechanism.Network!, mechanism.Cidr4);
            case SpfMechanismKind.Ip6:
                return six && InNetwork(ip, mechanism.Network!, mechanism.Cidr6);
            case SpfMechanismKind.A:
            {
                if (await TargetAsync(state, context, mechanism).ConfigureAwait(false) is not { } target)
                    return false;
                var addresses = await AddressesAsync(state, target).ConfigureAwait(false);
                bool any = false;
                foreach (var address in addresses.Addresses)
                {
                    if (address.AddressFamily != ip.AddressFamily)
                        continue;
                    any = true;
                    if (InNetwork(ip, address, six ? mechanism.Cidr6 : mechanism.Cidr4))
                        return true;
                }
                if (!any)
                    CountVoid(state, target);
                return false;
            }
            case SpfMechanismKind.Mx:
            {
                if (await TargetAsync(state, context, mechanism).ConfigureAwait(false) is not { } target)
                    return false;
                var mx = await _dns.QueryMxAsync(target, state.Cancel).ConfigureAwait(false);
                if (mx.Status == DnsStatus.TempFail)
                    throw Temp($"DNS failure looking up the MX of {target} ({mx.Error ?? "temporary"})");
                if (mx.Status != DnsStatus.Ok)
                {
                    CountVoid(state, target);
                    return false;
                }
                if (mx.Hosts.Count > MaxMxNames)
                    throw Perm($"{target} has more than {MaxMxNames} MX names");
                foreach (var (_, host) in mx.Hosts)
                {
                    var addresses = await AddressesAsync(state, host).ConfigureAwait(false);
                    foreach (var address in addresses.Addresses)
                        if (address.AddressFamily == ip.AddressFamily && InNetwork(ip, address, six ? mechanism.Cidr6 : mechanism.Cidr4))
                            return true;
                }
                return false;
            }
            case SpfMechanismKind.Ptr:
            {
                if (await TargetAsync(state, context, mechanism).ConfigureAwait(false) is not { } target)
                    return false;
                var names = await ValidatedNamesAsync(state, ip, countVoid: true).ConfigureAwait(false);
                foreach (var name in names)
                    if (name.Equals(target, StringComparison.OrdinalIgnoreCase) || name.EndsWith("." + target, StringComparison.OrdinalIgnoreCase))
                        return true;
                return false;
            }
            case SpfMechanismKind.Exists:
            {
                if (await TargetAsync(state, context, mechanism).ConfigureAwait(false) is not { } target)
                    return false;
                // Always an A query, whatever the client's family (RFC 7208 5.7).
                var addresses = await AddressesAsync(state, target).ConfigureAwait(false);
                foreach (var address in addresses.Addresses)
                    if (address.AddressFamily == AddressFamily.InterNetwork)
                        return true;
                CountVoid(state, target);
                return false;
            }
            case SpfMechanismKind.Include:
            {
                string target = await TargetAsync(state, context, mechanism).ConfigureAwait(false)
                                ?? throw Perm($"{mechanism.Text} does not expand to a domain name");
                if (state.Chain.Contains(target))
                    throw Perm($"include loop at {target}");
                var (result, _, _) = await CheckHostCoreAsync(state, context.WithDomain(target), target, inInclude: true).ConfigureAwait(false);
                return result switch
                {
                    SpfResult.Pass => true,
                    SpfResult.Fail or SpfResult.SoftFail or SpfResult.Neutral => false,
                    SpfResult.TempError => throw Temp($"include:{target} failed temporarily"),
                    _ => throw Perm($"include:{target} has no SPF record"),
                };
            }
            default:
                return false;
        }
    }

    /// <summary>A name's addresses; a DNS failure ends the check as a temperror.</summary>
    private async Task<AddressAnswer> AddressesAsync(State state, string name)
    {
        var addresses = await _dns.QueryAddressesAsync(name, state.Cancel).ConfigureAwait(false);
        if (addresses.Status == DnsStatus.TempFail)
            throw Temp($"DNS failure looking up {name} ({addresses.Error ?? "temporary"})");
        return addresses;
    }

    /// <summary>The names of the client's PTR records that resolve back to it (RFC 7208 5.5), at most 10 tried.</summary>
    private async Task<List<string>> ValidatedNamesAsync(State state, IPAddress ip, bool countVoid)
    {
        var validated = new List<string>();
        var ptr = await _dns.QueryPtrAsync(ip, state.Cancel).ConfigureAwait(false);
        if (ptr.Status is DnsStatus.NxDomain or DnsStatus.NoData && countVoid)
            CountVoid(state, "PTR of " + ip);
        if (ptr.Status != DnsStatus.Ok)
            return validated; // a DNS error in the PTR lookup: no match (5.5)
        int tried = 0;
        foreach (var name in ptr.Names)
        {
            if (++tried > MaxPtrNames)
                break;
            var addresses = await _dns.QueryAddressesAsync(name, state.Cancel).ConfigureAwait(false);
            foreach (var address in addresses.Addresses) // an error skips the name (5.5)
            {
                if (address.Equals(ip))
                {
                    validated.Add(name);
                    break;
                }
            }
        }
        return validated;
    }

    /// <summary>
    /// A mechanism's target name. One that expands to something that cannot be a domain name
    /// (an empty or over-long label, a single label: a HELO of "OEMCOMPUTER" in %{h}) is a name
    /// that does not exist: null, which a, mx, ptr and exists count as a void lookup that does not
    /// match (the openspf test suite's reading of RFC 7208 4.8 and 7.1).
    /// </summary>
    private async Task<string?> TargetAsync(State state, SpfMacroContext context, SpfMechanism mechanism)
    {
        if (mechanism.DomainSpec is null)
            return context.Domain;
        string? target = await ExpandDomainAsync(state, context, mechanism.DomainSpec).ConfigureAwait(false);
        if (target is null && mechanism.Kind != SpfMechanismKind.Include)
            CountVoid(state, mechanism.DomainSpec);
        return target;
    }

    /// <summary>Expands a domain-spec and makes it a name to query: over 253 characters, labels go from the left (7.3); null if it is not a domain name.</summary>
    private async Task<string?> ExpandDomainAsync(State state, SpfMacroContext context, string spec)
    {
        if (spec.Contains("%{p", StringComparison.OrdinalIgnoreCase))
            await FindValidatedNameAsync(state, context).ConfigureAwait(false);
        string name = SpfMacro.Expand(spec, context).TrimEnd('.').ToLowerInvariant();
        while (name.Length > 253)
        {
            int dot = name.IndexOf('.');
            if (dot < 0)
                break;
            name = name[(dot + 1)..];
        }
        return IsDomainName(name) ? name : null;
    }

    /// <summary>%{p}: a validated name of the client, preferably in the current domain, else "unknown" (7.3).</summary>
    private async Task FindValidatedNameAsync(State state, SpfMacroContext context)
    {
        if (context.ValidatedName != "unknown")
            return;
        var names = await ValidatedNamesAsync(state, context.Ip, countVoid: false).ConfigureAwait(false);
        if (names.Count == 0)
            return;
        context.ValidatedName = names.FirstOrDefault(n => n.Equals(context.Domain, StringComparison.OrdinalIgnoreCase))
                                ?? names.FirstOrDefault(n => n.EndsWith("." + context.Domain, StringComparison.OrdinalIgnoreCase))
                                ?? names[0];
    }

    /// <summary>The exp= text (6.2): one TXT record, macro-expanded; any problem means no explanation.</summary>
    private async Task<string?> ExplainAsync(State state, SpfMacroContext context, string spec)
    {
        try
        {
            string? name = await ExpandDomainAsync(state, context, spec).ConfigureAwait(false);
            if (name is null)
                return null;
            var answer = await _dns.QueryTxtAsync(name, state.Cancel).ConfigureAwait(false);
            if (answer.Status != DnsStatus.Ok || answer.Records.Count != 1)
                return null;
            string text = answer.Records[0];
            if (!SpfMacro.IsValid(text, allowExplanationLetters: true, out _))
                return null;
            if (text.Contains("%{p", StringComparison.OrdinalIgnoreCase))
                await FindValidatedNameAsync(state, context).ConfigureAwait(false);
            return SpfMacro.Expand(text, context, explanation: true);
        }
        catch (SpfAbort)
        {
            return null;
        }
    }

    /// <summary>Whether the first <paramref name="prefix"/> bits of two addresses of one family agree.</summary>
    internal static bool InNetwork(IPAddress ip, IPAddress network, int prefix)
    {
        if (ip.AddressFamily != network.AddressFamily)
            return false;
        Span<byte> a = stackalloc byte[16];
        Span<byte> b = stackalloc byte[16];
        ip.TryWriteBytes(a, out int length);
        network.TryWriteBytes(b, out _);
        int full = prefix / 8;
        if (!a[..full].SequenceEqual(b[..full]))
            return false;
        int bits = prefix % 8;
        if (bits == 0 || full >= length)
            return true;
        int mask = 0xFF << (8 - bits) & 0xFF;
        return (a[full] & mask) == (b[full] & mask);
    }

    /// <summary>A multi-label name with labels of 1 to 63 characters, at most 253 in all (RFC 7208 4.3).</summary>
    internal static bool IsDomainName(string name)
    {
        if (name.Length is 0 or > 253 || name[0] == '.' || name[^1] == '.' || !name.Contains('.'))
            return false;
        foreach (var range in name.AsSpan().Split('.'))
        {
            int length = range.End.GetOffset(name.Length) - range.Start.GetOffset(name.Length);
            if (length is 0 or > 63)
                return false;
        }
        return true;
    }
}
