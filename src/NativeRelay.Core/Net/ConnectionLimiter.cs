using System.Net;

namespace NativeRelay.Net;

/// <summary>
/// Counts live connections in total and per client address, shared by all listeners. A lock is
/// fine here: it is taken twice per connection, not per command.
/// </summary>
public sealed class ConnectionLimiter(int maxTotal, int maxPerAddress)
{
    public enum Admission { Admitted, TooManyTotal, TooManyFromAddress }

    private readonly Dictionary<IPAddress, int> _perAddress = new();
    private int _total;

    public int Current { get { lock (_perAddress) return _total; } }

    public Admission TryAcquire(IPAddress address)
    {
        lock (_perAddress)
        {
            if (_total >= maxTotal)
                return Admission.TooManyTotal;
            _perAddress.TryGetValue(address, out int n);
            if (n >= maxPerAddress)
                return Admission.TooManyFromAddress;
            _perAddress[address] = n + 1;
            _total++;
            return Admission.Admitted;
        }
    }

    public void Release(IPAddress address)
    {
        lock (_perAddress)
        {
            _total--;
            if (_perAddress.TryGetValue(address, out int n))
            {
                if (n <= 1)
                    _perAddress.Remove(address);
                else
                    _perAddress[address] = n - 1;
            }
        }
    }
}
