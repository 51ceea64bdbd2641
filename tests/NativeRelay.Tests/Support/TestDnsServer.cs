using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace NativeRelay.Tests.Support;

/// <summary>
/// A real DNS responder over UDP on a loopback address and a free port, for the relay's
/// <c>--dns</c>: it answers MX, A, AAAA, TXT and PTR from a zone the test writes, NXDOMAIN for names it does
/// not know, NODATA (with an SOA for negative caching) for known names without the asked type,
/// SERVFAIL or silence for names the test breaks, and a null MX ("0 .") on request. Every query is
/// counted, so caching can be asserted. Nothing here is timed; answers go out as soon as asked.
/// </summary>
public sealed class TestDnsServer : IAsyncDisposable, IDisposable
{
    private const ushort TypeA = 1, TypeSoa = 6, TypePtr = 12, TypeMx = 15, TypeTxt = 16, TypeAaaa = 28, TypeTlsa = 52;

    private readonly UdpClient _udp;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private readonly object _lock = new();
    private readonly Dictionary<string, List<(int Preference, string Host)>> _mx = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, List<IPAddress>> _a = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, List<IPAddress>> _aaaa = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, List<string>> _txt = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, List<string>> _ptr = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, List<(byte Usage, byte Selector, byte Matching, byte[] Data)>> _tlsa = new(StringComparer.OrdinalIgnoreCase);
    private readonly HashSet<string> _insecure = new(StringComparer.OrdinalIgnoreCase);
    private readonly HashSet<string> _exists = new(StringComparer.OrdinalIgnoreCase);
    private readonly HashSet<string> _servFail = new(StringComparer.OrdinalIgnoreCase);
    private readonly HashSet<string> _silent = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, uint> _ttl = new(StringComparer.OrdinalIgnoreCase);
    private readonly ConcurrentDictionary<string, int> _queries = new(StringComparer.OrdinalIgnoreCase);

    /// <summary>Starts the responder on <paramref name="ip"/> and a port the system picks.</summary>
    public TestDnsServer(string ip = "127.0.0.1")
    {
        _udp = new UdpClient(new IPEndPoint(IPAddress.Parse(ip), 0));
        EndPoint = (IPEndPoint)_udp.Client.LocalEndPoint!;
        _loop = Task.Run(ServeAsync);
    }

    public IPEndPoint EndPoint { get; }

    /// <summary>"IP:PORT", the form of the relay's --dns flag.</summary>
    public string Address => $"{EndPoint.Address}:{EndPoint.Port}";

    /// <summary>TTL of positive answers unless set per name.</summary>
    public uint DefaultTtl { get; set; } = 300;

    /// <summary>The SOA MINIMUM (and SOA TTL) sent with negative answers (RFC 2308).</summary>
    public uint NegativeTtl { get; set; } = 300;

    public int TotalQueries => _queries.Values.Sum();

    /// <summary>Sets a domain's MX records (replacing any).</summary>
    public TestDnsServer Mx(string domain, params (int Preference, string Host)[] records)
    {
        lock (_lock)
            _mx[Norm(domain)] = records.Select(r => (r.Preference, Norm(r.Host))).ToList();
        return this;
    }

    /// <summary>A null MX (RFC 7505): "0 ." as the domain's only MX.</summary>
    public TestDnsServer NullMx(string domain)
    {
        lock (_lock)
            _mx[Norm(domain)] = [(0, "")];
        return this;
    }

    public TestDnsServer A(string host, params string[] addresses)
    {
        lock (_lock)
            _a[Norm(host)] = addresses.Select(IPAddress.Parse).ToList();
        return this;
    }

    public TestDnsServer Aaaa(string host, params string[] addresses)
    {
        lock (_lock)
            _aaaa[Norm(host)] = addresses.Select(IPAddress.Parse).ToList();
        return this;
    }

