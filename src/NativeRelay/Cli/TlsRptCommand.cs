using System.CommandLine;
using System.Net;
using NativeRelay.Config;
using NativeRelay.Local;
using NativeRelay.Net;
using NativeRelay.TlsPolicies.Reporting;

namespace NativeRelay.Cli;

/// <summary>
/// <c>nativerelay tls-rpt send</c>: builds and sends the pending TLS-RPT reports (RFC 8460) of the
/// relay's spool now, with <see cref="TlsRptSender"/>: the same code the relay's daily schedule
/// (tlsRpt.sendDaily) runs. mailto: reports are handed to the relay's SMTP listener.
/// Exit codes: 0 every report sent (or none pending), 1 some could not be sent, 2 usage or configuration error.
/// </summary>
internal static class TlsRptCommand
{
    private static readonly Option<string> Config = Flags.Text("--config", "FILE", "the relay's configuration (spool, host name, DNS, CA bundle, listener)");
    private static readonly Option<string> Spool = Flags.Text("--spool", "DIR", "the spool whose tls-rpt directory holds the counts",
        $"the configuration's, else {new RelayOptions().Spool}");
    private static readonly Option<string> Server = Flags.Text("--server", "HOST:PORT", "the relay that queues mailto: reports",
        "the configuration's first SMTP listener, else 127.0.0.1:2525");
    private static readonly Option<string[]> Dns = Flags.Repeatable("--dns", "IP:PORT", "DNS server for https: report hosts", shown: "the configuration's, else /etc/resolv.conf");
    private static readonly Option<string> CaFile = Flags.Text("--ca-file", "PEM", "extra trust anchors for https: report hosts", "the configuration's, else the system store only");
    private static readonly Option<bool> Today = Flags.Switch("--include-today", "also report today so far (normally only finished UTC days are)");

    public static Command Build()
    {
        var send = new VerbCommand("send", "Build and send the pending TLS-RPT reports now.",
            """
            For every finished UTC day with counts in SPOOL/tls-rpt/ and a domain that publishes an
            _smtp._tls record, builds the RFC 8460 report (JSON, gzip) and sends it to each rua:
            mailto: through the relay's queue, https: by POST. Sent days are kept as DOMAIN.json.sent.
            Exit codes: 0 sent (or nothing pending), 1 some reports could not be sent, 2 usage or configuration error.
            """)
        {
            Config, Spool, Server, Dns, CaFile, Today,
        };
        send.SetAction((result, cancel) => SendAsync(result.ValueOrNull(Config), result.ValueOrNull(Spool), result.ValueOrNull(Server),
            result.ValueOrNull(Dns), result.ValueOrNull(CaFile), result.GetValue(Today), cancel));
        return new VerbCommand("tls-rpt", "Send SMTP TLS reports (RFC 8460).",
            """
            The relay counts each day's TLS outcomes for the domains that publish _smtp._tls (tlsRpt in
            docs/CONFIG.md); 'tls-rpt send' sends the reports of finished days now.
            """)
        {
            send,
        };
    }

    private static async Task<int> SendAsync(string? configPath, string? spool, string? server, string[]? dns, string? caFile,
        bool includeToday, CancellationToken cancel)
    {
        var options = configPath is null ? new RelayOptions() : RelaySettings.LoadFile(configPath);
        if (spool is not null)
            options.Spool = spool;
        if (dns is { Length: > 0 })
            options.Routing.Dns = [.. dns];
        if (caFile is not null)
            options.OutboundTls.CaFile = caFile;
        var settings = RelaySettings.Validate(options);
        MailEndpoint endpoint;
        if (server is not null)
        {
            var hop = NextHop.Parse(server, "--server");
            endpoint = new MailEndpoint(hop.Host, hop.Port, null);
        }
        else
        {
            IPEndPoint listen = settings.Listeners.FirstOrDefault(l => l.Kind == ListenerKind.Smtp)?.EndPoint
                                ?? settings.Listen.FirstOrDefault() ?? new IPEndPoint(IPAddress.Loopback, 2525);
            var address = listen.Address.Equals(IPAddress.Any) ? IPAddress.Loopback
                : listen.Address.Equals(IPAddress.IPv6Any) ? IPAddress.IPv6Loopback : listen.Address;
            endpoint = new MailEndpoint(address.ToString(), listen.Port, null);
        }
        var sender = TlsRptSubmit.Sender(settings, endpoint);
        var outcome = await sender.SendAsync(DateTimeOffset.UtcNow, includeToday, cancel);
        foreach (var line in outcome.Lines)
            Console.WriteLine(line);
        Console.WriteLine($"tls-rpt: {outcome.Reports} report(s), {outcome.Sent} sent, {outcome.Failed} not sent, {outcome.Skipped} without a record");
        return outcome.Failed == 0 ? 0 : 1;
    }
}
