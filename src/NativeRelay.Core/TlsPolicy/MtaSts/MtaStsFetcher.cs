using System.Net;
using System.Security.Authentication;
using System.Net.Security;
using System.Net.Sockets;
using System.Text;
using NativeRelay.Routing;

namespace NativeRelay.TlsPolicies.MtaSts;

/// <summary>The outcome of one policy fetch: the policy, or the failure with its RFC 8460 result type.</summary>
public sealed record MtaStsFetchResult(MtaStsPolicy? Policy, string? Error, string? FailureType);

/// <summary>
/// Fetches "https://mta-sts.DOMAIN/.well-known/mta-sts.txt" (RFC 8461 3.3) with .NET's
/// HttpClient: the host's addresses come from the relay's own resolver (so the operator's DNS,
/// and the tests' DNS, decide where it is), the certificate must chain to the system store or
/// outboundTls.caFile and name the host (the same <see cref="CertificateVerifier"/> as the verify
/// policy), redirects are not followed, the status must be 200, the media type text/plain, the
/// body at most 64 KiB, and the whole fetch bounded in time. Every failure is a result, never an
/// exception: a hostile policy host costs one failed fetch. A handler per fetch: a fetch happens
/// once per domain per max_age, and its certificate check needs the host it is for.
/// </summary>
public sealed class MtaStsFetcher
{
    /// <summary>RFC 8461 3.3: "senders SHOULD impose ... a maximum body size of 64 kilobytes".</summary>
    public const int MaxBodyBytes = 64 * 1024;

    private readonly IDnsResolver _dns;
    private readonly CertificateVerifier _verifier;
    private readonly int _port;
    private readonly TimeSpan _timeout;

    public MtaStsFetcher(IDnsResolver dns, CertificateVerifier verifier, int port = 443, TimeSpan? timeout = null)
    {
        _dns = dns;
        _verifier = verifier;
        _port = port;
        _timeout = timeout ?? TimeSpan.FromSeconds(30);
    }

    public static string PolicyHost(string domain) => "mta-sts." + domain;

    public string Url(string domain) =>
        _port == 443 ? $"https://{PolicyHost(domain)}/.well-known/mta-sts.txt" : $"https://{PolicyHost(domain)}:{_port}/.well-known/mta-sts.txt";