    /// <summary>
    /// Sets a name's TXT records (replacing any). Each record longer than 255 octets goes out as
    /// several character-strings, as a zone file splits it; resolvers join them again.
    /// </summary>
    public TestDnsServer Txt(string name, params string[] records)
    {
        lock (_lock)
            _txt[Norm(name)] = records.ToList();
        return this;
    }

    /// <summary>
    /// Answer as a validating resolver whose zones are signed: every answer (positive or negative)
    /// carries the AD bit (RFC 4035 3.2.3), except for the names marked <see cref="Insecure"/>.
    /// </summary>
    public bool Dnssec { get; set; }

    /// <summary>Answers for this name never carry the AD bit (an unsigned zone, or a resolver that does not validate it).</summary>
    public TestDnsServer Insecure(string name, bool on = true)
    {
        lock (_lock)
        {
            if (on) _insecure.Add(Norm(name));
            else _insecure.Remove(Norm(name));
        }
        return this;
    }

    /// <summary>Sets a name's TLSA records (RFC 6698), replacing any; the name is e.g. "_25._tcp.mx.example.test".</summary>
    public TestDnsServer Tlsa(string name, params (byte Usage, byte Selector, byte Matching, byte[] Data)[] records)
    {
        lock (_lock)
            _tlsa[Norm(name)] = records.ToList();
        return this;
    }

    /// <summary>Sets the PTR names of an address (its in-addr.arpa or ip6.arpa name), replacing any.</summary>
    public TestDnsServer Ptr(string address, params string[] names)
    {
        lock (_lock)
            _ptr[ArpaName(IPAddress.Parse(address))] = names.Select(Norm).ToList();
        return this;
    }

    /// <summary>The name exists (NOERROR) even without records: questions about it get NODATA.</summary>
    public TestDnsServer Exists(string name)
    {
        lock (_lock)
            _exists.Add(Norm(name));
        return this;
    }

    /// <summary>Removes every record of a name: it becomes NXDOMAIN.</summary>
    public TestDnsServer Remove(string name)
    {
        lock (_lock)
        {
            name = Norm(name);
            _mx.Remove(name);
            _a.Remove(name);
            _aaaa.Remove(name);
            _txt.Remove(name);
            _ptr.Remove(name);
            _exists.Remove(name);
        }
        return this;
    }

    /// <summary>Every question about the name gets SERVFAIL (or, with false, answers again).</summary>
    public TestDnsServer ServFail(string name, bool on = true)
    {
        lock (_lock)
        {
            if (on)
                _servFail.Add(Norm(name));
            else
                _servFail.Remove(Norm(name));
        }
        return this;
    }

    /// <summary>Questions about the name get no answer at all (the client times out).</summary>
    public TestDnsServer Silent(string name, bool on = true)
    {
        lock (_lock)
        {
            if (on)
                _silent.Add(Norm(name));
            else
                _silent.Remove(Norm(name));
        }
        return this;
    }

    /// <summary>The TTL of every positive answer about this name.</summary>
    public TestDnsServer Ttl(string name, uint seconds)
    {
        lock (_lock)
            _ttl[Norm(name)] = seconds;
        return this;
    }

    /// <summary>How many questions of this type ("MX", "A", "AAAA") about this name arrived.</summary>
    public int Queries(string name, string type) => _queries.TryGetValue($"{Norm(name)}/{type}", out int n) ? n : 0;

    public string Describe()
    {
        var counts = string.Join(", ", _queries.OrderBy(p => p.Key).Select(p => $"{p.Key}={p.Value}"));
        return $"--- test DNS {Address}: queries {counts} ---";
    }

    /// <summary>"3.2.0.192.in-addr.arpa", or the 32 nibbles of an IPv6 address under ip6.arpa.</summary>
    private static string ArpaName(IPAddress address)
    {
        var bytes = address.GetAddressBytes();
        if (bytes.Length == 4)
            return $"{bytes[3]}.{bytes[2]}.{bytes[1]}.{bytes[0]}.in-addr.arpa";
        var nibbles = new StringBuilder();
        for (int i = bytes.Length - 1; i >= 0; i--)
            nibbles.Append($"{bytes[i] & 15:x}.{bytes[i] >> 4:x}.");
        return nibbles + "ip6.arpa";
    }

