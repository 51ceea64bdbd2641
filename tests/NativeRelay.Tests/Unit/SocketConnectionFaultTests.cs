using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text;
using NativeRelay.Net;
using NativeRelay.Telemetry;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// The connection's pump loops never fault: a reset, a timeout or an error nobody expected ends
/// the connection with one recorded reason, an unexpected one is logged once with its type and
/// stack, and disposing always completes, leaving no pipe block rented and the socket closed.
/// Real sockets on loopback; the timeout and the unexpected error are injected (a TCP timeout
/// cannot be made to happen on loopback on demand).
/// </summary>
public sealed class SocketConnectionFaultTests
{
    /// <summary>A memory pool that counts the blocks it has out.</summary>
    private sealed class CountingPool : MemoryPool<byte>
    {
        private int _out;
        public int Outstanding => Volatile.Read(ref _out);
        public override int MaxBufferSize => 1024 * 1024;
        public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
        {
            Interlocked.Increment(ref _out);
            return new Block(this, new byte[Math.Max(minBufferSize, 4096)]);
        }
        protected override void Dispose(bool disposing) { }
        private sealed class Block(CountingPool pool, byte[] array) : IMemoryOwner<byte>
        {
            private int _disposed;
            public Memory<byte> Memory => array;
            public void Dispose()
            {
                if (Interlocked.Exchange(ref _disposed, 1) == 0)
                    Interlocked.Decrement(ref pool._out);
            }
        }
    }

    private static async Task<(SocketConnection Server, Socket Client, CountingPool Pool, StringWriter LogText, Log Log, Socket Accepted)> ConnectedPairAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!);
        var accepted = await listener.AcceptAsync();
        var pool = new CountingPool();
        var text = new StringWriter();
        var log = new Log(text, LogLevel.Info, LogFormat.Text);
        var server = new SocketConnection(accepted, pool, log);
        server.Start();
        return (server, client, pool, text, log, accepted);
    }

    /// <summary>Drives the session side: reads the input until it ends, as a session does.</summary>
    private static async Task ReadToEndAsync(SocketConnection connection)
    {
        while (true)
        {
            var result = await connection.Transport.Input.ReadAsync();
            connection.Transport.Input.AdvanceTo(result.Buffer.End);
            if (result.IsCompleted || result.IsCanceled)
                return;
        }
    }

    [Fact]
    public async Task A_reset_by_the_peer_ends_the_connection_quietly_and_frees_everything()
    {
        var (server, client, pool, text, log, accepted) = await ConnectedPairAsync();
        await client.SendAsync(Encoding.ASCII.GetBytes("EHLO x\r\n"));
        client.LingerState = new LingerOption(true, 0); // close sends RST
        client.Close();

        await ReadToEndAsync(server).WaitAsync(TimeSpan.FromSeconds(30));
        await server.DisposeAsync();
        log.Dispose();

        Assert.Equal("reset by the peer", server.EndReason);
        Assert.Equal(0, pool.Outstanding);
        Assert.DoesNotContain("unexpected", text.ToString());
        Assert.True(accepted.SafeHandle.IsClosed, "the socket's descriptor is closed");
    }

    [Fact]
    public async Task A_send_that_times_out_ends_the_connection_and_dispose_still_completes()
    {
        var (server, client, pool, text, log, accepted) = await ConnectedPairAsync();
        server.InjectFault = where => where == "send" ? new SocketException((int)SocketError.TimedOut) : null;

        await server.Transport.Output.WriteAsync(Encoding.ASCII.GetBytes("220 hello\r\n"));
        await ReadToEndAsync(server).WaitAsync(TimeSpan.FromSeconds(30)); // the send loop's end stops the input too
        await server.Transport.Input.CompleteAsync();
        await server.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        client.Dispose();
        log.Dispose();

        Assert.Equal("timed out", server.EndReason);
        Assert.Equal(0, pool.Outstanding);
        Assert.DoesNotContain("unexpected", text.ToString());
        Assert.True(accepted.SafeHandle.IsClosed, "the socket's descriptor is closed");
    }

    [Fact]
    public async Task An_unexpected_error_is_logged_once_with_its_type_and_stack_and_cleanup_completes()
    {
        var (server, client, pool, text, log, accepted) = await ConnectedPairAsync();
        server.InjectFault = where => where == "receive" ? new InvalidOperationException("injected receive failure") : null;
        await client.SendAsync(Encoding.ASCII.GetBytes("EHLO x\r\n"));

        await ReadToEndAsync(server).WaitAsync(TimeSpan.FromSeconds(30));
        await server.Transport.Input.CompleteAsync();
        await server.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        client.Dispose();
        log.Dispose();

        Assert.Equal("InvalidOperationException in receive: injected receive failure", server.EndReason);
        string logged = text.ToString();
        Assert.Single(logged.Split('\n'), l => l.Contains("unexpected error"));
        Assert.Contains($"connection {server.Id}", logged);
        Assert.Contains("System.InvalidOperationException: injected receive failure", logged);
        Assert.Contains(" at ", logged); // the stack
        Assert.Equal(0, pool.Outstanding);
        Assert.True(accepted.SafeHandle.IsClosed, "the socket's descriptor is closed");
    }

    [Fact]
    public async Task An_idle_connection_holds_no_pipe_block()
    {
        var (server, client, pool, _, log, _) = await ConnectedPairAsync();
        await server.Transport.Output.WriteAsync(Encoding.ASCII.GetBytes("220 hello\r\n"));
        var greeting = new byte[64];
        int n = await client.ReceiveAsync(greeting);
        Assert.Equal("220 hello\r\n", Encoding.ASCII.GetString(greeting, 0, n));
        // A command arrives and is consumed: the input drains.
        await client.SendAsync(Encoding.ASCII.GetBytes("NOOP\r\n"));
        var read = await server.Transport.Input.ReadAsync();
        Assert.Equal("NOOP\r\n", Encoding.ASCII.GetString(read.Buffer.ToArray()));
        server.Transport.Input.AdvanceTo(read.Buffer.End);

        // Waiting for the next command (the zero-byte receive is pending) holds nothing.
        await WaitUntilAsync(() => pool.Outstanding == 0);
        Assert.Equal(0, pool.Outstanding);

        client.Dispose();
        await ReadToEndAsync(server).WaitAsync(TimeSpan.FromSeconds(30));
        await server.Transport.Input.CompleteAsync();
        await server.DisposeAsync();
        log.Dispose();
        Assert.Equal("closed by the peer", server.EndReason);
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        for (int i = 0; i < 200 && !condition(); i++)
            await Task.Delay(10);
    }
}
