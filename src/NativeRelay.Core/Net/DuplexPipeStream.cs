using System.IO.Pipelines;

namespace NativeRelay.Net;

/// <summary>
/// A connection's pipes seen as one duplex <see cref="Stream"/>, for an <see cref="System.Net.Security.SslStream"/>
/// to sit on: reads come from <see cref="PipeReader.AsStream"/>, writes go to <see cref="PipeWriter.AsStream"/>.
/// Neither pipe is completed when the stream is disposed; the connection owns them.
/// </summary>
internal sealed class DuplexPipeStream : Stream
{
    private readonly Stream _read;
    private readonly Stream _write;

    public DuplexPipeStream(IDuplexPipe pipe)
        : this(pipe.Input, pipe.Output)
    {
    }

    public DuplexPipeStream(PipeReader reader, PipeWriter writer)
    {
        _read = reader.AsStream(leaveOpen: true);
        _write = writer.AsStream(leaveOpen: true);
    }

    public override bool CanRead => true;
    public override bool CanWrite => true;
    public override bool CanSeek => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

    public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        _read.ReadAsync(buffer, cancellationToken);

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        _read.ReadAsync(buffer, offset, count, cancellationToken);

    public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default) =>
        _write.WriteAsync(buffer, cancellationToken);

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        _write.WriteAsync(buffer, offset, count, cancellationToken);

    public override Task FlushAsync(CancellationToken cancellationToken) => _write.FlushAsync(cancellationToken);

    // SslStream is only ever used asynchronously here; the synchronous members exist for completeness.
    public override int Read(byte[] buffer, int offset, int count) => _read.Read(buffer, offset, count);
    public override void Write(byte[] buffer, int offset, int count) => _write.Write(buffer, offset, count);
    public override void Flush() => _write.Flush();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _read.Dispose();
            _write.Dispose();
        }
        base.Dispose(disposing);
    }
}
