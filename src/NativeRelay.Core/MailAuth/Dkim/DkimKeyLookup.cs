using NativeRelay.Routing;

namespace NativeRelay.MailAuth.Dkim;

/// <summary>A key lookup's answer: the record text, or the DNS status that explains its absence.</summary>
public sealed record DkimKeyAnswer(DnsStatus Status, string? Record, string? Error);

/// <summary>
/// Key records (selector._domainkey.domain TXT) through the relay's resolver, cached with their
/// TTLs in the same bounded, single-flight cache the router uses for MX answers: a burst of mail
/// signed by one domain costs one query.
/// </summary>
public sealed class DkimKeyLookup
{
    private readonly IDnsResolver _resolver;
    private readonly TtlCache<DkimKeyAnswer> _cache;

    public DkimKeyLookup(IDnsResolver resolver, int capacity, Func<long>? nowMs = null)
    {
        _resolver = resolver;
        _cache = new TtlCache<DkimKeyAnswer>(capacity, nowMs ?? (() => Environment.TickCount64));
    }

    public Task<DkimKeyAnswer> GetAsync(string selector, string domain) =>
        _cache.GetAsync($"{selector}._domainkey.{domain}", LoadAsync);

    private async Task<(DkimKeyAnswer, TimeSpan)> LoadAsync(string name)
    {
        var answer = await _resolver.QueryTxtAsync(name, CancellationToken.None).ConfigureAwait(false);
        // RFC 6376 3.6.2.2: several records are ambiguous; the first one is used (as dkimpy and Mail::DKIM do).
        string? record = answer.Status == DnsStatus.Ok && answer.Records.Count > 0 ? answer.Records[0] : null;
        return (new DkimKeyAnswer(answer.Status, record, answer.Error), answer.Ttl);
    }
}
