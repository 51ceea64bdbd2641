using System.Net;
using DnsClient;
using DnsClient.Protocol;

namespace NativeRelay.Routing;

public enum DnsStatus : byte
{
    /// <summary>Records of the asked type exist.</summary>
    Ok,
    /// <summary>The name exists but has no records of that type (NOERROR, empty answer).</summary>
    NoData,
    /// <summary>The name does not exist (NXDOMAIN).</summary>
    NxDomain,
    /// <summary>No answer that can be trusted (SERVFAIL, REFUSED, timeout): try again later.</summary>
    TempFail,
}

/// <summary>An MX answer: hosts with preferences, or why there are none. The TTL is how long it may be cached.
/// <see cref="Authentic"/>: the answer carried the AD bit (meaningful only with routing.dnssec).</summary>
public sealed record MxAnswer(DnsStatus Status, IReadOnlyList<(int Preference, string Host)> Hosts, bool NullMx, TimeSpan Ttl, string? Error = null,
    bool Authentic = false);

/// <summary>A host's addresses (A then AAAA), or why there are none.</summary>
/// <summary>A and AAAA together; <see cref="Authentic"/>: both answers carried the AD bit (only asked for with DNSSEC on).</summary>
public sealed record AddressAnswer(DnsStatus Status, IPAddress[] Addresses, TimeSpan Ttl, string? Error = null, bool Authentic = false);

/// <summary>One TLSA record (RFC 6698 2.1): certificate usage, selector, matching type, association data.</summary>
public sealed record TlsaRecordData(byte Usage, byte Selector, byte MatchingType, byte[] Data);

/// <summary>
/// The TLSA records of a name; <see cref="Authentic"/>: the answer (positive or negative) carried
/// the AD bit of a resolver the operator trusts to validate (routing.dnssec).
/// </summary>
public sealed record TlsaAnswer(DnsStatus Status, IReadOnlyList<TlsaRecordData> Records, bool Authentic, TimeSpan Ttl, string? Error = null);

/// <summary>
/// A name's TXT records, each the concatenation of its character-strings (RFC 7208 3.3, RFC 6376
/// 3.6.2.2), or why there are none.
/// </summary>
public sealed record TxtAnswer(DnsStatus Status, IReadOnlyList<string> Records, TimeSpan Ttl, string? Error = null);

/// <summary>The names a PTR lookup of an address gave (RFC 7208 5.5's ptr mechanism and %{p} macro), or why there are none.</summary>
public sealed record PtrAnswer(DnsStatus Status, IReadOnlyList<string> Names, TimeSpan Ttl, string? Error = null);

/// <summary>The DNS lookups routing and mail authentication need. Implementations never throw for DNS failures; they answer TempFail.</summary>
public interface IDnsResolver
{
    Task<MxAnswer> QueryMxAsync(string domain, CancellationToken cancel);
    Task<AddressAnswer> QueryAddressesAsync(string host, CancellationToken cancel);
    Task<TxtAnswer> QueryTxtAsync(string name, CancellationToken cancel);

    /// <summary>The PTR names of an address (in-addr.arpa / ip6.arpa). A resolver without it answers NoData.</summary>
    Task<PtrAnswer> QueryPtrAsync(IPAddress address, CancellationToken cancel) =>
        Task.FromResult(new PtrAnswer(DnsStatus.NoData, [], TimeSpan.Zero));

    /// <summary>TLSA records (DANE, RFC 7672: "_25._tcp.HOST"), with the AD bit of the answer.</summary>
    Task<TlsaAnswer> QueryTlsaAsync(string name, CancellationToken cancel) =>
        Task.FromResult(new TlsaAnswer(DnsStatus.NoData, [], false, TimeSpan.Zero));
}

/// <summary>
/// Lookups through DnsClient against the configured servers (or the system's). DnsClient's own
/// cache is off: <see cref="Router"/> caches answers itself, bounded, negative answers included.
/// </summary>
public sealed class DnsClientResolver : IDnsResolver
{
    /// <summary>RFC 2308 5: negative answers should not be cached beyond a few hours.</summary>
    internal static readonly TimeSpan MaxNegativeTtl = TimeSpan.FromHours(3);