    public async Task<MtaStsFetchResult> FetchAsync(string domain, CancellationToken cancel)
    {
        // The relay does not fetch without OpenSSL (StartupChecks.FetchesMtaSts); this keeps any
        // other caller from a handshake that would abort the process.
        if (NativeRelay.Net.OpenSslLibrary.Problem is { } noSsl)
            return new MtaStsFetchResult(null, $"not fetched: OpenSSL 3 cannot be loaded ({noSsl})", TlsFailureType.StsPolicyFetchError);
        string host = PolicyHost(domain);
        CertificateProblem problem = CertificateProblem.None;
        using var handler = new SocketsHttpHandler
        {
            AllowAutoRedirect = false,
            UseCookies = false,
            UseProxy = false,
            AutomaticDecompression = DecompressionMethods.None,
            MaxResponseHeadersLength = 16, // KiB
            ConnectTimeout = _timeout,
            ConnectCallback = ConnectAsync,
            SslOptions = new SslClientAuthenticationOptions
            {
                TargetHost = host,
                RemoteCertificateValidationCallback = (_, certificate, chain, errors) =>
                {
                    problem = _verifier.Check(certificate, chain, errors, host);
                    return problem == CertificateProblem.None;
                },
            },
        };
        using var http = new HttpClient(handler, disposeHandler: false) { Timeout = Timeout.InfiniteTimeSpan };
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        deadline.CancelAfter(_timeout);
        string url = Url(domain);
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, url);
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, deadline.Token).ConfigureAwait(false);
            if ((int)response.StatusCode is >= 300 and < 400)
                return Fetch($"{url} answered {(int)response.StatusCode} (a redirect, which MTA-STS does not follow)");
            if (response.StatusCode != HttpStatusCode.OK)
                return Fetch($"{url} answered {(int)response.StatusCode}");
            if (response.Content.Headers.ContentType?.MediaType is not { } type || !type.Equals("text/plain", StringComparison.OrdinalIgnoreCase))
                return Invalid($"{url} served Content-Type {response.Content.Headers.ContentType?.ToString() ?? "(none)"}, not text/plain");
            if (response.Content.Headers.ContentLength > MaxBodyBytes)
                return Invalid($"{url} serves {response.Content.Headers.ContentLength} bytes, more than {MaxBodyBytes}");
            var body = new byte[MaxBodyBytes + 1];
            int length = 0;
            await using (var stream = await response.Content.ReadAsStreamAsync(deadline.Token).ConfigureAwait(false))
            {
                int n;
                while (length < body.Length && (n = await stream.ReadAsync(body.AsMemory(length), deadline.Token).ConfigureAwait(false)) > 0)
                    length += n;
            }
            if (length > MaxBodyBytes)
                return Invalid($"{url} serves more than {MaxBodyBytes} bytes");
            string text;
            try
            {
                text = new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(body, 0, length);
            }
            catch (DecoderFallbackException)
            {
                return Invalid($"{url} is not UTF-8 text");
            }
            var policy = MtaStsPolicy.TryParse(text, out string? error);
            return policy is null ? Invalid($"the policy at {url} is invalid: {error}") : new MtaStsFetchResult(policy, null, null);
        }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
        {
            return Fetch($"fetching {url} took more than {_timeout.TotalSeconds:0} s");
        }
        catch (HttpRequestException) when (problem != CertificateProblem.None)
        {
            return new MtaStsFetchResult(null, $"the certificate of {host}: {CertificateVerifier.Describe(problem)}", TlsFailureType.StsWebpkiInvalid);
        }
        catch (Exception e) when (e is HttpRequestException or IOException or SocketException or AuthenticationException)
        {
            return Fetch($"fetching {url} failed: {Innermost(e)}");
        }

        static MtaStsFetchResult Fetch(string why) => new(null, why, TlsFailureType.StsPolicyFetchError);
        static MtaStsFetchResult Invalid(string why) => new(null, why, TlsFailureType.StsPolicyInvalid);
    }

    private static string Innermost(Exception e)
    {
        while (e.InnerException is not null)
            e = e.InnerException;
        return e.Message;
    }

    private ValueTask<Stream> ConnectAsync(SocketsHttpConnectionContext context, CancellationToken cancel) =>
        ConnectThroughAsync(_dns, context.DnsEndPoint, cancel);

    /// <summary>A TCP connection to a host whose addresses come from the relay's resolver (policy hosts, TLS-RPT endpoints), tried in order.</summary>
    public static async ValueTask<Stream> ConnectThroughAsync(IDnsResolver dns, DnsEndPoint target, CancellationToken cancel)
    {
        IPAddress[] addresses;
        if (IPAddress.TryParse(target.Host, out var literal))
            addresses = [literal];
        else
        {
            var answer = await dns.QueryAddressesAsync(target.Host, cancel).ConfigureAwait(false);
            if (answer.Status != DnsStatus.Ok || answer.Addresses.Length == 0)
                throw new HttpRequestException($"{target.Host} has no address ({answer.Status}{(answer.Error is null ? "" : ": " + answer.Error)})");
            addresses = answer.Addresses;
        }
        Exception? last = null;
        foreach (var address in addresses)
        {
            var socket = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            try
            {
                await socket.ConnectAsync(new IPEndPoint(address, target.Port), cancel).ConfigureAwait(false);
                return new NetworkStream(socket, ownsSocket: true);
            }
            catch (SocketException e)
            {
                socket.Dispose();
                last = e;
            }
        }
        throw new HttpRequestException($"cannot connect to {target.Host}:{target.Port}: {last?.Message}", last);
    }
}
