using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace NativeRelay.Tests.Support;

/// <summary>One LMTP transaction as the test server saw it: the data is dot-unstuffed.</summary>
public sealed record LmtpTransaction(string LhloName, string MailFrom, IReadOnlyList<string> AcceptedRecipients, byte[] Data)
{
    public string DataText => Encoding.Latin1.GetString(Data);
}

/// <summary>
/// A small LMTP server (RFC 2033) for tests, on 127.0.0.1 or a Unix domain socket. RCPT replies
/// and the per-recipient replies after the data come from callbacks, so a test can have one
/// recipient delivered, one refused and one deferred in the same transaction. Strictly lines
/// ending in CRLF; it reads commands one at a time, so it also works with pipelined clients.
/// </summary>
public sealed class TestLmtpServer : IAsyncDisposable
{
    private readonly Socket _listener;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private readonly ConcurrentQueue<LmtpTransaction> _transactions = new();
    private readonly ConcurrentQueue<string> _log = new();
    private readonly string? _unixPath;

    private TestLmtpServer(Socket listener, string? unixPath)
    {
        _listener = listener;
        _unixPath = unixPath;
        _accepting = AcceptAsync();
    }

    /// <summary>Listens on 127.0.0.1 with a port the system picks.</summary>
    public static TestLmtpServer StartTcp()
    {
        var s = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        s.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        s.Listen(16);
        return new TestLmtpServer(s, null);
    }

    /// <summary>Listens on a Unix domain socket at this path.</summary>
    public static TestLmtpServer StartUnix(string path)
    {
        var s = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        s.Bind(new UnixDomainSocketEndPoint(path));
        s.Listen(16);
        return new TestLmtpServer(s, path);
    }

    /// <summary>"127.0.0.1:PORT" or "unix:/path": the form the config takes.</summary>
    public string Endpoint => _unixPath is not null ? "unix:" + _unixPath : $"127.0.0.1:{((IPEndPoint)_listener.LocalEndPoint!).Port}";

    public bool OfferPipelining { get; set; } = true;

    /// <summary>The reply line to RCPT for an address (default "250 2.1.5 OK").</summary>
    public Func<string, string>? RcptReply { get; set; }

    /// <summary>The reply line after the data for one accepted address (default "250 2.0.0 &lt;addr&gt; saved").</summary>
    public Func<string, string>? DataReply { get; set; }

    /// <summary>After this many per-recipient replies following the data, the connection is dropped (-1: never).</summary>
    public int DropAfterDataReplies { get; set; } = -1;

    public IReadOnlyList<LmtpTransaction> Transactions => _transactions.ToArray();

    public int Connections;

    /// <summary>Every command line received, in order, for assertion messages.</summary>
    public string Log => string.Join("\n", _log);

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            Socket client;
            try
            {
                client = await _listener.AcceptAsync(_stop.Token);
            }
            catch (Exception e) when (e is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }
            Interlocked.Increment(ref Connections);
            _ = ServeAsync(client);
        }
    }

    private async Task ServeAsync(Socket socket)
    {
        using var _ = socket;
        await using var stream = new NetworkStream(socket, ownsSocket: false);
        var reader = new LineReader(stream);
        async Task Send(string text) => await stream.WriteAsync(Encoding.Latin1.GetBytes(text));
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
        timeout.CancelAfter(TimeSpan.FromSeconds(60));
        try
        {
            await Send("220 lmtp.test LMTP ready\r\n");
            string lhlo = "";
            string? from = null;
            var accepted = new List<string>();
            while (true)
            {
                var line = await reader.ReadLineAsync(timeout.Token);
                if (line is null)
                    return;
                _log.Enqueue(line);
                var upper = line.ToUpperInvariant();
                if (upper.StartsWith("LHLO "))
                {
                    lhlo = line[5..];
                    await Send("250-lmtp.test\r\n" + (OfferPipelining ? "250-PIPELINING\r\n" : "") + "250-ENHANCEDSTATUSCODES\r\n250 8BITMIME\r\n");
                }
                else if (upper.StartsWith("MAIL FROM:"))
                {
                    from = Path(line[10..]);
                    accepted.Clear();
                    await Send("250 2.1.0 OK\r\n");
                }
                else if (upper.StartsWith("RCPT TO:"))
                {
                    var rcpt = Path(line[8..]);
                    var reply = from is null ? "503 5.5.1 MAIL first" : RcptReply?.Invoke(rcpt) ?? "250 2.1.5 OK";
                    if (reply.StartsWith('2'))
                        accepted.Add(rcpt);
                    await Send(reply + "\r\n");
                }
                else if (upper == "DATA")
                {
                    if (from is null || accepted.Count == 0)
                    {
                        await Send("503 5.5.1 no valid recipients\r\n");
                        continue;
                    }
                    await Send("354 go ahead\r\n");
                    var data = new MemoryStream();
                    while (true)
                    {
                        var d = await reader.ReadLineAsync(timeout.Token);
                        if (d is null)
                            return;
                        if (d == ".")
                            break;
                        if (d.StartsWith('.'))
                            d = d[1..];
                        data.Write(Encoding.Latin1.GetBytes(d + "\r\n"));
                    }
                    _transactions.Enqueue(new LmtpTransaction(lhlo, from, accepted.ToArray(), data.ToArray()));
                    int n = 0;
                    foreach (var rcpt in accepted)
                    {
                        if (DropAfterDataReplies >= 0 && n == DropAfterDataReplies)
                            return;
                        await Send((DataReply?.Invoke(rcpt) ?? $"250 2.0.0 <{rcpt}> saved") + "\r\n");
                        n++;
                    }
                    from = null;
                    accepted.Clear();
                }
                else if (upper == "RSET")
                {
                    from = null;
                    accepted.Clear();
                    await Send("250 2.0.0 OK\r\n");
                }
                else if (upper == "QUIT")
                {
                    await Send("221 2.0.0 bye\r\n");
                    return;
                }
                else
                {
                    await Send("500 5.5.2 unknown command\r\n");
                }
            }
        }
        catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
        }
    }

    private static string Path(string arg)
    {
        arg = arg.Trim();
        int close = arg.IndexOf('>');
        return arg.StartsWith('<') && close > 0 ? arg[1..close] : arg.Split(' ')[0];
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Dispose();
        await _accepting;
        if (_unixPath is not null)
            File.Delete(_unixPath);
    }

    /// <summary>Reads CRLF-terminated lines as Latin-1; a bare LF is an error in the test (the client must send CRLF).</summary>
    private sealed class LineReader(Stream stream)
    {
        private readonly byte[] _buffer = new byte[64 * 1024];
        private int _start, _end;

        public async Task<string?> ReadLineAsync(CancellationToken cancel)
        {
            while (true)
            {
                int lf = Array.IndexOf(_buffer, (byte)'\n', _start, _end - _start);
                if (lf >= 0)
                {
                    if (lf == _start || _buffer[lf - 1] != '\r')
                        throw new IOException("bare LF from the client");
                    var line = Encoding.Latin1.GetString(_buffer, _start, lf - 1 - _start);
                    _start = lf + 1;
                    return line;
                }
                if (_start > 0)
                {
                    Buffer.BlockCopy(_buffer, _start, _buffer, 0, _end - _start);
                    _end -= _start;
                    _start = 0;
                }
                if (_end == _buffer.Length)
                    throw new IOException("line too long");
                int n = await stream.ReadAsync(_buffer.AsMemory(_end), cancel);
                if (n == 0)
                    return null;
                _end += n;
            }
        }
    }
}
