using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Text;
using NativeRelay.Config;
using NativeRelay.Smtp;

namespace NativeRelay.Tools;

/// <summary>
/// The load generator behind <c>nativerelay blast</c> (and <c>nativerelay bench</c>): S sessions
/// share a counter of N messages; each claims the next message, connects when it has no
/// connection, and sends it, with MAIL, every RCPT and DATA in one write when the server offers
/// PIPELINING. Per message it costs no allocation: the message is a prebuilt template (see
/// <see cref="BlastMessage"/>), replies are parsed in place, latencies go into per-session
/// fixed-bucket histograms, and failures into per-session counters by reply code. Bounded by N
/// and by the time limit; every session stops at either.
/// </summary>
public sealed class Blaster
{
    private readonly BlastOptions _options;
    private readonly BlastMessage _message;
    private readonly byte[] _mailLine;          // without SIZE
    private readonly byte[] _mailLineWithSize;
    private readonly byte[] _rcptBlock;         // every RCPT line
    private readonly byte[] _ehloLine;
    private long _claimed;
    private long _ok;
    private long _failed;
    private long _connections;
    private long _startTimestamp;
    private int _pipelining = -1;
    private CancellationToken _interrupt;

    public Blaster(BlastOptions options)
    {
        _options = options;
        string runId = Convert.ToHexStringLower(BitConverter.GetBytes(Random.Shared.Next()));
        _message = BlastMessage.Create(options.Size, options.From, options.Rcpt, DateTimeOffset.Now, runId);
        _mailLine = Encoding.ASCII.GetBytes($"MAIL FROM:<{options.From}>\r\n");
        _mailLineWithSize = Encoding.ASCII.GetBytes($"MAIL FROM:<{options.From}> SIZE={_message.Size}\r\n");
        var rcpts = new StringBuilder();
        for (int i = 1; i <= options.Recipients; i++)
            rcpts.Append("RCPT TO:<").Append(options.Recipients == 1 ? "" : i.ToString(System.Globalization.CultureInfo.InvariantCulture))
                .Append(options.Rcpt).Append(">\r\n");
        _rcptBlock = Encoding.ASCII.GetBytes(rcpts.ToString());
        _ehloLine = Encoding.ASCII.GetBytes($"EHLO {options.Helo}\r\n");
    }

    public BlastOptions Options => _options;

    public BlastMessage Message => _message;

    /// <summary>Messages whose outcome is known (accepted or failed).</summary>
    public long Done => Volatile.Read(ref _ok) + Volatile.Read(ref _failed);

    public long Accepted => Volatile.Read(ref _ok);

    public long Failed => Volatile.Read(ref _failed);

    /// <summary>Time since the run started; zero before.</summary>
    public TimeSpan Elapsed
    {
        get
        {
            long start = Volatile.Read(ref _startTimestamp);
            return start == 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(start);
        }
    }

    /// <summary>
    /// Runs the load to its end: N messages done, the time limit, or <paramref name="cancel"/>
    /// (an interrupt). Returns the summary in every case.
    /// </summary>
    public async Task<BlastResult> RunAsync(CancellationToken cancel = default)
    {
        _interrupt = cancel;
        var endPoint = await ResolveAsync(_options.Host, _options.Port);
        using var timeout = new CancellationTokenSource(_options.Timeout);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancel, timeout.Token);

        var sessions = new Session[Math.Max(1, (int)Math.Min(_options.Sessions, _options.Messages))];
        Volatile.Write(ref _startTimestamp, Stopwatch.GetTimestamp());
        var tasks = new Task[sessions.Length];
        for (int i = 0; i < sessions.Length; i++)
        {
            sessions[i] = new Session(this, endPoint, stop.Token);
            tasks[i] = sessions[i].RunAsync();
        }
        await Task.WhenAll(tasks);

