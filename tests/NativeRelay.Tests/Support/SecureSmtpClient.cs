using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Authentication;
using System.Security.Cryptography.X509Certificates;
using System.Text;

namespace NativeRelay.Tests.Support;

/// <summary>
/// A raw SMTP client that can switch to TLS (STARTTLS, or implicit TLS from the first byte) and
/// can AUTH, for the TLS, AUTH and limit tests. Any server certificate is accepted (the tests
/// make their own); the one presented is kept for assertions. Every read is bounded.
/// </summary>
public sealed class SecureSmtpClient : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly List<string> _transcript = new();
    private Stream _stream;
    private SmtpLineReader _reader;

    private SecureSmtpClient(Socket socket)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _reader = new SmtpLineReader(_stream);
    }

    public TimeSpan ReplyTimeout { get; set; } = TimeSpan.FromSeconds(30);

    public SslStream? Tls { get; private set; }

    public X509Certificate2? ServerCertificate { get; private set; }

    /// <summary>True when bytes arrived that no reply read has consumed yet.</summary>
    public bool HasBufferedData => _reader.HasBufferedData;

    public string Transcript
    {
        get { lock (_transcript) { return string.Join("\n", _transcript.TakeLast(80)); } }
    }

    /// <summary>Connects to 127.0.0.1:port; with <paramref name="implicitTls"/> the handshake comes first. Does not read the greeting.</summary>
    public static async Task<SecureSmtpClient> ConnectAsync(int port, bool implicitTls = false)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using (var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30)))
        {
            try
            {
                await socket.ConnectAsync(new IPEndPoint(IPAddress.Loopback, port), cts.Token).ConfigureAwait(false);
            }
            catch
            {
                socket.Dispose();
                throw;
            }
        }

        var client = new SecureSmtpClient(socket);
        if (implicitTls)
        {
            await client.HandshakeAsync().ConfigureAwait(false);
        }

        return client;
    }

    /// <summary>Connects, reads the 220 greeting and sends EHLO (expecting 250).</summary>
    public static async Task<SecureSmtpClient> ConnectEhloAsync(int port, bool implicitTls = false)
    {
        var client = await ConnectAsync(port, implicitTls).ConfigureAwait(false);
        await client.ExpectGreetingAsync().ConfigureAwait(false);
        await client.ExpectAsync("EHLO client.test", 250).ConfigureAwait(false);
        return client;
    }

    public async Task ExpectGreetingAsync()
    {
        var greeting = await ReadReplyAsync().ConfigureAwait(false);
        if (greeting.Code != 220)
        {
            throw new Xunit.Sdk.XunitException($"Expected a 220 greeting, got {greeting}.\n{Transcript}");
        }
    }

    /// <summary>TLS client handshake over the current connection; accepts any certificate.</summary>
    public async Task HandshakeAsync(SslProtocols protocols = SslProtocols.None)
    {
        if (_reader.HasBufferedData)
        {
            throw new Xunit.Sdk.XunitException($"The server sent bytes after its 220 to STARTTLS, before the handshake.\n{Transcript}");
        }

        var ssl = new SslStream(_stream, leaveInnerStreamOpen: false);
        using var cts = new CancellationTokenSource(ReplyTimeout);
        await ssl.AuthenticateAsClientAsync(new SslClientAuthenticationOptions
        {
            TargetHost = "relay.test",
            EnabledSslProtocols = protocols,
            RemoteCertificateValidationCallback = (_, _, _, _) => true,
        }, cts.Token).ConfigureAwait(false);
        Tls = ssl;
        ServerCertificate = ssl.RemoteCertificate is null ? null : new X509Certificate2(ssl.RemoteCertificate);
        _stream = ssl;
        _reader = new SmtpLineReader(ssl);
        Log($"-- TLS {ssl.SslProtocol} {ssl.NegotiatedCipherSuite}, server certificate {ServerCertificate?.Subject} --");
    }

    /// <summary>STARTTLS (expects 220), then the handshake.</summary>
    public async Task StartTlsAsync()
    {
        await ExpectAsync("STARTTLS", 220).ConfigureAwait(false);
        await HandshakeAsync().ConfigureAwait(false);
    }

    /// <summary>AUTH PLAIN with an initial response; returns the reply.</summary>
    public Task<SmtpReply> AuthPlainAsync(string user, string password) =>
        CommandAsync("AUTH PLAIN " + Convert.ToBase64String(Encoding.UTF8.GetBytes($"\0{user}\0{password}")));

    /// <summary>AUTH LOGIN in three steps; returns the last reply (or the first that was not 334).</summary>
    public async Task<SmtpReply> AuthLoginAsync(string user, string password)
    {
        var reply = await CommandAsync("AUTH LOGIN").ConfigureAwait(false);
        if (reply.Code != 334)
        {
            return reply;
        }

        reply = await CommandAsync(Convert.ToBase64String(Encoding.UTF8.GetBytes(user))).ConfigureAwait(false);
        if (reply.Code != 334)
        {
            return reply;
        }

        return await CommandAsync(Convert.ToBase64String(Encoding.UTF8.GetBytes(password))).ConfigureAwait(false);
    }

    public async Task<SmtpReply> ReadReplyAsync() =>
        await TryReadReplyAsync().ConfigureAwait(false)
        ?? throw new SmtpConnectionClosedException($"The server closed the connection instead of replying.\n{Transcript}");

    /// <summary>Reads one reply, or null when the server closed (or reset) the connection.</summary>
    public async Task<SmtpReply?> TryReadReplyAsync()
    {
        using var cts = new CancellationTokenSource(ReplyTimeout);
        var lines = new List<string>();
        int code = 0;
        while (true)
        {
            byte[]? raw;
            try
            {
                raw = await _reader.ReadLineAsync(cts.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"No complete reply within {ReplyTimeout.TotalSeconds:0} s.\n{Transcript}");
            }
            catch (IOException ex)
            {
                Log($"S: <connection ended: {ex.Message}>");
                return null;
            }

            if (raw is null || raw.Length == 0 || raw[^1] != '\n')
            {
                Log(raw is { Length: > 0 } ? $"S: {Show(raw)} <closed mid-line>" : "S: <closed>");
                return null;
            }

            string line = Encoding.UTF8.GetString(raw).TrimEnd('\r', '\n');
            Log("S: " + Show(raw));
            if (line.Length < 3 || !int.TryParse(line.AsSpan(0, 3), out int lineCode) || (line.Length > 3 && line[3] != ' ' && line[3] != '-'))
            {
                throw new InvalidDataException($"Malformed reply line '{line}'.\n{Transcript}");
            }

            code = code == 0 ? lineCode : code;
            lines.Add(line.Length > 4 ? line[4..] : "");
            if (line.Length == 3 || line[3] == ' ')
            {
                return new SmtpReply(code, lines);
            }
        }
    }

    public async Task<SmtpReply> CommandAsync(string command)
    {
        await SendRawAsync(command + "\r\n").ConfigureAwait(false);
        return await ReadReplyAsync().ConfigureAwait(false);
    }

    public async Task<SmtpReply> ExpectAsync(string command, int expectedCode)
    {
        var reply = await CommandAsync(command).ConfigureAwait(false);
        if (reply.Code != expectedCode)
        {
            throw new Xunit.Sdk.XunitException($"'{command}': expected {expectedCode}, got {reply}.\n{Transcript}");
        }

        return reply;
    }

    public Task SendRawAsync(string text) => SendRawAsync(Encoding.UTF8.GetBytes(text));

    public async Task SendRawAsync(byte[] bytes)
    {
        Log("C: " + Show(bytes));
        using var cts = new CancellationTokenSource(ReplyTimeout);
        await _stream.WriteAsync(bytes, cts.Token).ConfigureAwait(false);
        await _stream.FlushAsync(cts.Token).ConfigureAwait(false);
    }

    public async Task<IReadOnlyList<SmtpReply>> ReadRepliesAsync(int count)
    {
        var replies = new List<SmtpReply>(count);
        for (int i = 0; i < count; i++)
        {
            replies.Add(await ReadReplyAsync().ConfigureAwait(false));
        }

        return replies;
    }

    /// <summary>MAIL, RCPTs, DATA (each expected to succeed), the dot-stuffed message; returns the final reply.</summary>
    public async Task<SmtpReply> SendMessageAsync(string from, IEnumerable<string> recipients, byte[] data, string? mailParameters = null)
    {
        await ExpectAsync($"MAIL FROM:<{from}>" + (mailParameters is null ? "" : " " + mailParameters), 250).ConfigureAwait(false);
        foreach (var rcpt in recipients)
        {
            await ExpectAsync($"RCPT TO:<{rcpt}>", 250).ConfigureAwait(false);
        }

        await ExpectAsync("DATA", 354).ConfigureAwait(false);
        await SendRawAsync(TestSmtpClient.DotStuff(data)).ConfigureAwait(false);
        return await ReadReplyAsync().ConfigureAwait(false);
    }

    /// <summary>Reads replies until the server closes, up to the timeout (then throws).</summary>
    public async Task<IReadOnlyList<SmtpReply>> ReadUntilClosedAsync(TimeSpan timeout)
    {
        var saved = ReplyTimeout;
        var deadline = DateTime.UtcNow + timeout;
        var replies = new List<SmtpReply>();
        try
        {
            while (true)
            {
                var left = deadline - DateTime.UtcNow;
                if (left <= TimeSpan.Zero)
                {
                    throw new TimeoutException($"The server did not close the connection within {timeout.TotalSeconds:0} s.\n{Transcript}");
                }

                ReplyTimeout = left;
                var reply = await TryReadReplyAsync().ConfigureAwait(false);
                if (reply is null)
                {
                    return replies;
                }

                replies.Add(reply);
            }
        }
        finally
        {
            ReplyTimeout = saved;
        }
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
        }

        try
        {
            await _stream.DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
        }
    }

    private void Log(string entry)
    {
        lock (_transcript)
        {
            _transcript.Add(entry);
            if (_transcript.Count > 1000)
            {
                _transcript.RemoveRange(0, 500);
            }
        }
    }

    private static string Show(byte[] bytes)
    {
        string s = Encoding.Latin1.GetString(bytes, 0, Math.Min(bytes.Length, 300)).Replace("\r", "\\r").Replace("\n", "\\n");
        return bytes.Length > 300 ? s + $"... ({bytes.Length} bytes)" : s;
    }
}
