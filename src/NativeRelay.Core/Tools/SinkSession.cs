using System.Buffers;
using System.Buffers.Text;
using System.IO.Pipelines;
using System.Text;
using NativeRelay.Message;
using NativeRelay.Net;
using NativeRelay.Smtp;

namespace NativeRelay.Tools;

/// <summary>
/// One connection to the sink. The shape of the relay's own server session, without its policy:
/// every complete command in the input is answered at once into the output pipe, which is flushed
/// only when the input is drained (so a pipelined group gets one write); DATA is decoded with
/// <see cref="DotUnstuffer"/> into a writer that drops the bytes (or keeps them for --save);
/// BDAT chunks are counted through. In steady state a message costs no allocation.
/// </summary>
internal sealed class SinkSession
{
    private const int MaxCommandLine = 2048;
    private static readonly TimeSpan IdleTimeout = TimeSpan.FromMinutes(5);

    private enum Phase : byte { Command, Data, Chunk, DiscardChunk }

    private enum Step : byte { NeedMoreInput, EndOfMessage, Close, StartTls }

    private readonly SmtpSink _sink;
    private readonly SocketConnection _connection;
    private PipeReader _input;
    private PipeWriter _output;
    private NativeRelay.Net.TlsTransport? _tls;
    private bool _startTls;
    private readonly byte[] _lineScratch = new byte[MaxCommandLine];
    private readonly DotUnstuffer _unstuffer = new(maxLineLength: int.MaxValue, maxMessageSize: long.MaxValue);
    private readonly IBufferWriter<byte> _content;
    private readonly ArrayBufferWriter<byte>? _saved;
    private readonly List<string>? _savedRecipients;
    private string _savedSender = "";

    private Phase _phase;
    private bool _haveMail;
    private int _recipients;
    private long _chunkRemaining;
    private bool _chunkLast;
    private long _messageBytes;
    private bool _discardingLongLine;
    private bool _closeAfterFlush;

    public SinkSession(SmtpSink sink, SocketConnection connection)
    {
        _sink = sink;
        _connection = connection;
        _input = connection.Transport.Input;
        _output = connection.Transport.Output;
        if (sink.Options.SaveDirectory is not null)
        {
            _saved = new ArrayBufferWriter<byte>(16 * 1024);
            _savedRecipients = new List<string>();
            _content = _saved;
        }
        else
        {
            _content = new DiscardWriter();
        }
    }

    private bool InTransaction => _haveMail || _phase != Phase.Command;

    private CancellationToken _stopping;

    public async Task RunAsync(CancellationToken stopping)
    {
        _stopping = stopping;
        var timeout = new CancellationTokenSource();
        using var onStop = stopping.UnsafeRegister(static s => ((PipeReader)s!).CancelPendingRead(), _input);
        try
        {
            _output.Write(_sink.Greeting);
            await _output.FlushAsync();
            while (true)
            {
                if (!_input.TryRead(out var result))
                {
                    var flush = await _output.FlushAsync();
                    if (flush.IsCompleted || _closeAfterFlush)
                        break;
                    if (stopping.IsCancellationRequested && !InTransaction)
                    {
                        _output.Write("421 4.3.2 sink: shutting down\r\n"u8);
                        break;
                    }
                    timeout.CancelAfter(IdleTimeout);
                    try
                    {
                        result = await _input.ReadAsync(timeout.Token);
                    }
                    catch (OperationCanceledException)
                    {
                        _output.Write("421 4.4.2 sink: idle timeout\r\n"u8);
                        break;
                    }
                    if (!timeout.TryReset())
                    {
                        timeout.Dispose();
                        timeout = new CancellationTokenSource();
                    }
                }
                if (_closeAfterFlush)
                    break;

                var buffer = result.Buffer;
                var step = Process(ref buffer);
                if (step == Step.StartTls)
                {
                    // RFC 3207 4.2: whatever was pipelined behind STARTTLS is discarded.
                    _input.AdvanceTo(result.Buffer.End);
                    _startTls = false;
                    await _output.FlushAsync();
                    _tls = await NativeRelay.Net.TlsTransport.AcceptAsync(_connection.Transport, _sink.Certificates!, TimeSpan.FromSeconds(30), stopping);
                    _input = _tls.Input;
                    _output = _tls.Output;
                    ResetTransaction();
                    continue;
                }
                _input.AdvanceTo(buffer.Start, step == Step.NeedMoreInput ? buffer.End : buffer.Start);

                if (step == Step.EndOfMessage)
                    await FinishMessageAsync();
                else if (step == Step.Close)
                    break;

                if (result.IsCompleted && step == Step.NeedMoreInput)
                    break;
            }
            await _output.FlushAsync();
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or System.Net.Sockets.SocketException)
        {
            // The client went away mid-conversation; nothing to report beyond the counts.
        }
        finally
        {
            timeout.Dispose();
        }
    }

