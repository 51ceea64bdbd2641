using System.Net;
using System.Net.Sockets;

namespace NativeRelay.Tests.Support;

/// <summary>Test sinks on several loopback addresses, all on one port (the relays' --remote-port: a next hop's several hosts, or a fleet's).</summary>
public sealed class SinkSet : IAsyncDisposable
{
    private readonly List<TestSmtpSink> _sinks;

    private SinkSet(List<TestSmtpSink> sinks)
    {
        _sinks = sinks;
        Port = sinks[0].Port;
    }

    public int Port { get; }

    public TestSmtpSink this[int i] => _sinks[i];

    public static SinkSet Start(params string[] addresses)
    {
        for (int attempt = 0; ; attempt++)
        {
            var sinks = new List<TestSmtpSink>();
            try
            {
                sinks.Add(new TestSmtpSink(IPAddress.Parse(addresses[0]), 0));
                foreach (var address in addresses.Skip(1))
                    sinks.Add(new TestSmtpSink(IPAddress.Parse(address), sinks[0].Port));
                return new SinkSet(sinks);
            }
            catch (SocketException) when (attempt < 5)
            {
                foreach (var s in sinks)
                    s.Dispose(); // that port is taken on one of the addresses: another one
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var s in _sinks)
            await s.DisposeAsync();
    }
}
