using NativeRelay.MailAuth.Spf;
using NativeRelay.Routing;

namespace NativeRelay.MailAuth.Dmarc;

/// <summary>DMARC results by RFC 7489 11.2's names.</summary>
public enum DmarcResult : byte
{
    None,
    Pass,
    Fail,
    TempError,
    PermError,
}

/// <summary>
/// One DMARC evaluation: the result, the From domain, where the policy came from, the policy
/// that applies to this domain (p, or sp/np for a subdomain) and the disposition after pct
/// sampling (what the receiver should do: none unless the result is fail), with which of SPF and
/// DKIM produced an aligned pass.
/// </summary>
public sealed record DmarcVerdict(
    DmarcResult Result,
    string? FromDomain,
    string? PolicyDomain,
    DmarcRecord? Record,
    DmarcPolicy Policy,
    DmarcPolicy Disposition,
    bool SpfAligned,
    bool DkimAligned,
    string? Problem = null)
{
    public string ResultName => Result switch
    {
        DmarcResult.None => "none",
        DmarcResult.Pass => "pass",
        DmarcResult.Fail => "fail",
        DmarcResult.TempError => "temperror",
        _ => "permerror",
    };
}

/// <summary>
/// The policy that applies to a From domain, found before the DKIM results are in: the record and
/// where it was published, or the outcome already decided (none, temperror, permerror) and why.
/// </summary>
public sealed record DmarcPolicyLookup(string? FromDomain, string? OrganizationalDomain, DmarcRecord? Record, string? PolicyDomain, DmarcResult? Outcome, string? Problem);

/// <summary>
/// RFC 7489 section 6.6: policy discovery (the TXT record at _dmarc.&lt;From domain&gt;, else at
/// _dmarc.&lt;organizational domain&gt;, the organizational domain from the Public Suffix List),
/// identifier alignment (relaxed: same organizational domain; strict: the same name) of the SPF
/// pass of the MAIL FROM (or HELO) domain and of every passing DKIM signature's d=, then the
/// policy: p for the domain that published it, sp for its subdomains, np (RFC 9091) for
/// subdomains that do not exist, and pct: a failing message not sampled gets the next milder
/// policy (reject → quarantine → none, RFC 7489 6.6.4).
/// <para>
/// Messages without exactly one From address (none, several From fields, several addresses)
/// are a <c>permerror</c> with the policy <c>reject</c>: RFC 7489 6.6.1 says such messages are
/// typically rejected, and an attacker must not escape DMARC by adding a second From. The
/// inbound authenticator refuses them under <c>enforce</c> and annotates them otherwise.
/// A DNS failure during discovery is a <c>temperror</c>: never a reason to refuse for good.
/// </para>
/// </summary>
public sealed class DmarcEvaluator
{
    private readonly IDnsResolver _dns;
    private readonly PublicSuffixList _psl;
    private readonly Func<int> _sample;

    /// <param name="dns">Where records come from (a <see cref="MailAuthDns"/> to cache them).</param>
    /// <param name="psl">The Public Suffix List (<see cref="PublicSuffixList.Default"/> unless loaded from a file).</param>
    /// <param name="sample">pct sampling: a number 0 to 99 per message; the message is sampled when it is below pct. Tests fix it.</param>
    public DmarcEvaluator(IDnsResolver dns, PublicSuffixList? psl = null, Func<int>? sample = null)
    {
        _dns = dns;
        _psl = psl ?? PublicSuffixList.Default;
        _sample = sample ?? (static () => Random.Shared.Next(100));
    }

    public PublicSuffixList PublicSuffixList => _psl;

    /// <summary>Evaluates the message's From (found in its header section) against the SPF and DKIM results.</summary>
    public async Task<DmarcVerdict> EvaluateAsync(ReadOnlyMemory<byte> message, SpfVerdict? spf, IReadOnlyList<DkimVerdict> dkim, CancellationToken cancel)
    {
        var from = FromDomain.Find(message.Span);
        var policy = await DiscoverAsync(from.Domain, cancel, from.Problem).ConfigureAwait(false);
        return await EvaluateAsync(policy, spf, dkim, cancel).ConfigureAwait(false);
    }

    /// <summary>Evaluates a From domain (lower case, A-labels) against the SPF and DKIM results.</summary>
    public async Task<DmarcVerdict> EvaluateAsync(string fromDomain, SpfVerdict? spf, IReadOnlyList<DkimVerdict> dkim, CancellationToken cancel)
    {
        var policy = await DiscoverAsync(fromDomain, cancel).ConfigureAwait(false);
        return await EvaluateAsync(policy, spf, dkim, cancel).ConfigureAwait(false);
    }

    /// <summary>
    /// Policy discovery alone (RFC 7489 6.6.3), so that it can run while DKIM is being verified.
    /// A message without one From address gives a lookup that evaluates to permerror.
    /// </summary>
    public async Task<DmarcPolicyLookup> DiscoverAsync(string? fromDomain, CancellationToken cancel, string? fromProblem = null)
    {
        if (fromDomain is null)
            return new DmarcPolicyLookup(null, null, null, null, DmarcResult.PermError, fromProblem ?? "no From domain");
        string organizational = _psl.GetOrganizationalDomain(fromDomain) ?? fromDomain;
        var (record, status, problem) = await FindRecordAsync("_dmarc." + fromDomain, cancel).ConfigureAwait(false);
        if (status == DnsStatus.TempFail)
            return new DmarcPolicyLookup(fromDomain, organizational, null, null, DmarcResult.TempError, problem);
        string policyDomain = fromDomain;
        // Only when the From domain has no DMARC record at all; several, or one that must be
        // discarded, end the discovery there (6.6.3 steps 5 and 6).
        if (record is null && status != DnsStatus.Ok && !organizational.Equals(fromDomain, StringComparison.OrdinalIgnoreCase))
        {
            (record, status, problem) = await FindRecordAsync("_dmarc." + organizational, cancel).ConfigureAwait(false);
            if (status == DnsStatus.TempFail)
                return new DmarcPolicyLookup(fromDomain, organizational, null, null, DmarcResult.TempError, problem);
            policyDomain = organizational;
        }
        if (record is null)
            return new DmarcPolicyLookup(fromDomain, organizational, null, null, DmarcResult.None, problem);
        return new DmarcPolicyLookup(fromDomain, organizational, record, policyDomain, null, null);
    }

