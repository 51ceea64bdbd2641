using System.Net;
using System.Net.Sockets;
using System.Text;

namespace NativeRelay.Tests.Support;

/// <summary>
/// A minimal SMTP client over a raw loopback socket, for driving the relay byte by byte.
/// Every read is bounded by <see cref="ReplyTimeout"/>; failures carry the session transcript.
/// </summary>
public sealed class TestSmtpClient : IAsyncDisposable, IDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly SmtpLineReader _reader;
    private readonly List<string> _transcript = new();
    private readonly object _lock = new();

    private TestSmtpClient(Socket socket, int port)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        _reader = new SmtpLineReader(_stream);
        Port = port;
    }

    public int Port { get; }

    public TimeSpan ReplyTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Connects to 127.0.0.1:port (bounded). Does not read the greeting.</summary>
    public static Task<TestSmtpClient> ConnectAsync(int port, TimeSpan? timeout = null) => ConnectAsync(IPAddress.Loopback, port, timeout);

    /// <summary>Connects to address:port (another loopback address, e.g. one relay of a fleet; bounded). Does not read the greeting.</summary>
    public static async Task<TestSmtpClient> ConnectAsync(IPAddress address, int port, TimeSpan? timeout = null)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        using var cts = new CancellationTokenSource(timeout ?? TimeSpan.FromSeconds(30));
        try
        {
            await socket.ConnectAsync(new IPEndPoint(address, port), cts.Token).ConfigureAwait(false);
        }
        catch
        {
            socket.Dispose();
            throw;
        }

        return new TestSmtpClient(socket, port);
    }

    /// <summary>Connects and reads the greeting, which must be 220.</summary>
    public static async Task<TestSmtpClient> ConnectAndGreetAsync(int port)
    {
        var client = await ConnectAsync(port).ConfigureAwait(false);
        var greeting = await client.ReadReplyAsync().ConfigureAwait(false);
        if (greeting.Code != 220)
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw new Xunit.Sdk.XunitException($"Expected a 220 greeting on port {port}, got: {greeting}");
        }

        return client;
    }

    /// <summary>What was sent and received so far, for failure messages.</summary>
    public string Transcript
    {
        get { lock (_lock) { return string.Join("\n", _transcript.TakeLast(80)); } }
    }

    /// <summary>Reads one (possibly multi-line) reply; throws if the connection closes first.</summary>
    public async Task<SmtpReply> ReadReplyAsync() =>
        await TryReadReplyAsync().ConfigureAwait(false)
        ?? throw new SmtpConnectionClosedException($"The server closed the connection instead of replying.\n{Transcript}");

    /// <summary>Reads one reply, or returns null if the server closed (or reset) the connection.</summary>
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
            catch (IOException ex) when (IsReset(ex))
            {
                Log("S: <connection reset>");
                return null;
            }

            if (raw is null || raw.Length == 0 || raw[^1] != '\n')
            {
                Log(raw is { Length: > 0 } ? $"S: {Show(raw)} <closed mid-line>" : "S: <closed>");
                return null;
            }

            string line = Encoding.Latin1.GetString(raw).TrimEnd('\r', '\n');
            Log("S: " + Show(raw));
            if (line.Length < 3 || !int.TryParse(line.AsSpan(0, 3), out int lineCode) || (line.Length > 3 && line[3] != ' ' && line[3] != '-'))
            {
                throw new InvalidDataException($"Malformed reply line '{line}'.\n{Transcript}");
            }

            if (code != 0 && lineCode != code)
            {
                throw new InvalidDataException($"Reply code changed inside a multi-line reply: '{line}'.\n{Transcript}");
            }

            code = lineCode;
            lines.Add(line.Length > 4 ? line[4..] : "");
            if (line.Length == 3 || line[3] == ' ')
            {
                return new SmtpReply(code, lines);
            }
        }
    }

    /// <summary>Sends one command line (CRLF added) and reads its reply.</summary>
    public async Task<SmtpReply> CommandAsync(string command)
    {
        await SendRawAsync(command + "\r\n").ConfigureAwait(false);
        return await ReadReplyAsync().ConfigureAwait(false);
    }

    /// <summary>Sends a command and checks the reply code, failing with the transcript otherwise.</summary>
    public async Task<SmtpReply> ExpectAsync(string command, int expectedCode)
    {
        var reply = await CommandAsync(command).ConfigureAwait(false);
        if (reply.Code != expectedCode)
        {
            throw new Xunit.Sdk.XunitException($"'{command}': expected {expectedCode}, got {reply}.\n{Transcript}");
        }

        return reply;
    }

    public Task SendRawAsync(string text) => SendRawAsync(Encoding.Latin1.GetBytes(text));

    /// <summary>Writes the bytes in one write call.</summary>
    public async Task SendRawAsync(byte[] bytes)
    {
        Log("C: " + Show(bytes));
        using var cts = new CancellationTokenSource(ReplyTimeout);
        await _stream.WriteAsync(bytes, cts.Token).ConfigureAwait(false);
    }

    /// <summary>Sends all commands in ONE write, then reads one reply per command, in order.</summary>
    public async Task<IReadOnlyList<SmtpReply>> PipelineAsync(params string[] commands)
    {
        await SendRawAsync(string.Concat(commands.Select(c => c + "\r\n"))).ConfigureAwait(false);
        return await ReadRepliesAsync(commands.Length).ConfigureAwait(false);
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

    /// <summary>EHLO, checking for 250.</summary>
    public Task<SmtpReply> EhloAsync(string name = "client.test") => ExpectAsync("EHLO " + name, 250);

    /// <summary>
    /// MAIL, RCPT for each recipient, DATA (one at a time, each checked), then the message with
    /// dot-stuffing applied here. Returns the reply to the end of data, whatever it is.
    /// </summary>
    public async Task<SmtpReply> SendMessageAsync(string from, IEnumerable<string> recipients, byte[] data, string? mailParameters = null)
    {
        await ExpectAsync($"MAIL FROM:<{from}>" + (mailParameters is null ? "" : " " + mailParameters), 250).ConfigureAwait(false);
        foreach (var rcpt in recipients)
        {
            await ExpectAsync($"RCPT TO:<{rcpt}>", 250).ConfigureAwait(false);
        }

        await ExpectAsync("DATA", 354).ConfigureAwait(false);
        await SendRawAsync(DotStuff(data)).ConfigureAwait(false);
        return await ReadReplyAsync().ConfigureAwait(false);
    }

    /// <summary>Like <see cref="SendMessageAsync"/> but the final reply must be 250; returns the queue id.</summary>
    public async Task<string> SendAcceptedAsync(string from, IEnumerable<string> recipients, byte[] data, string? mailParameters = null)
    {
        var reply = await SendMessageAsync(from, recipients, data, mailParameters).ConfigureAwait(false);
        if (reply.Code != 250)
        {
            throw new Xunit.Sdk.XunitException($"Message not accepted: {reply}.\n{Transcript}");
        }

        return reply.LastWord;
    }

    /// <summary>
    /// Reads until the server closes the connection, up to the timeout. Returns the replies seen
    /// before the close; throws TimeoutException if the connection is still open at the end.
    /// </summary>
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

    /// <summary>
    /// RFC 5321 section 4.5.2 transparency: every line that starts with "." gets one more ".".
    /// Lines are separated by CRLF; data not ending in CRLF gets one; then the ".CRLF" terminator.
    /// </summary>
    public static byte[] DotStuff(ReadOnlySpan<byte> data)
    {
        using var output = new MemoryStream(data.Length + data.Length / 32 + 8);
        bool lineStart = true;
        for (int i = 0; i < data.Length; i++)
        {
            if (lineStart && data[i] == '.')
            {
                output.WriteByte((byte)'.');
            }

            output.WriteByte(data[i]);
            lineStart = data[i] == '\n' && i > 0 && data[i - 1] == '\r';
        }

        if (data.Length > 0 && !data.EndsWith("\r\n"u8))
        {
            output.Write("\r\n"u8);
        }

        output.Write(".\r\n"u8);
        return output.ToArray();
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            _socket.Shutdown(SocketShutdown.Both);
        }
        catch (SocketException)
        {
        }
        catch (ObjectDisposedException)
        {
        }

        await _stream.DisposeAsync().ConfigureAwait(false);
    }

    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    private static bool IsReset(IOException ex) =>
        ex.InnerException is SocketException se &&
        se.SocketErrorCode is SocketError.ConnectionReset or SocketError.ConnectionAborted or SocketError.Shutdown;

    private void Log(string entry)
    {
        lock (_lock)
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