    private static string Norm(string name) => name.Trim().TrimEnd('.').ToLowerInvariant();

    private async Task ServeAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            UdpReceiveResult request;
            try
            {
                request = await _udp.ReceiveAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }
            byte[]? response;
            try
            {
                response = Answer(request.Buffer);
            }
            catch (Exception)
            {
                response = null; // a query this responder cannot parse: no answer
            }
            if (response is null)
                continue;
            try
            {
                await _udp.SendAsync(response, request.RemoteEndPoint, _stop.Token).ConfigureAwait(false);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException)
            {
            }
        }
    }

    private byte[]? Answer(byte[] query)
    {
        if (query.Length < 12)
            return null;
        ushort id = BinaryPrimitives.ReadUInt16BigEndian(query);
        ushort flags = BinaryPrimitives.ReadUInt16BigEndian(query.AsSpan(2));
        int offset = 12;
        var labels = new List<string>();
        while (query[offset] != 0)
        {
            int length = query[offset++];
            labels.Add(Encoding.ASCII.GetString(query, offset, length));
            offset += length;
        }
        offset++;
        ushort qtype = BinaryPrimitives.ReadUInt16BigEndian(query.AsSpan(offset));
        int questionEnd = offset + 4;
        string name = Norm(string.Join('.', labels));
        string typeName = qtype switch { TypeA => "A", TypeAaaa => "AAAA", TypeMx => "MX", TypeTxt => "TXT", TypePtr => "PTR", TypeTlsa => "TLSA", _ => qtype.ToString() };
        _queries.AddOrUpdate($"{name}/{typeName}", 1, (_, n) => n + 1);

        int rcode = 0;
        var answers = new List<byte[]>();
        bool exists;
        uint ttl;
        bool authentic;
        lock (_lock)
        {
            authentic = Dnssec && !_insecure.Contains(name);
            if (_silent.Contains(name))
                return null;
            if (_servFail.Contains(name))
                rcode = 2;
            exists = _mx.ContainsKey(name) || _a.ContainsKey(name) || _aaaa.ContainsKey(name) || _txt.ContainsKey(name) || _ptr.ContainsKey(name) || _tlsa.ContainsKey(name) || _exists.Contains(name);
            ttl = _ttl.TryGetValue(name, out uint t) ? t : DefaultTtl;
            if (rcode == 0 && !exists)
                rcode = 3;
            if (rcode == 0)
            {
                if (qtype == TypeMx && _mx.TryGetValue(name, out var mx))
                    foreach (var (preference, host) in mx)
                        answers.Add(Record(TypeMx, ttl, MxData(preference, host)));
                if (qtype == TypeA && _a.TryGetValue(name, out var a))
                    foreach (var address in a)
                        answers.Add(Record(TypeA, ttl, address.GetAddressBytes()));
                if (qtype == TypeAaaa && _aaaa.TryGetValue(name, out var aaaa))
                    foreach (var address in aaaa)
                        answers.Add(Record(TypeAaaa, ttl, address.GetAddressBytes()));
                if (qtype == TypeTxt && _txt.TryGetValue(name, out var txt))
                    foreach (var text in txt)
                        answers.Add(Record(TypeTxt, ttl, TxtData(text)));
                if (qtype == TypeTlsa && _tlsa.TryGetValue(name, out var tlsa))
                    foreach (var (usage, selector, matching, data) in tlsa)
                        answers.Add(Record(TypeTlsa, ttl, [usage, selector, matching, .. data]));
                if (qtype == TypePtr && _ptr.TryGetValue(name, out var ptr))
                    foreach (var host in ptr)
                        answers.Add(Record(TypePtr, ttl, EncodeName(host)));
            }
        }

        // A negative answer (NXDOMAIN or NODATA) carries the zone's SOA: its MINIMUM is the negative TTL.
        bool negative = rcode == 3 || (rcode == 0 && answers.Count == 0);
        var response = new List<byte>(512);
        var header = new byte[12];
        BinaryPrimitives.WriteUInt16BigEndian(header, id);
        ushort responseFlags = (ushort)(0x8000 | (flags & 0x7800) | 0x0400 | (flags & 0x0100) | 0x0080 | (authentic && rcode != 2 ? 0x0020 : 0) | rcode);
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(2), responseFlags);
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(4), 1);
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(6), (ushort)answers.Count);
        BinaryPrimitives.WriteUInt16BigEndian(header.AsSpan(8), (ushort)(negative ? 1 : 0));
        response.AddRange(header);
        response.AddRange(query.AsSpan(12, questionEnd - 12).ToArray());
        foreach (var answer in answers)
            response.AddRange(answer);
        if (negative)
            response.AddRange(Record(TypeSoa, NegativeTtl, SoaData(NegativeTtl)));
        return response.ToArray();
    }

    // Owner: a pointer to the question's name at offset 12.
    private static byte[] Record(ushort type, uint ttl, byte[] data)
    {
        var record = new byte[12 + data.Length];
        record[0] = 0xC0;
        record[1] = 12;
        BinaryPrimitives.WriteUInt16BigEndian(record.AsSpan(2), type);
        BinaryPrimitives.WriteUInt16BigEndian(record.AsSpan(4), 1);
        BinaryPrimitives.WriteUInt32BigEndian(record.AsSpan(6), ttl);
        BinaryPrimitives.WriteUInt16BigEndian(record.AsSpan(10), (ushort)data.Length);
        data.CopyTo(record, 12);
        return record;
    }

    private static byte[] MxData(int preference, string host)
    {
        var name = EncodeName(host);
        var data = new byte[2 + name.Length];
        BinaryPrimitives.WriteUInt16BigEndian(data, (ushort)preference);
        name.CopyTo(data, 2);
        return data;
    }

    private static byte[] TxtData(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var data = new List<byte>(bytes.Length + bytes.Length / 255 + 1);
        int offset = 0;
        do
        {
            int length = Math.Min(255, bytes.Length - offset);
            data.Add((byte)length);
            data.AddRange(bytes.AsSpan(offset, length).ToArray());
            offset += length;
        } while (offset < bytes.Length);
        return data.ToArray();
    }

    private static byte[] SoaData(uint minimum)
    {
        var data = new List<byte>();
        data.AddRange(EncodeName("ns.test"));
        data.AddRange(EncodeName("hostmaster.test"));
        var numbers = new byte[20];
        BinaryPrimitives.WriteUInt32BigEndian(numbers, 1);
        BinaryPrimitives.WriteUInt32BigEndian(numbers.AsSpan(4), 3600);
        BinaryPrimitives.WriteUInt32BigEndian(numbers.AsSpan(8), 600);
        BinaryPrimitives.WriteUInt32BigEndian(numbers.AsSpan(12), 86400);
        BinaryPrimitives.WriteUInt32BigEndian(numbers.AsSpan(16), minimum);
        data.AddRange(numbers);
        return data.ToArray();
    }

    private static byte[] EncodeName(string name)
    {
        var bytes = new List<byte>();
        if (name.Length > 0)
        {
            foreach (var label in name.Split('.'))
            {
                bytes.Add((byte)label.Length);
                bytes.AddRange(Encoding.ASCII.GetBytes(label));
            }
        }
        bytes.Add(0);
        return bytes.ToArray();
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested)
            return;
        _stop.Cancel();
        _udp.Dispose();
        await Task.WhenAny(_loop, Task.Delay(TimeSpan.FromSeconds(5))).ConfigureAwait(false);
        _stop.Dispose();
    }

    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();
}