    /// <summary>A negative answer without an SOA (RFC 2308 says: do not cache); a short time still absorbs a burst.</summary>
    internal static readonly TimeSpan NegativeTtlWithoutSoa = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Made at the first lookup, not in the constructor, so a relay that routes everything to IP
    /// addresses never looks for DNS servers (a scratch image has no /etc at all).
    /// </summary>
    private readonly Lazy<(LookupClient? Client, string? Problem)> _client;

    public DnsClientResolver(IReadOnlyList<IPEndPoint> servers, TimeSpan timeout, string resolvConf = ResolvConf, bool dnssec = false)
    {
        _client = new Lazy<(LookupClient?, string?)>(() => Create(servers, timeout, resolvConf, dnssec), LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <param name="dnssec">Ask with the DO bit (EDNS), so a validating resolver reports the AD bit (RFC 6840 5.7).</param>
    private static (LookupClient?, string?) Create(IReadOnlyList<IPEndPoint> servers, TimeSpan timeout, string resolvConf, bool dnssec)
    {
        // Without configured servers, the system's are the nameserver lines of /etc/resolv.conf,
        // read here rather than by DnsClient: its own search walks the network interfaces (and
        // DHCP lease files) and, finding nothing, may fall back to a public resolver on the
        // Internet or throw; a mail relay should ask the resolver it was given, or say it has none.
        if (servers.Count == 0)
        {
            if (SystemServers(resolvConf, out string? problem) is not { } system)
                return (null, problem);
            servers = system;
        }

        var nameServers = new NameServer[servers.Count];
        for (int i = 0; i < servers.Count; i++)
            nameServers[i] = new NameServer(servers[i]);
        var options = new LookupClientOptions(nameServers)
        {
            UseCache = false,
            Timeout = timeout,
            Retries = 1,
            ThrowDnsErrors = false,
            // SERVFAIL from one server: ask the next. An empty answer is an answer (NODATA), not an error.
            ContinueOnDnsError = true,
            ContinueOnEmptyResponse = false,
            UseTcpFallback = true,
            RequestDnsSecRecords = dnssec,
        };
        return (new LookupClient(options), null);
    }

    /// <summary>The file the system's resolvers are read from when no server is configured.</summary>
    public const string ResolvConf = "/etc/resolv.conf";

    /// <summary>
    /// Null when the system names DNS servers; otherwise one line saying why not and what to do,
    /// for start-up (<see cref="NativeRelay.Hosting.StartupChecks"/>); a lookup without servers
    /// fails transiently with the same line (the message is deferred, not lost).
    /// </summary>
    public static string? SystemServersProblem(string resolvConf = ResolvConf)
    {
        SystemServers(resolvConf, out string? problem);
        return problem;
    }

    /// <summary>
    /// The "nameserver ADDRESS" lines of resolv.conf(5) (port 53; an IPv6 zone such as %eth0 is
    /// kept), or null with the reason. A file without nameserver lines is reported rather than
    /// taken to mean the local machine, as the C library would: an explicit --dns says that.
    /// </summary>
    internal static List<IPEndPoint>? SystemServers(string resolvConf, out string? problem)
    {
        string[] lines;
        try
        {
            lines = File.ReadAllLines(resolvConf);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            problem = $"no DNS servers: {resolvConf} is missing; give --dns IP[:PORT] or routing.dns";
            return null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            problem = $"no DNS servers: {resolvConf} cannot be read ({e.Message.ReplaceLineEndings(" ")}); give --dns IP[:PORT] or routing.dns";
            return null;
        }
        var servers = new List<IPEndPoint>();
        foreach (var line in lines)
        {
            var fields = line.Split((char[])[' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length >= 2 && fields[0] == "nameserver" && IPAddress.TryParse(fields[1], out var address))
                servers.Add(new IPEndPoint(address, 53));
        }
        problem = servers.Count == 0 ? $"no DNS servers: {resolvConf} names none; give --dns IP[:PORT] or routing.dns" : null;
        return servers.Count == 0 ? null : servers;
    }

    /// <summary>The client, or the one line saying why there is none (every lookup then fails transiently with it).</summary>
    private LookupClient? Client(out string? problem)
    {
        (var client, problem) = _client.Value;
        return client;
    }

    public async Task<MxAnswer> QueryMxAsync(string domain, CancellationToken cancel)
    {
        IDnsQueryResponse response;
        try
        {
            if (Client(out string? problem) is not { } client)
                return new MxAnswer(DnsStatus.TempFail, [], false, TimeSpan.Zero, problem);
            response = await client.QueryAsync(domain, QueryType.MX, QueryClass.IN, cancel).ConfigureAwait(false);
        }
        catch (Exception e) when (e is DnsResponseException or System.Net.Sockets.SocketException or IOException or TimeoutException
                                      or OperationCanceledException && !cancel.IsCancellationRequested)
        {
            return new MxAnswer(DnsStatus.TempFail, [], false, TimeSpan.Zero, Describe(e));
        }
        var status = Classify(response, out string? error);
        if (status != DnsStatus.Ok)
            return new MxAnswer(status, [], false, NegativeTtl(response), error);

        var hosts = new List<(int, string)>();
        bool nullMx = false;
        uint ttl = uint.MaxValue;
        foreach (var mx in response.Answers.MxRecords())
        {
            ttl = Math.Min(ttl, (uint)Math.Max(0, mx.TimeToLive));
            string host = mx.Exchange.Value.TrimEnd('.');
            if (host.Length == 0)
            {
                nullMx = true; // "0 ." (RFC 7505)
                continue;
            }
            hosts.Add((mx.Preference, host.ToLowerInvariant()));
        }
        if (hosts.Count == 0 && !nullMx)
            return new MxAnswer(DnsStatus.NoData, [], false, NegativeTtl(response), Authentic: response.Header.IsAuthenticData);
        // RFC 7505 3: a null MX must be the only MX; with real hosts beside it, the hosts are used.
        return new MxAnswer(DnsStatus.Ok, hosts, nullMx && hosts.Count == 0, TimeSpan.FromSeconds(ttl == uint.MaxValue ? 0 : ttl),
            Authentic: response.Header.IsAuthenticData);
    }

    public async Task<AddressAnswer> QueryAddressesAsync(string host, CancellationToken cancel)
    {
        var a = QueryOneAsync(host, QueryType.A, cancel);
        var aaaa = QueryOneAsync(host, QueryType.AAAA, cancel);
        var (aStatus, aAddresses, aTtl, aError, aAuthentic) = await a.ConfigureAwait(false);
        var (sixStatus, sixAddresses, sixTtl, sixError, sixAuthentic) = await aaaa.ConfigureAwait(false);
        bool authentic = aAuthentic && sixAuthentic;
        if (aAddresses.Count + sixAddresses.Count > 0)
        {
            var all = new IPAddress[aAddresses.Count + sixAddresses.Count];
            aAddresses.CopyTo(all, 0);
            sixAddresses.CopyTo(all, aAddresses.Count);
            TimeSpan ttl = aAddresses.Count > 0 && sixAddresses.Count > 0 ? Min(aTtl, sixTtl)
                : aAddresses.Count > 0 ? aTtl : sixTtl;
            // One family failing transiently: use the other, and ask again soon.
            if (aStatus == DnsStatus.TempFail || sixStatus == DnsStatus.TempFail)
                ttl = Min(ttl, Router.TransientFailureTtl);
            return new AddressAnswer(DnsStatus.Ok, all, ttl, Authentic: authentic);
        }
        if (aStatus == DnsStatus.TempFail || sixStatus == DnsStatus.TempFail)
            return new AddressAnswer(DnsStatus.TempFail, [], TimeSpan.Zero, aError ?? sixError);
        var status = aStatus == DnsStatus.NxDomain && sixStatus == DnsStatus.NxDomain ? DnsStatus.NxDomain : DnsStatus.NoData;
        return new AddressAnswer(status, [], Min(aTtl, sixTtl), Authentic: authentic);
    }

    public async Task<TxtAnswer> QueryTxtAsync(string name, CancellationToken cancel)
    {
        IDnsQueryResponse response;
        try
        {
            if (Client(out string? problem) is not { } client)
                return new TxtAnswer(DnsStatus.TempFail, [], TimeSpan.Zero, problem);
            response = await client.QueryAsync(name, QueryType.TXT, QueryClass.IN, cancel).ConfigureAwait(false);
        }
        catch (Exception e) when (e is DnsResponseException or System.Net.Sockets.SocketException or IOException or TimeoutException
                                      or OperationCanceledException && !cancel.IsCancellationRequested)
        {
            return new TxtAnswer(DnsStatus.TempFail, [], TimeSpan.Zero, Describe(e));
        }
        var status = Classify(response, out string? error);
        if (status != DnsStatus.Ok)
            return new TxtAnswer(status, [], NegativeTtl(response), error);
        var records = new List<string>();
        uint ttl = uint.MaxValue;
        foreach (var txt in response.Answers.TxtRecords())
        {
            // The record's strings joined with nothing between them; DnsClient has already undone
            // the presentation escapes (EscapedText is the quoted form), so Text is the raw octets.
            records.Add(string.Concat(txt.Text));
            ttl = Math.Min(ttl, (uint)Math.Max(0, txt.TimeToLive));
        }
        if (records.Count == 0)
            return new TxtAnswer(DnsStatus.NoData, records, NegativeTtl(response));
        return new TxtAnswer(DnsStatus.Ok, records, TimeSpan.FromSeconds(ttl));
    }

    public async Task<PtrAnswer> QueryPtrAsync(IPAddress address, CancellationToken cancel)
    {
        IDnsQueryResponse response;
        try
        {
            if (Client(out string? problem) is not { } client)
                return new PtrAnswer(DnsStatus.TempFail, [], TimeSpan.Zero, problem);
            response = await client.QueryAsync(address.GetArpaName(), QueryType.PTR, QueryClass.IN, cancel).ConfigureAwait(false);
        }
        catch (Exception e) when (e is DnsResponseException or System.Net.Sockets.SocketException or IOException or TimeoutException
                                      or OperationCanceledException && !cancel.IsCancellationRequested)
        {
            return new PtrAnswer(DnsStatus.TempFail, [], TimeSpan.Zero, Describe(e));
        }
        var status = Classify(response, out string? error);
        if (status != DnsStatus.Ok)
            return new PtrAnswer(status, [], NegativeTtl(response), error);
        var names = new List<string>();
        uint ttl = uint.MaxValue;
        foreach (var ptr in response.Answers.PtrRecords())
        {
            names.Add(ptr.PtrDomainName.Value.TrimEnd('.').ToLowerInvariant());
            ttl = Math.Min(ttl, (uint)Math.Max(0, ptr.TimeToLive));
        }
        if (names.Count == 0)
            return new PtrAnswer(DnsStatus.NoData, names, NegativeTtl(response));
        return new PtrAnswer(DnsStatus.Ok, names, TimeSpan.FromSeconds(ttl));
    }

    public async Task<TlsaAnswer> QueryTlsaAsync(string name, CancellationToken cancel)
    {
        IDnsQueryResponse response;
        try
        {
            if (Client(out string? problem) is not { } client)
                return new TlsaAnswer(DnsStatus.TempFail, [], false, TimeSpan.Zero, problem);
            response = await client.QueryAsync(name, QueryType.TLSA, QueryClass.IN, cancel).ConfigureAwait(false);
        }
        catch (Exception e) when (e is DnsResponseException or System.Net.Sockets.SocketException or IOException or TimeoutException
                                      or OperationCanceledException && !cancel.IsCancellationRequested)
        {
            return new TlsaAnswer(DnsStatus.TempFail, [], false, TimeSpan.Zero, Describe(e));
        }
        bool authentic = response.Header.IsAuthenticData;
        var status = Classify(response, out string? error);
        if (status != DnsStatus.Ok)
            return new TlsaAnswer(status, [], authentic && status != DnsStatus.TempFail, NegativeTtl(response), error);
        var records = new List<TlsaRecordData>();
        uint ttl = uint.MaxValue;
        foreach (var tlsa in response.Answers.OfType<TlsaRecord>())
        {
            records.Add(new TlsaRecordData((byte)tlsa.CertificateUsage, (byte)tlsa.Selector, (byte)tlsa.MatchingType,
                tlsa.CertificateAssociationData.ToArray()));
            ttl = Math.Min(ttl, (uint)Math.Max(0, tlsa.TimeToLive));
        }
        if (records.Count == 0)
            return new TlsaAnswer(DnsStatus.NoData, records, authentic, NegativeTtl(response));
        return new TlsaAnswer(DnsStatus.Ok, records, authentic, TimeSpan.FromSeconds(ttl));
    }

    private async Task<(DnsStatus, List<IPAddress>, TimeSpan, string?, bool)> QueryOneAsync(string host, QueryType type, CancellationToken cancel)
    {
        IDnsQueryResponse response;
        try
        {
            if (Client(out string? problem) is not { } client)
                return (DnsStatus.TempFail, [], TimeSpan.Zero, problem, false);
            response = await client.QueryAsync(host, type, QueryClass.IN, cancel).ConfigureAwait(false);
        }
        catch (Exception e) when (e is DnsResponseException or System.Net.Sockets.SocketException or IOException or TimeoutException
                                      or OperationCanceledException && !cancel.IsCancellationRequested)
        {
            return (DnsStatus.TempFail, [], TimeSpan.Zero, Describe(e), false);
        }
        bool authentic = response.Header.IsAuthenticData;
        var status = Classify(response, out string? error);
        if (status != DnsStatus.Ok)
            return (status, [], NegativeTtl(response), error, authentic && status != DnsStatus.TempFail);
        var addresses = new List<IPAddress>();
        uint ttl = uint.MaxValue;
        foreach (var record in response.Answers)
        {
            if (record is ARecord a && type == QueryType.A)
            {
                addresses.Add(a.Address);
                ttl = Math.Min(ttl, (uint)Math.Max(0, a.TimeToLive));
            }
            else if (record is AaaaRecord aaaa && type == QueryType.AAAA)
            {
                addresses.Add(aaaa.Address);
                ttl = Math.Min(ttl, (uint)Math.Max(0, aaaa.TimeToLive));
            }
        }
        if (addresses.Count == 0)
            return (DnsStatus.NoData, addresses, NegativeTtl(response), null, authentic);
        return (DnsStatus.Ok, addresses, TimeSpan.FromSeconds(ttl), null, authentic);
    }

    private static DnsStatus Classify(IDnsQueryResponse response, out string? error)
    {
        error = null;
        switch (response.Header.ResponseCode)
        {
            case DnsHeaderResponseCode.NoError:
                return DnsStatus.Ok; // maybe NoData: the caller looks at the records
            case DnsHeaderResponseCode.NotExistentDomain:
                return DnsStatus.NxDomain;
            default:
                error = response.Header.ResponseCode switch
                {
                    DnsHeaderResponseCode.ServerFailure => "SERVFAIL",
                    DnsHeaderResponseCode.Refused => "REFUSED",
                    var code => code.ToString(),
                };
                return DnsStatus.TempFail;
        }
    }

    /// <summary>RFC 2308 5: a negative answer lives for the smaller of the SOA's TTL and its MINIMUM field.</summary>
    private static TimeSpan NegativeTtl(IDnsQueryResponse response)
    {
        foreach (var soa in response.Authorities.SoaRecords())
        {
            long seconds = Math.Min((long)Math.Max(0, soa.TimeToLive), soa.Minimum);
            var ttl = TimeSpan.FromSeconds(seconds);
            return ttl > MaxNegativeTtl ? MaxNegativeTtl : ttl;
        }
        return NegativeTtlWithoutSoa;
    }

    private static TimeSpan Min(TimeSpan a, TimeSpan b) => a < b ? a : b;

    private static string Describe(Exception e) => e switch
    {
        DnsResponseException { Code: DnsResponseCode.ConnectionTimeout } => "timeout",
        DnsResponseException d => d.Code.ToString(),
        OperationCanceledException => "timeout",
        System.Net.Sockets.SocketException s => s.SocketErrorCode.ToString(),
        _ => e.GetType().Name,
    };
}
