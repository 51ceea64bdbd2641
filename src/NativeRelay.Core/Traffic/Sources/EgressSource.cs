using System.Net;
using System.Net.Sockets;
using NativeRelay.Config;
using NativeRelay.Traffic.Shaping;

namespace NativeRelay.Traffic.Sources;

/// <summary>
/// An egress source: the local address outgoing connections bind to, the name said in EHLO from
/// it, and its own limits over every site. The system's default source binds nothing and says
/// the relay's host name. Its limits are shared by every delivery loop: a connection count
/// (interlocked) and smooth token buckets (<see cref="SharedRates"/>, lock-free).
/// </summary>
public sealed class EgressSource
{
    /// <summary>The name of the system's default source.</summary>
    public const string DefaultName = "default";

    private readonly SharedRates? _rates;
    private readonly int _maxConnections;
    private int _connections;

    internal EgressSource(string name, IPAddress? address, string? ehlo, SourceOptions? limits, int index)
    {
        Name = name;
        Address = address;
        Ehlo = ehlo;
        Index = index;
        Hash = (uint)StringComparer.Ordinal.GetHashCode(name) * 0x9E3779B1u;
        MaxConnections = limits?.MaxConnections;
        _maxConnections = limits?.MaxConnections ?? int.MaxValue;
        _rates = limits is null ? null : SharedRates.For(limits.MessagesPerSecond, limits.MessagesPerMinute, limits.MessagesPerHour, limits.MessagesPerDay);
        Limits = limits is null ? ShapingLimits.None : new ShapingLimits
        {
            MaxConnections = limits.MaxConnections,
            MessagesPerSecond = limits.MessagesPerSecond,
            MessagesPerMinute = limits.MessagesPerMinute,
            MessagesPerHour = limits.MessagesPerHour,
            MessagesPerDay = limits.MessagesPerDay,
        };
    }

    public string Name { get; }

    /// <summary>The local address to bind; null for the default source (the kernel picks).</summary>
    public IPAddress? Address { get; }

    /// <summary>The EHLO name from this source; null: the relay's host name.</summary>
    public string? Ehlo { get; }

    /// <summary>Position in the configuration's source list (for per-source caches).</summary>
    internal int Index { get; }

    internal uint Hash { get; }

    /// <summary>The source's own limits over all sites (connections, message rates), for status and check-config.</summary>
    public ShapingLimits Limits { get; }

    public int? MaxConnections { get; }

    /// <summary>Connections open from this source now (all loops).</summary>
    public int Connections => Volatile.Read(ref _connections);

    internal bool HasRates => _rates is not null;

    /// <summary>Takes a connection slot of the source's own limit (always true without one).</summary>
    internal bool TryTakeConnection()
    {
        if (_maxConnections == int.MaxValue)
        {
            Interlocked.Increment(ref _connections);
            return true;
        }
        int seen = Volatile.Read(ref _connections);
        while (seen < _maxConnections)
        {
            int was = Interlocked.CompareExchange(ref _connections, seen + 1, seen);
            if (was == seen)
                return true;
            seen = was;
        }
        return false;
    }

    internal void ReleaseConnection() => Interlocked.Decrement(ref _connections);

    /// <summary>The earliest time (Stopwatch ticks) the source's own rates let a message go; a look.</summary>
    internal long NextSend(long now) => _rates?.Next(now) ?? now;

    /// <summary>Reserves the source's slot at <paramref name="notBefore"/> or later.</summary>
    internal long TakeSend(long notBefore) => _rates?.Take(notBefore) ?? notBefore;

    /// <summary>
    /// Checks that the address is on this host: binds a socket to it (port 0) and closes it. A
    /// source that cannot bind is a configuration error, at start and on reload, with its name.
    /// </summary>
    public void CheckBind()
    {
        if (Address is null)
            return;
        try
        {
            using var socket = new Socket(Address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
            socket.Bind(new IPEndPoint(Address, 0));
        }
        catch (SocketException e)
        {
            throw new ConfigException($"traffic.sources.{Name}: cannot bind {Address} ({e.SocketErrorCode}: {e.Message}); the address must be on this host");
        }
    }

    public string Describe() =>
        (Address is null ? "the system's default address" : Address.ToString())
        + $", EHLO {Ehlo ?? "(the host name)"}"
        + (Limits.IsEmpty ? "" : $", {Limits.Describe()} over all sites");

    public override string ToString() => Name;
}
