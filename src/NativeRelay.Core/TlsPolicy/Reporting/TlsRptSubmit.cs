using System.Text;
using NativeRelay.Config;
using NativeRelay.Local;
using NativeRelay.Message;

namespace NativeRelay.TlsPolicies.Reporting;

/// <summary>
/// How reports reach their mailto: addresses: handed to the relay's own SMTP listener (as
/// sendmail does), so they are queued, signed and delivered like any message, with its retries.
/// And the sender of a configuration: its spool's tls-rpt directory, host name, DNS and CA bundle.
/// </summary>
public static class TlsRptSubmit
{
    public static TlsRptSender.MailSubmitter Through(MailEndpoint server, string heloName) =>
        async (from, to, message, cancel) =>
        {
            var body = MessageBuffer.Rent();
            try
            {
                body.Write(message);
                var result = await SmtpSubmitClient.SubmitAsync(server, heloName, Encoding.UTF8.GetBytes(from), [to],
                    ReadOnlyMemory<byte>.Empty, body, eightBit: false, TimeSpan.FromSeconds(30), TimeSpan.FromMinutes(5), cancel).ConfigureAwait(false);
                return result.Queued ? null : $"{server} did not queue it: {result.Reply}";
            }
            finally
            {
                body.Release();
            }
        };

    public static TlsRptSender Sender(RelaySettings settings, MailEndpoint server)
    {
        var routing = settings.Routing;
        var verifier = routing.TrustAnchors is null ? CertificateVerifier.SystemOnly : new CertificateVerifier(routing.TrustAnchors);
        var dns = new NativeRelay.Routing.DnsClientResolver(routing.DnsServers, routing.DnsTimeout);
        return new TlsRptSender(routing.TlsRptDirectory ?? Path.Combine(settings.SpoolDirectory, "tls-rpt"), settings.Hostname,
            routing.TlsRptOrganization, routing.TlsRptContact, Through(server, settings.Hostname), dns, verifier);
    }
}
