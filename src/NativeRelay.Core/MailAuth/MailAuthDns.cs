using System.Net;
using NativeRelay.Routing;

namespace NativeRelay.MailAuth;

/// <summary>
/// The DNS of mail authentication: every answer (TXT, MX, addresses, PTR; negative ones too)
/// kept for its own TTL in bounded, single-flight <see cref="TtlCache{T}"/>s, the same cache the
/// router uses, so a burst of mail from one domain costs one lookup of its SPF and DMARC records.
/// A transient failure is remembered for a few seconds only. A lookup in flight is shared by
/// every caller; each caller's cancellation stops its own wait, not the shared lookup (which ends
/// with the resolver's timeout). Nothing here blocks a thread.
/// </summary>
public sealed class MailAuthDns : IDnsResolver
{
    private static readonly TimeSpan MinTtl = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan MaxTtl = TimeSpan.FromDays(1);

    private readonly IDnsResolver _inner;
    private readonly TtlCache<TxtAnswer> _txt;
    private readonly TtlCache<MxAnswer> _mx;
    private readonly TtlCache<AddressAnswer> _addresses;
    private readonly TtlCache<PtrAnswer> _ptr;
    private readonly Func<string, Task<(TxtAnswer, TimeSpan)>> _loadTxt;
    private readonly Func<string, Task<(MxAnswer, TimeSpan)>> _loadMx;
    private readonly Func<string, Task<(AddressAnswer, TimeSpan)>> _loadAddresses;
    private readonly Func<string, Task<(PtrAnswer, TimeSpan)>> _loadPtr;

    /// <param name="inner">The resolver that asks the network.</param>
    /// <param name="capacity">Answers kept per record type.</param>
    /// <param name="nowMs">The clock (tests).</param>
    public MailAuthDns(IDnsResolver inner, int capacity = 10_000, Func<long>? nowMs = null)
    {
        _inner = inner;
        nowMs ??= static () => Environment.TickCount64;
        _txt = new TtlCache<TxtAnswer>(capacity, nowMs);
        _mx = new TtlCache<MxAnswer>(capacity, nowMs);
        _addresses = new TtlCache<AddressAnswer>(capacity, nowMs);
        _ptr = new TtlCache<PtrAnswer>(capacity, nowMs);
        _loadTxt = async name => Keep(await _inner.QueryTxtAsync(name, CancellationToken.None).ConfigureAwait(false));
        _loadMx = async name => Keep(await _inner.QueryMxAsync(name, CancellationToken.None).ConfigureAwait(false));
        _loadAddresses = async name => Keep(await _inner.QueryAddressesAsync(name, CancellationToken.None).ConfigureAwait(false));
        _loadPtr = async name => Keep(await _inner.QueryPtrAsync(IPAddress.Parse(name), CancellationToken.None).ConfigureAwait(false));
    }

    internal int CachedAnswers => _txt.Count + _mx.Count + _addresses.Count + _ptr.Count;

    public Task<TxtAnswer> QueryTxtAsync(string name, CancellationToken cancel) => _txt.GetAsync(Key(name), _loadTxt).WaitAsync(cancel);

    public Task<MxAnswer> QueryMxAsync(string domain, CancellationToken cancel) => _mx.GetAsync(Key(domain), _loadMx).WaitAsync(cancel);

    public Task<AddressAnswer> QueryAddressesAsync(string host, CancellationToken cancel) => _addresses.GetAsync(Key(host), _loadAddresses).WaitAsync(cancel);

    public Task<PtrAnswer> QueryPtrAsync(IPAddress address, CancellationToken cancel) => _ptr.GetAsync(address.ToString(), _loadPtr).WaitAsync(cancel);

    private static string Key(string name) => name.EndsWith('.') ? name[..^1] : name;

    private static (TxtAnswer, TimeSpan) Keep(TxtAnswer a) => (a, TtlOf(a.Status, a.Ttl));
    private static (MxAnswer, TimeSpan) Keep(MxAnswer a) => (a, TtlOf(a.Status, a.Ttl));
    private static (AddressAnswer, TimeSpan) Keep(AddressAnswer a) => (a, TtlOf(a.Status, a.Ttl));
    private static (PtrAnswer, TimeSpan) Keep(PtrAnswer a) => (a, TtlOf(a.Status, a.Ttl));

    private static TimeSpan TtlOf(DnsStatus status, TimeSpan ttl) =>
        status == DnsStatus.TempFail ? Router.TransientFailureTtl
        : ttl < MinTtl ? MinTtl
        : ttl > MaxTtl ? MaxTtl
        : ttl;
}