    /// <summary>Alignment and policy (RFC 7489 3.1, 6.6.4) once the policy is known.</summary>
    public async Task<DmarcVerdict> EvaluateAsync(DmarcPolicyLookup lookup, SpfVerdict? spf, IReadOnlyList<DkimVerdict> dkim, CancellationToken cancel)
    {
        if (lookup.Outcome is { } outcome)
        {
            var reject = outcome == DmarcResult.PermError ? DmarcPolicy.Reject : DmarcPolicy.None;
            return new DmarcVerdict(outcome, lookup.FromDomain, null, null, reject, reject, false, false, lookup.Problem);
        }
        string fromDomain = lookup.FromDomain!;
        string organizational = lookup.OrganizationalDomain!;
        string policyDomain = lookup.PolicyDomain!;
        var record = lookup.Record!;

        // Identifier alignment (3.1).
        bool spfAligned = spf is { Result: SpfResult.Pass } && Aligned(spf.Domain, fromDomain, organizational, record.StrictSpf);
        bool dkimAligned = false;
        foreach (var signature in dkim)
        {
            if (signature.Result == DkimResult.Pass && Aligned(signature.Domain, fromDomain, organizational, record.StrictDkim))
            {
                dkimAligned = true;
                break;
            }
        }

        // The policy for this domain: p where it was published, sp (else p) for a subdomain of it,
        // np (else sp, else p) for a subdomain that does not exist (RFC 9091).
        var policy = record.Policy;
        if (!policyDomain.Equals(fromDomain, StringComparison.OrdinalIgnoreCase))
        {
            policy = record.SubdomainPolicy ?? record.Policy;
            if (record.NonexistentPolicy is { } np && !(spfAligned || dkimAligned) && await DoesNotExistAsync(fromDomain, cancel).ConfigureAwait(false))
                policy = np;
        }

        if (spfAligned || dkimAligned)
            return new DmarcVerdict(DmarcResult.Pass, fromDomain, policyDomain, record, policy, DmarcPolicy.None, spfAligned, dkimAligned);

        var disposition = policy;
        if (policy != DmarcPolicy.None && record.Percent < 100 && _sample() >= record.Percent)
            disposition = policy == DmarcPolicy.Reject ? DmarcPolicy.Quarantine : DmarcPolicy.None;
        return new DmarcVerdict(DmarcResult.Fail, fromDomain, policyDomain, record, policy, disposition, false, false);
    }

    /// <summary>Relaxed: the organizational domains are the same; strict: the names are (RFC 7489 3.1.1, 3.1.2).</summary>
    private bool Aligned(string domain, string fromDomain, string fromOrganizational, bool strict)
    {
        domain = domain.TrimEnd('.');
        if (domain.Equals(fromDomain, StringComparison.OrdinalIgnoreCase))
            return true;
        if (strict)
            return false;
        string? organizational = _psl.GetOrganizationalDomain(domain);
        return organizational is not null && organizational.Equals(fromOrganizational, StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>The one DMARC record at a name; several, or one that must be discarded, count as none (6.6.3).</summary>
    private async Task<(DmarcRecord? Record, DnsStatus Status, string? Problem)> FindRecordAsync(string name, CancellationToken cancel)
    {
        var answer = await _dns.QueryTxtAsync(name, cancel).ConfigureAwait(false);
        if (answer.Status == DnsStatus.TempFail)
            return (null, DnsStatus.TempFail, $"DNS failure looking up {name} ({answer.Error ?? "temporary"})");
        if (answer.Status != DnsStatus.Ok)
            return (null, answer.Status, null);
        string? text = null;
        foreach (var record in answer.Records)
        {
            if (!DmarcRecord.IsDmarcRecord(record))
                continue;
            if (text is not null)
                return (null, DnsStatus.Ok, $"{name} has more than one DMARC record");
            text = record;
        }
        if (text is null)
            return (null, DnsStatus.NoData, null);
        if (!DmarcRecord.TryParse(text, out var parsed, out string? error))
            return (null, DnsStatus.Ok, $"{name}: {error}");
        return (parsed, DnsStatus.Ok, null);
    }

    /// <summary>RFC 9091 2.1: a domain does not exist when it has no A, AAAA or MX records (NXDOMAIN).</summary>
    private async Task<bool> DoesNotExistAsync(string domain, CancellationToken cancel)
    {
        var addresses = await _dns.QueryAddressesAsync(domain, cancel).ConfigureAwait(false);
        if (addresses.Status != DnsStatus.NxDomain)
            return false;
        var mx = await _dns.QueryMxAsync(domain, cancel).ConfigureAwait(false);
        return mx.Status == DnsStatus.NxDomain;
    }
}
