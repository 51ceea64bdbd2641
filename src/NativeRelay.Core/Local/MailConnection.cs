using System.Buffers;
using System.Buffers.Text;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Text;
using NativeRelay.Smtp;

namespace NativeRelay.Local;

/// <summary>
/// The client end of an SMTP-style conversation (LMTP to a delivery agent, SMTP submission to the
/// relay) over TCP or a Unix domain socket: pipes over a plain <see cref="Socket"/>, replies
/// parsed with their text and a timeout on every read. Any failure of the connection itself
/// becomes a <see cref="MailProtocolException"/> with a 4xx reply.
/// </summary>
public sealed class MailConnection : IAsyncDisposable
{
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly TimeSpan _replyTimeout;

    private MailConnection(Socket socket, TimeSpan replyTimeout)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: true);
        Input = PipeReader.Create(_stream, new StreamPipeReaderOptions(leaveOpen: true));
        Output = PipeWriter.Create(_stream, new StreamPipeWriterOptions(leaveOpen: true));
        _replyTimeout = replyTimeout;
    }

    public PipeReader Input { get; }
    public PipeWriter Output { get; }

    /// <summary>Capability keywords of the last EHLO/LHLO reply, upper-case ("PIPELINING", "SIZE 1000").</summary>
    public List<string> Capabilities { get; } = [];

    /// <summary>False once the stream cannot be trusted for another command.</summary>
    public bool Broken { get; private set; }

    public string Peer { get; private set; } = "";

    public static async Task<MailConnection> ConnectAsync(MailEndpoint endpoint, TimeSpan connectTimeout, TimeSpan replyTimeout, CancellationToken cancel)
    {
        Socket socket;
        EndPoint remote;
        if (endpoint.UnixPath is not null)
        {
            socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
            remote = new UnixDomainSocketEndPoint(endpoint.UnixPath);
        }
        else if (IPAddress.TryParse(endpoint.Host, out var ip))
        {
            socket = new Socket(ip.AddressFamily, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            remote = new IPEndPoint(ip, endpoint.Port);
        }
        else
        {
            socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
            remote = new DnsEndPoint(endpoint.Host!, endpoint.Port);
        }
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        timeout.CancelAfter(connectTimeout);
        try
        {
            await socket.ConnectAsync(remote, timeout.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
        {
            socket.Dispose();
            throw new MailProtocolException(SmtpReply.Local(421, $"4.4.1 connect to {endpoint} timed out"));
        }
        catch (SocketException e)
        {
            socket.Dispose();
            throw new MailProtocolException(SmtpReply.Local(421, $"4.4.1 connect to {endpoint} failed: {e.SocketErrorCode}"));
        }
        catch
        {
            socket.Dispose();
            throw;
        }
        return new MailConnection(socket, replyTimeout) { Peer = endpoint.ToString() };
    }

    public void WriteLine(string text)
    {
        var span = Output.GetSpan(Encoding.UTF8.GetMaxByteCount(text.Length) + 2);
        int n = Encoding.UTF8.GetBytes(text, span);
        span[n++] = (byte)'\r';
        span[n++] = (byte)'\n';
        Output.Advance(n);
    }

    public async ValueTask FlushAsync(CancellationToken cancel = default)
    {
        try
        {
            await Output.FlushAsync(cancel).ConfigureAwait(false);
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            Broken = true;
            throw new MailProtocolException(SmtpReply.Local(421, $"4.4.2 connection to {Peer} lost while sending: {e.Message}"));
        }
    }

    /// <summary>Reads one reply (all its lines); with <paramref name="capabilities"/>, records the EHLO/LHLO keywords.</summary>
    public async ValueTask<SmtpReply> ReadReplyAsync(bool capabilities = false, CancellationToken cancel = default)
    {
        if (capabilities)
            Capabilities.Clear();
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        timeout.CancelAfter(_replyTimeout);
        try
        {
            while (true)
            {
                var result = await Input.ReadAsync(timeout.Token).ConfigureAwait(false);
                var buffer = result.Buffer;
                if (TryParseReply(ref buffer, capabilities ? Capabilities : null, out var reply))
                {
                    Input.AdvanceTo(buffer.Start);
                    return reply;
                }
                Input.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted)
                    throw Fail($"4.4.2 connection closed by {Peer}");
                if (buffer.Length > 64 * 1024)
                    throw Fail($"4.5.0 reply from {Peer} too long");
            }
        }
        catch (OperationCanceledException) when (!cancel.IsCancellationRequested)
        {
            throw Fail($"4.4.2 timeout waiting for {Peer}");
        }
        catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException)
        {
            throw Fail($"4.4.2 connection to {Peer} lost: {e.Message}");
        }
    }

    private MailProtocolException Fail(string text)
    {
        Broken = true;
        return new MailProtocolException(SmtpReply.Local(421, text));
    }

    /// <summary>Whether the last EHLO/LHLO offered this keyword.</summary>
    public bool Offers(string keyword)
    {
        foreach (var c in Capabilities)
            if (c.Equals(keyword, StringComparison.OrdinalIgnoreCase) || c.StartsWith(keyword + " ", StringComparison.OrdinalIgnoreCase))
                return true;
        return false;
    }

    /// <summary>The SIZE limit offered by the last EHLO/LHLO, or 0.</summary>
    public long OfferedMaxSize()
    {
        foreach (var c in Capabilities)
            if (c.StartsWith("SIZE ", StringComparison.OrdinalIgnoreCase) && long.TryParse(c.AsSpan(5), out long max))
                return max;
        return 0;
    }

    // "ddd-text" lines continue a reply, "ddd text" or "ddd" ends it. The text of every line is kept.
    private bool TryParseReply(ref ReadOnlySequence<byte> buffer, List<string>? capabilities, out SmtpReply reply)
    {
        reply = default;
        var reader = new SequenceReader<byte>(buffer);
        StringBuilder? text = null;
        while (reader.TryReadTo(out ReadOnlySequence<byte> lineSequence, (byte)'\n'))
        {
            var line = lineSequence.IsSingleSegment ? lineSequence.FirstSpan : lineSequence.ToArray();
            if (!line.IsEmpty && line[^1] == '\r')
                line = line[..^1];
            if (line.Length < 3 || !Utf8Parser.TryParse(line[..3], out int code, out int used) || used != 3
                || (line.Length > 3 && line[3] != ' ' && line[3] != '-'))
                throw Fail($"4.5.0 malformed reply from {Peer}");
            bool last = line.Length == 3 || line[3] == ' ';
            string lineText = line.Length > 4 ? Encoding.UTF8.GetString(line[4..]) : "";
            if (capabilities is not null && code == 250 && text is not null)
                capabilities.Add(lineText.Trim()); // the first line is the greeting name
            text ??= new StringBuilder();
            if (text.Length > 0)
                text.Append(' ');
            text.Append(lineText);
            if (last)
            {
                buffer = buffer.Slice(reader.Position);
                reply = new SmtpReply(code, text.ToString());
                return true;
            }
        }
        return false;
    }

    /// <summary>Sends QUIT and reads the answer; problems at this point change nothing.</summary>
    public async Task QuitAsync()
    {
        if (Broken)
            return;
        try
        {
            WriteLine("QUIT");
            await FlushAsync().ConfigureAwait(false);
            await ReadReplyAsync().ConfigureAwait(false);
        }
        catch (MailProtocolException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (Broken)
        {
            // Nothing more is worth sending: close first, so completing the writer cannot wait on a peer that stopped reading.
            try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
            _socket.Close();
        }
        try { await Output.CompleteAsync().ConfigureAwait(false); } catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException) { }
        try { await Input.CompleteAsync().ConfigureAwait(false); } catch (Exception e) when (e is IOException or SocketException or ObjectDisposedException) { }
        try { _socket.Shutdown(SocketShutdown.Both); } catch (SocketException) { } catch (ObjectDisposedException) { }
        await _stream.DisposeAsync().ConfigureAwait(false);
    }
}

/// <summary>A failure of the conversation itself (connect, greeting, lost connection, timeout), with the reply that explains it.</summary>
public sealed class MailProtocolException(SmtpReply reply) : Exception(reply.ToString())
{
    public SmtpReply Reply { get; } = reply;
}
