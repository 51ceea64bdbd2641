using System.Net;
using NativeRelay.Config;

namespace NativeRelay.Config
{
    /// <summary>The <c>metrics</c> section: the Prometheus endpoint.</summary>
    public sealed class MetricsOptions
    {
        /// <summary>IP:PORT to serve GET /metrics on; null (the default) turns the endpoint off.</summary>
        public string? Listen { get; set; }

        /// <summary>Per-destination counters keep this many destinations apart; the rest count as "other".</summary>
        public int MaxDestinations { get; set; } = NativeRelay.Telemetry.RelayMetrics.DefaultMaxDestinations;
    }
}

namespace NativeRelay.Telemetry
{
    /// <summary>The validated <c>metrics</c> section; null in <see cref="RelaySettings"/> when the endpoint is off.</summary>
    public sealed record MetricsSettings(IPEndPoint Listen, int MaxDestinations)
    {
        public bool IsLoopback => IPAddress.IsLoopback(Listen.Address);

        public static MetricsSettings? Validate(MetricsOptions? o)
        {
            if (o is null)
                return null;
            if (o.MaxDestinations is < 0 or > 10_000)
                throw new ConfigException("metrics.maxDestinations: 0 to 10000");
            if (string.IsNullOrWhiteSpace(o.Listen))
                return null;
            return new MetricsSettings(RelaySettings.ParseEndPoint(o.Listen.Trim(), "metrics.listen"), o.MaxDestinations);
        }
    }
}