    private Step Process(ref ReadOnlySequence<byte> buffer)
    {
        while (true)
        {
            // A chunk may be empty ("BDAT 0 LAST"), so the chunk phases run even with no input left.
            if (buffer.IsEmpty && _phase is Phase.Command or Phase.Data)
                return Step.NeedMoreInput;
            switch (_phase)
            {
                case Phase.Data:
                {
                    var status = FeedData(ref buffer);
                    if (status == DataStatus.NeedMoreData)
                        return Step.NeedMoreInput;
                    if (status == DataStatus.Complete)
                        return Step.EndOfMessage;
                    _sink.CountBareLineEnding();
                    _output.Write("554 5.6.0 sink: bare CR or LF in message data; closing connection\r\n"u8);
                    _closeAfterFlush = true;
                    return Step.Close;
                }
                case Phase.Chunk:
                case Phase.DiscardChunk:
                {
                    long take = Math.Min(_chunkRemaining, buffer.Length);
                    if (_phase == Phase.Chunk)
                    {
                        foreach (var segment in buffer.Slice(0, take))
                            _content.Write(segment.Span);
                        _messageBytes += take;
                    }
                    buffer = buffer.Slice(take);
                    _chunkRemaining -= take;
                    if (_chunkRemaining > 0)
                        return Step.NeedMoreInput;
                    if (_phase == Phase.DiscardChunk)
                    {
                        _phase = Phase.Command;
                        _output.Write("554 5.5.1 sink: no valid recipients\r\n"u8);
                        continue;
                    }
                    if (_chunkLast)
                        return Step.EndOfMessage;
                    _phase = Phase.Command;
                    _output.Write("250 2.0.0 Ok: chunk received\r\n"u8);
                    continue;
                }
            }

            if (_discardingLongLine)
            {
                if (!CommandLineReader.TrySkipPastLineEnd(buffer, out var end))
                {
                    buffer = buffer.Slice(buffer.End);
                    return Step.NeedMoreInput;
                }
                buffer = buffer.Slice(end);
                _discardingLongLine = false;
                _output.Write("500 5.5.2 sink: line too long\r\n"u8);
                continue;
            }

            var lineStatus = CommandLineReader.TryReadLine(buffer, MaxCommandLine, _lineScratch, out var line, out var lineEnd);
            if (lineStatus == LineStatus.NeedMoreData)
                return Step.NeedMoreInput;
            buffer = buffer.Slice(lineEnd);
            if (lineStatus == LineStatus.TooLong)
            {
                _discardingLongLine = true;
                continue;
            }
            if (!HandleCommand(line))
                return _startTls ? Step.StartTls : Step.Close;
        }
    }

    /// <summary>Ends the TLS layer of a session that used STARTTLS.</summary>
    public async ValueTask DisposeTlsAsync()
    {
        if (_tls is not null)
            await _tls.DisposeAsync();
    }

