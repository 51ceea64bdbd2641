using System.Net;
using NativeRelay.Config;
using NativeRelay.Local;

namespace NativeRelay.TlsPolicies.Reporting;

/// <summary>
/// tlsRpt.sendDaily: the relay sends the reports of finished days itself, as
/// 'nativerelay tls-rpt send' would: ten seconds after start, then every hour (a day is sent once,
/// so an hourly look costs a directory listing and catches a day soon after UTC midnight, or
/// after the relay was down). mailto: reports go to the relay's own first SMTP listener.
/// </summary>
public static class TlsRptSchedule
{
    public static async Task RunAsync(RelaySettings settings, IPEndPoint listener, Action<string> log, CancellationToken stopping)
    {
        var address = listener.Address.Equals(IPAddress.Any) ? IPAddress.Loopback
            : listener.Address.Equals(IPAddress.IPv6Any) ? IPAddress.IPv6Loopback : listener.Address;
        var sender = TlsRptSubmit.Sender(settings, new MailEndpoint(address.ToString(), listener.Port, null));
        var wait = TimeSpan.FromSeconds(10);
        while (true)
        {
            try
            {
                await Task.Delay(wait, stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                return;
            }
            wait = TimeSpan.FromHours(1);
            try
            {
                var result = await sender.SendAsync(DateTimeOffset.UtcNow, includeToday: false, stopping).ConfigureAwait(false);
                foreach (var line in result.Lines)
                    log($"TLS-RPT: {line}");
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception e)
            {
                log($"TLS-RPT: sending the reports failed: {e.Message}");
            }
        }
    }
}