        long end = _startTimestamp;
        var errors = new ErrorCounts();
        var connect = new LatencyHistogram();
        var accept = new LatencyHistogram();
        foreach (var s in sessions)
        {
            end = Math.Max(end, s.LastCompletion);
            errors.Merge(s.Errors);
            connect.Merge(s.ConnectLatency);
            accept.Merge(s.AcceptLatency);
        }
        double seconds = Math.Max(1e-6, LatencyHistogram.ElapsedMicroseconds(_startTimestamp, end) / 1e6);
        return new BlastResult
        {
            Target = _options.Target,
            Requested = _options.Messages,
            Accepted = _ok,
            Failed = _failed,
            Sessions = sessions.Length,
            MessageSize = _message.Size,
            Recipients = _options.Recipients,
            Connections = _connections,
            Pipelining = _pipelining == 1,
            TimedOut = timeout.IsCancellationRequested,
            Interrupted = cancel.IsCancellationRequested,
            ElapsedSeconds = seconds,
            Errors = errors,
            ConnectLatency = connect.Summarize(),
            AcceptLatency = accept.Summarize(),
            Rate = _options.Rate,
        };
    }

    private static async Task<IPEndPoint> ResolveAsync(string host, int port)
    {
        if (IPAddress.TryParse(host, out var address))
            return new IPEndPoint(address, port);
        IPAddress[] addresses;
        try
        {
            addresses = await Dns.GetHostAddressesAsync(host);
        }
        catch (SocketException e)
        {
            throw new ConfigException($"blast: cannot resolve {host}: {e.Message}");
        }
        var chosen = addresses.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork) ?? addresses.FirstOrDefault()
                     ?? throw new ConfigException($"blast: {host} has no address");
        return new IPEndPoint(chosen, port);
    }

    /// <summary>Why a message in flight was cut short: the time limit or an interrupt.</summary>
    private LocalFailure StopKind => _interrupt.IsCancellationRequested ? LocalFailure.Interrupted : LocalFailure.Timeout;

    private string StopText => _interrupt.IsCancellationRequested ? "interrupted" : "time limit reached";

    /// <summary>The next message number, or -1 when all N are taken.</summary>
    private long Claim()
    {
        long n = Interlocked.Increment(ref _claimed) - 1;
        return n < _options.Messages ? n : -1;
    }

    /// <summary>A failure that ends the connection: counted once for the message in hand.</summary>
    private sealed class ConnectionFailure : Exception
    {
        public ConnectionFailure(int code, string text) : base(text) => Code = code;
        public ConnectionFailure(LocalFailure kind, string text) : base(text) => Kind = kind;
        public int Code { get; }
        public LocalFailure? Kind { get; }
    }

    private sealed class Session
    {
        private readonly Blaster _b;
        private readonly IPEndPoint _endPoint;
        private readonly CancellationToken _stop;
        private readonly byte[] _header;
        private readonly byte[] _scratch = new byte[SmtpReplyParser.MaxLineLength];
        private readonly int[] _codes;
        private ClientConnection? _connection;
        private SmtpCapabilities _capabilities;
        private long _onConnection;
        private bool _usable;

        public Session(Blaster blaster, IPEndPoint endPoint, CancellationToken stop)
        {
            _b = blaster;
            _endPoint = endPoint;
            _stop = stop;
            _header = blaster._message.NewHeaderCopy();
            _codes = new int[blaster._options.Recipients + 2];
        }

        public LatencyHistogram ConnectLatency { get; } = new();
        public LatencyHistogram AcceptLatency { get; } = new();
        public ErrorCounts Errors { get; } = new();
        public long LastCompletion { get; private set; }

        public async Task RunAsync()
        {
            await Task.Yield();
            var o = _b._options;
            double ticksPerMessage = o.Rate > 0 ? Stopwatch.Frequency / o.Rate : 0;
            try
            {
                while (!_stop.IsCancellationRequested)
                {
                    long index = _b.Claim();
                    if (index < 0)
                        break;
                    if (ticksPerMessage > 0 && !await WaitForSlotAsync(index, ticksPerMessage))
                    {
                        Fail(_b.StopKind, _b.StopText);
                        break;
                    }
                    await SendOneAsync(index);
                    LastCompletion = Stopwatch.GetTimestamp();
                    if (o.PerConnection > 0 && _onConnection >= o.PerConnection)
                        await CloseAsync(quit: true);
                }
            }
            finally
            {
                await CloseAsync(quit: !_stop.IsCancellationRequested);
            }
        }

        // Open-loop pacing: message i starts no earlier than start + i / rate.
        private async ValueTask<bool> WaitForSlotAsync(long index, double ticksPerMessage)
        {
            long due = _b._startTimestamp + (long)(index * ticksPerMessage);
            long now = Stopwatch.GetTimestamp();
            if (due <= now)
                return true;
            try
            {
                await Task.Delay(TimeSpan.FromSeconds((double)(due - now) / Stopwatch.Frequency), _stop);
                return true;
            }
            catch (OperationCanceledException)
            {
                return false;
            }
        }

        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
        private async ValueTask SendOneAsync(long index)
        {
            try
            {
                if (_connection is null || !_usable)
                {
                    await CloseAsync(quit: false);
                    await OpenAsync();
                }
                if (await TransactionAsync(index))
                    Interlocked.Increment(ref _b._ok);
                else
                    Interlocked.Increment(ref _b._failed);
            }
            catch (ConnectionFailure f)
            {
                if (f.Kind is { } kind)
                    Fail(kind, f.Message);
                else
                {
                    Errors.RememberText(f.Code, Encoding.ASCII.GetBytes(f.Message));
                    Errors.Add(f.Code);
                    Interlocked.Increment(ref _b._failed);
                }
                _usable = false;
            }
            catch (OperationCanceledException) when (_stop.IsCancellationRequested)
            {
                Fail(_b.StopKind, _b.StopText);
                _usable = false;
            }
            catch (Exception e)
            {
                // A reset, a closed pipe, or anything unforeseen: this message failed, the run goes on.
                Fail(LocalFailure.Lost, e.Message);
                _usable = false;
            }
        }

        private void Fail(LocalFailure kind, string detail)
        {
            Errors.Add(kind, detail);
            Interlocked.Increment(ref _b._failed);
        }

        private async ValueTask OpenAsync()
        {
            long started = Stopwatch.GetTimestamp();
            try
            {
                _connection = await ClientConnection.ConnectAsync(_endPoint, _b._options.Tls, _stop);
            }
            catch (SocketException e)
            {
                throw new ConnectionFailure(LocalFailure.Connect, $"connect to {_endPoint}: {e.SocketErrorCode}");
            }
            _usable = true;
            _onConnection = 0;
            int greeting = await ReadOneAsync();
            if (greeting != 220)
                throw new ConnectionFailure(greeting, $"greeting {greeting}");
            ConnectLatency.RecordSince(started);
            Interlocked.Increment(ref _b._connections);
            await HelloAsync();
            if (_b._options.Tls)
            {
                if ((_capabilities & SmtpCapabilities.StartTls) == 0)
                    throw new ConnectionFailure(LocalFailure.Tls, "the server does not offer STARTTLS");
                _connection.Output.Write("STARTTLS\r\n"u8);
                await _connection.Output.FlushAsync(_stop);
                int reply = await ReadOneAsync();
                if (reply != 220)
                    throw new ConnectionFailure(LocalFailure.Tls, $"STARTTLS answered {reply}");
                try
                {
                    await _connection.UpgradeToTlsAsync(_b._options.Host, _stop);
                }
                catch (Exception e) when (e is IOException or System.Security.Authentication.AuthenticationException)
                {
                    throw new ConnectionFailure(LocalFailure.Tls, $"TLS handshake: {e.Message}");
                }
                await HelloAsync();
            }
            Interlocked.CompareExchange(ref _b._pipelining, (_capabilities & SmtpCapabilities.Pipelining) != 0 ? 1 : 0, -1);
        }

        private async ValueTask HelloAsync()
        {
            var output = _connection!.Output;
            output.Write(_b._ehloLine);
            await output.FlushAsync(_stop);
            _capabilities = SmtpCapabilities.None;
            int reply = await ReadRepliesAsync(1, parseCapabilities: true);
            if (reply == 250)
                return;
            if (reply < 500)
                throw new ConnectionFailure(reply, $"EHLO answered {reply}");
            _capabilities = SmtpCapabilities.None;
            output.Write("HELO "u8);
            output.Write(_b._ehloLine.AsSpan(5));
            await output.FlushAsync(_stop);
            reply = await ReadOneAsync();
            if (reply != 250)
                throw new ConnectionFailure(reply, $"HELO answered {reply}");
        }

        /// <summary>One mail transaction. True when every recipient was accepted and the data got a 2xx.</summary>
        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        private async ValueTask<bool> TransactionAsync(long index)
        {
            var o = _b._options;
            var output = _connection!.Output;
            int recipients = o.Recipients;
            bool pipelining = (_capabilities & SmtpCapabilities.Pipelining) != 0;
            output.Write((_capabilities & SmtpCapabilities.Size) != 0 ? _b._mailLineWithSize : _b._mailLine);
            _onConnection++;

            int mail, data, accepted = 0, firstRefusal = 0;
            if (pipelining)
            {
                output.Write(_b._rcptBlock);
                output.Write("DATA\r\n"u8);
                await output.FlushAsync(_stop);
                await ReadRepliesAsync(recipients + 2);
                mail = _codes[0];
                for (int i = 1; i <= recipients; i++)
                {
                    if (IsPositive(_codes[i]))
                        accepted++;
                    else if (firstRefusal == 0)
                        firstRefusal = _codes[i];
                }
                data = _codes[recipients + 1];
            }
            else
            {
                await output.FlushAsync(_stop);
                mail = await ReadOneAsync();
                if (!IsPositive(mail))
                    return Refused(mail);
                // RCPT lines one at a time: find each line's end in the block.
                int start = 0;
                for (int i = 0; i < recipients; i++)
                {
                    int end = start + _b._rcptBlock.AsSpan(start).IndexOf((byte)'\n') + 1;
                    output.Write(_b._rcptBlock.AsSpan(start, end - start));
                    start = end;
                    await output.FlushAsync(_stop);
                    int rcpt = await ReadOneAsync();
                    if (IsPositive(rcpt))
                        accepted++;
                    else if (firstRefusal == 0)
                        firstRefusal = rcpt;
                }
                if (accepted == 0)
                {
                    await ResetAsync();
                    return Refused(firstRefusal);
                }
                output.Write("DATA\r\n"u8);
                await output.FlushAsync(_stop);
                data = await ReadOneAsync();
            }

            if (data != 354)
            {
                // No data phase: the transaction is still open if MAIL was accepted.
                if (IsPositive(mail) && _usable)
                    await ResetAsync();
                return Refused(!IsPositive(mail) ? mail : firstRefusal != 0 ? firstRefusal : data);
            }
            if (!IsPositive(mail) || accepted == 0)
            {
                // A server that says 354 with nothing to deliver to: end the empty data at once.
                output.Write(".\r\n"u8);
                await output.FlushAsync(_stop);
                await ReadOneAsync();
                return Refused(!IsPositive(mail) ? mail : firstRefusal);
            }

            _b._message.Stamp(_header, index);
            output.Write(_header);
            var body = _b._message.BodyWire;
            const int Slice = 64 * 1024;
            int offset = 0;
            while (body.Length - offset > Slice)
            {
                output.Write(body.AsSpan(offset, Slice));
                offset += Slice;
                if (output.UnflushedBytes >= 4 * Slice)
                    await output.FlushAsync(_stop);
            }
            output.Write(body.AsSpan(offset));
            long dataEnd = Stopwatch.GetTimestamp();
            await output.FlushAsync(_stop);
            int final = await ReadOneAsync();
            if (!IsPositive(final))
                return Refused(final);
            AcceptLatency.RecordSince(dataEnd);
            return firstRefusal == 0 || Refused(firstRefusal);
        }

        private static bool IsPositive(int code) => code is >= 200 and < 300;

        private bool Refused(int code)
        {
            Errors.Add(code);
            if (code == 421)
                _usable = false;
            return false;
        }

        private async ValueTask ResetAsync()
        {
            _connection!.Output.Write("RSET\r\n"u8);
            await _connection.Output.FlushAsync(_stop);
            if (!IsPositive(await ReadOneAsync()))
                _usable = false;
        }

        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        private async ValueTask<int> ReadOneAsync()
        {
            await ReadRepliesAsync(1);
            return _codes[0];
        }

        /// <summary>Reads <paramref name="count"/> replies into _codes; returns the last code.</summary>
        [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
        private async ValueTask<int> ReadRepliesAsync(int count, bool parseCapabilities = false)
        {
            var input = _connection!.Input;
            int got = 0;
            while (true)
            {
                var result = await input.ReadAsync(_stop);
                var buffer = result.Buffer;
                var status = Parse(ref buffer, count, ref got, parseCapabilities);
                if (status == ReplyStatus.Malformed)
                {
                    input.AdvanceTo(buffer.Start);
                    throw new ConnectionFailure(LocalFailure.Protocol, "malformed reply from the server");
                }
                if (got == count)
                {
                    input.AdvanceTo(buffer.Start);
                    int last = _codes[count - 1];
                    if (last == 421)
                        _usable = false;
                    return last;
                }
                input.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted || result.IsCanceled)
                    throw new ConnectionFailure(LocalFailure.Lost, "the server closed the connection");
            }
        }

        private ReplyStatus Parse(ref ReadOnlySequence<byte> buffer, int count, ref int got, bool parseCapabilities)
        {
            while (got < count)
            {
                var status = SmtpReplyParser.TryRead(ref buffer, _scratch, out int code, out var text,
                    ref _capabilities, parseCapabilities);
                if (status != ReplyStatus.Complete)
                    return status;
                _codes[got++] = code;
                if (code >= 400 && !Errors.HasText(code))
                    Errors.RememberText(code, text);
                if (code == 421)
                {
                    // The server is closing: no more replies will come for this group.
                    while (got < count)
                        _codes[got++] = 421;
                    _usable = false;
                }
            }
            return ReplyStatus.Complete;
        }

        private async ValueTask CloseAsync(bool quit)
        {
            var connection = _connection;
            if (connection is null)
                return;
            _connection = null;
            try
            {
                if (quit && _usable)
                {
                    connection.Output.Write("QUIT\r\n"u8);
                    await connection.Output.FlushAsync(_stop);
                    using var wait = CancellationTokenSource.CreateLinkedTokenSource(_stop);
                    wait.CancelAfter(TimeSpan.FromSeconds(2));
                    await connection.Input.ReadAsync(wait.Token); // the 221, or the close
                }
            }
            catch (Exception e) when (e is IOException or SocketException or OperationCanceledException or ObjectDisposedException or InvalidOperationException)
            {
            }
            finally
            {
                _usable = false;
                await connection.DisposeAsync();
            }
        }
    }
}
