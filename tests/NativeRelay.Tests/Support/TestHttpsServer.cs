using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace NativeRelay.Tests.Support;

/// <summary>
/// A small HTTPS server on a loopback address for MTA-STS policies and TLS-RPT uploads: TLS with
/// the certificate the test gives (from <see cref="TestPki"/>), one request per connection, the
/// response the test sets (status, Content-Type, body, extra headers), every request kept
/// (method, path, headers, body). Test-side only: HTTP/1.1 with Content-Length bodies.
/// </summary>
public sealed class TestHttpsServer : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly X509Certificate2 _certificate;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private readonly List<Request> _requests = new();

    public sealed record Request(string Method, string Path, Dictionary<string, string> Headers, byte[] Body);

    public TestHttpsServer(string ip, X509Certificate2 certificate, int port = 0)
    {
        _certificate = certificate;
        _listener = new TcpListener(IPAddress.Parse(ip), port);
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _accepting = AcceptAsync();
    }

    public int Port { get; }

    public int Status { get; set; } = 200;
    public string ContentType { get; set; } = "text/plain";
    public string Body { get; set; } = "";
    public Dictionary<string, string> ExtraHeaders { get; } = new();

    public IReadOnlyList<Request> Requests
    {
        get
        {
            lock (_requests)
                return _requests.ToList();
        }
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }
            catch (SocketException)
            {
                continue;
            }
            _ = ServeAsync(client);
        }
    }

    private async Task ServeAsync(TcpClient client)
    {
        using var _ = client;
        try
        {
            await using var tls = new SslStream(client.GetStream());
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            timeout.CancelAfter(TimeSpan.FromSeconds(30));
            await tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions { ServerCertificate = _certificate }, timeout.Token);
            var head = new MemoryStream();
            var buffer = new byte[1];
            while (!EndsWithBlankLine(head))
            {
                if (await tls.ReadAsync(buffer, timeout.Token) == 0)
                    return;
                head.WriteByte(buffer[0]);
            }
            var lines = Encoding.ASCII.GetString(head.ToArray()).Split("\r\n");
            var start = lines[0].Split(' ');
            var headers = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
            foreach (var line in lines.Skip(1))
            {
                int colon = line.IndexOf(':');
                if (colon > 0)
                    headers[line[..colon].Trim()] = line[(colon + 1)..].Trim();
            }
            var body = new byte[headers.TryGetValue("Content-Length", out var length) ? int.Parse(length) : 0];
            int read = 0;
            while (read < body.Length)
            {
                int n = await tls.ReadAsync(body.AsMemory(read), timeout.Token);
                if (n == 0)
                    break;
                read += n;
            }
            lock (_requests)
                _requests.Add(new Request(start[0], start.Length > 1 ? start[1] : "", headers, body));
            var payload = Encoding.UTF8.GetBytes(Body);
            var response = new StringBuilder($"HTTP/1.1 {Status} X\r\nContent-Length: {payload.Length}\r\nConnection: close\r\n");
            if (ContentType.Length > 0)
                response.Append($"Content-Type: {ContentType}\r\n");
            foreach (var (name, value) in ExtraHeaders)
                response.Append($"{name}: {value}\r\n");
            response.Append("\r\n");
            await tls.WriteAsync(Encoding.ASCII.GetBytes(response.ToString()), timeout.Token);
            await tls.WriteAsync(payload, timeout.Token);
            await tls.FlushAsync(timeout.Token);
        }
        catch (Exception e) when (e is IOException or OperationCanceledException or System.Security.Authentication.AuthenticationException or ObjectDisposedException)
        {
        }
    }

    private static bool EndsWithBlankLine(MemoryStream s)
    {
        if (s.Length < 4)
            return false;
        var b = s.GetBuffer();
        long n = s.Length;
        return b[n - 4] == '\r' && b[n - 3] == '\n' && b[n - 2] == '\r' && b[n - 1] == '\n';
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        try
        {
            await _accepting;
        }
        catch (Exception)
        {
        }
        _stop.Dispose();
    }
}