    private DataStatus FeedData(ref ReadOnlySequence<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            var status = _unstuffer.Process(buffer.FirstSpan, _content, out int consumed);
            buffer = buffer.Slice(consumed);
            if (status != DataStatus.NeedMoreData)
                return status;
        }
        return DataStatus.NeedMoreData;
    }

    /// <summary>Returns false when the session must end.</summary>
    private bool HandleCommand(ReadOnlySpan<byte> line)
    {
        var verb = SmtpCommandParser.Parse(line, out var argument);
        switch (verb)
        {
            case SmtpVerb.Ehlo:
                ResetTransaction();
                _output.Write(_tls is null ? _sink.EhloReply : _sink.EhloReplyInTls);
                return true;
            case SmtpVerb.StartTls:
                if (_sink.Certificates is null || _tls is not null)
                    return Reply("502 5.5.1 sink: STARTTLS not offered\r\n"u8);
                _output.Write("220 2.0.0 Ready to start TLS\r\n"u8);
                _startTls = true;
                return false;
            case SmtpVerb.Helo:
                ResetTransaction();
                _output.Write(_sink.HeloReply);
                return true;
            case SmtpVerb.Mail:
                if (_haveMail)
                    return Reply("503 5.5.1 sink: nested MAIL command\r\n"u8);
                _haveMail = true;
                if (_saved is not null)
                    _savedSender = AngleAddress(argument);
                return Reply("250 2.1.0 Ok\r\n"u8);
            case SmtpVerb.Rcpt:
                if (!_haveMail)
                    return Reply("503 5.5.1 sink: need MAIL command\r\n"u8);
                var rcptReply = _sink.ChooseRcptReply(out bool rcptAccepted);
                _sink.CountRecipient(rcptAccepted);
                if (rcptAccepted)
                {
                    _recipients++;
                    _savedRecipients?.Add(AngleAddress(argument));
                }
                _output.Write(rcptReply);
                return true;
            case SmtpVerb.Data:
                if (_recipients == 0)
                    return Reply(_haveMail ? "554 5.5.1 sink: no valid recipients\r\n"u8 : "503 5.5.1 sink: need MAIL command\r\n"u8);
                StartMessage();
                _unstuffer.Reset();
                _phase = Phase.Data;
                return Reply("354 End data with <CR><LF>.<CR><LF>\r\n"u8);
            case SmtpVerb.Bdat:
                return Bdat(argument);
            case SmtpVerb.Rset:
                ResetTransaction();
                return Reply("250 2.0.0 Ok\r\n"u8);
            case SmtpVerb.Noop:
                return Reply("250 2.0.0 Ok\r\n"u8);
            case SmtpVerb.Vrfy:
                return Reply("252 2.0.0 Ok\r\n"u8);
            case SmtpVerb.Quit:
                _output.Write("221 2.0.0 Bye\r\n"u8);
                _closeAfterFlush = true;
                return false;
            default:
                return Reply("502 5.5.2 sink: command not recognized\r\n"u8);
        }
    }

    private bool Bdat(ReadOnlySpan<byte> argument)
    {
        int space = argument.IndexOf((byte)' ');
        var sizeText = space < 0 ? argument : argument[..space];
        var rest = space < 0 ? default : argument[(space + 1)..];
        if (!Utf8Parser.TryParse(sizeText, out long size, out int used) || used != sizeText.Length || size < 0)
        {
            // Without a valid size the chunk's end is unknown: the only safe answer is to hang up.
            _output.Write("501 5.5.4 sink: BDAT needs a chunk size; closing connection\r\n"u8);
            _closeAfterFlush = true;
            return false;
        }
        bool last = Ascii.EqualsIgnoreCase(rest, "LAST"u8);
        _chunkRemaining = size;
        _chunkLast = last;
        if (_recipients == 0)
        {
            _phase = Phase.DiscardChunk;
            return true;
        }
        if (!_inBdat)
        {
            StartMessage();
            _inBdat = true;
        }
        _phase = Phase.Chunk;
        return true;
    }

    private bool _inBdat;

    private void StartMessage()
    {
        _sink.DataStarted();
        _messageBytes = 0;
        _saved?.ResetWrittenCount();
    }

    private async ValueTask FinishMessageAsync()
    {
        long bytes = _phase == Phase.Data ? _unstuffer.MessageSize : _messageBytes;
        _phase = Phase.Command;
        bool accepted = _sink.DataAccepted;
        _sink.CountMessage(bytes, accepted);
        if (_saved is not null && accepted)
            await _sink.SaveAsync(_saved.WrittenMemory, _savedSender, _savedRecipients!);
        if (_sink.Options.Delay > TimeSpan.Zero)
        {
            // A slow destination: earlier replies go out now, this one after the delay.
            await _output.FlushAsync();
            try
            {
                await Task.Delay(_sink.Options.Delay, _stopping);
            }
            catch (OperationCanceledException)
            {
                // The sink is stopping: answer now.
            }
        }
        _output.Write(_sink.DataReply);
        ResetTransaction();
    }

    private bool Reply(ReadOnlySpan<byte> reply)
    {
        _output.Write(reply);
        return true;
    }

    private void ResetTransaction()
    {
        _haveMail = false;
        _recipients = 0;
        _messageBytes = 0;
        _inBdat = false;
        _savedRecipients?.Clear();
        _savedSender = "";
        if (_phase == Phase.Chunk)
            _phase = Phase.Command;
    }

    // "FROM:<a@b> SIZE=1" or "TO:<a@b>" -> "a@b" (only for --save).
    private static string AngleAddress(ReadOnlySpan<byte> argument)
    {
        int open = argument.IndexOf((byte)'<');
        int close = open < 0 ? -1 : argument[(open + 1)..].IndexOf((byte)'>');
        var address = open >= 0 && close >= 0 ? argument.Slice(open + 1, close) : argument;
        return Encoding.UTF8.GetString(address);
    }

    /// <summary>Takes message bytes and forgets them: what the sink does with content it does not save.</summary>
    private sealed class DiscardWriter : IBufferWriter<byte>
    {
        private readonly byte[] _scratch = new byte[16 * 1024];

        public void Advance(int count)
        {
        }

        public Memory<byte> GetMemory(int sizeHint = 0) =>
            sizeHint <= _scratch.Length ? _scratch : new byte[sizeHint];

        public Span<byte> GetSpan(int sizeHint = 0) =>
            sizeHint <= _scratch.Length ? _scratch : new byte[sizeHint];
    }
}
