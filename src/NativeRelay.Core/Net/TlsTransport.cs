using System.Buffers;
using System.IO.Pipelines;
using System.Net.Security;
using System.Security.Authentication;
using System.Text;

namespace NativeRelay.Net;

/// <summary>
/// TLS on top of a connection's pipes: an <see cref="SslStream"/> reads and writes the socket
/// pipes (through <see cref="DuplexPipeStream"/>), and the protocol gets a new pair of pipes over
/// the SslStream (<see cref="PipeReader.Create(Stream, StreamPipeReaderOptions)"/>,
/// <see cref="PipeWriter.Create(Stream, StreamPipeWriterOptions)"/>). The session code keeps its
/// shape: it parses commands in place from a PipeReader and appends replies to a PipeWriter,
/// whether or not the bytes are encrypted on the way.
/// </summary>
public sealed class TlsTransport : IDuplexPipe, IAsyncDisposable
{
    // A TLS record carries at most 16 KiB; reading in such units keeps one record per read.
    private const int ReadBufferSize = 16 * 1024;

    private static readonly Exception ClosedException = new IOException("the TLS session is closed");

    private readonly SslStream _ssl;
    private int _disposed;

    private TlsTransport(SslStream ssl, MemoryPool<byte> pool)
    {
        _ssl = ssl;
        Input = PipeReader.Create(ssl, new StreamPipeReaderOptions(pool, ReadBufferSize, minimumReadSize: 2048, leaveOpen: true));
        Output = PipeWriter.Create(ssl, new StreamPipeWriterOptions(pool, minimumBufferSize: 4096, leaveOpen: true));
        Protocol = ssl.SslProtocol;
        CipherSuite = ssl.NegotiatedCipherSuite;
        Description = Encoding.ASCII.GetBytes($"using {ProtocolName(Protocol)} with cipher {CipherSuiteName(CipherSuite)}");
    }

    public PipeReader Input { get; }
    public PipeWriter Output { get; }
    public SslProtocols Protocol { get; }
    public TlsCipherSuite CipherSuite { get; }

    /// <summary>"using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384", for the Received header (RFC 3848 wants it recorded).</summary>
    public byte[] Description { get; }

    /// <summary>
    /// Runs the server side of the handshake over <paramref name="transport"/>. The caller has
    /// already thrown away anything the client sent before it (the STARTTLS injection rule).
    /// </summary>
    /// <exception cref="AuthenticationException">The handshake failed (no common protocol or cipher, bad ClientHello).</exception>
    /// <exception cref="IOException">The connection broke.</exception>
    /// <exception cref="OperationCanceledException">The timeout passed.</exception>
    public static async ValueTask<TlsTransport> AcceptAsync(IDuplexPipe transport, TlsCertificateStore certificates, TimeSpan timeout, CancellationToken stopping)
    {
        var ssl = new SslStream(new DuplexPipeStream(transport), leaveInnerStreamOpen: false);
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        deadline.CancelAfter(timeout);
        try
        {
            await ssl.AuthenticateAsServerAsync(certificates.CreateServerOptions(), deadline.Token).ConfigureAwait(false);
        }
        catch
        {
            await ssl.DisposeAsync().ConfigureAwait(false);
            throw;
        }
        return new TlsTransport(ssl, MemoryPool<byte>.Shared);
    }

    public static string ProtocolName(SslProtocols protocol) => protocol switch
    {
        SslProtocols.Tls13 => "TLSv1.3",
        SslProtocols.Tls12 => "TLSv1.2",
#pragma warning disable SYSLIB0039 // only named, never enabled
        SslProtocols.Tls11 => "TLSv1.1",
        SslProtocols.Tls => "TLSv1",
#pragma warning restore SYSLIB0039
        _ => "TLS",
    };

    public static string CipherSuiteName(TlsCipherSuite suite)
    {
        var name = suite.ToString();
        // Enum names survive trimming for enums that are formatted, but guard against a bare number.
        return name.Length > 0 && char.IsAsciiLetter(name[0]) ? name : $"0x{(ushort)suite:X4}";
    }

    /// <summary>Flushes what is left, sends close_notify (best effort, up to 5 s), and releases the SslStream. The socket pipes stay open.</summary>
    public ValueTask DisposeAsync() => DisposeAsync(TimeSpan.FromSeconds(5));

    /// <summary>
    /// Ends TLS: with a grace period, flushes and sends close_notify for at most that long (a peer
    /// that stopped reading cannot hold the session); with zero, just releases everything.
    /// </summary>
    public async ValueTask DisposeAsync(TimeSpan grace)
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        if (grace > TimeSpan.Zero)
        {
            using var deadline = new CancellationTokenSource(grace);
            try
            {
                // The flush is cancellable down to the socket pipe; close_notify is a few bytes after it.
                var flush = await Output.FlushAsync(deadline.Token).ConfigureAwait(false);
                if (!flush.IsCompleted && !flush.IsCanceled)
                    await _ssl.ShutdownAsync().WaitAsync(deadline.Token).ConfigureAwait(false);
            }
            catch (Exception e) when (e is OperationCanceledException or IOException or ObjectDisposedException
                                          or InvalidOperationException or AuthenticationException or NotSupportedException)
            {
                // The peer is gone, stopped reading, or never finished the handshake: nothing more to say to it.
            }
        }
        // Completing with an exception makes the writer drop (not write) anything still buffered:
        // whatever could be sent went out above, and nothing here may block on the peer.
        await Output.CompleteAsync(ClosedException).ConfigureAwait(false);
        await Input.CompleteAsync().ConfigureAwait(false);
        await _ssl.DisposeAsync().ConfigureAwait(false);
    }
}
