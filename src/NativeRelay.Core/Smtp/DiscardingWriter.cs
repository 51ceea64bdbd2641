using System.Buffers;

namespace NativeRelay.Smtp;

/// <summary>
/// Takes message bytes and forgets them: where the rest of a DATA message goes once it is sure to
/// be refused at its end (a line over limits.maxLineLength), so a client cannot make the relay
/// hold up to limits.maxMessageSize of a message it will not queue (issue 30: a 10 MB header
/// line without a line end was buffered whole, and the pool kept the blocks).
/// </summary>
/// <remarks>One instance for all sessions: its scratch is written by many threads at once, which
/// is harmless because nothing ever reads it.</remarks>
internal sealed class DiscardingWriter : IBufferWriter<byte>
{
    public static readonly DiscardingWriter Instance = new();

    private readonly byte[] _scratch = new byte[16 * 1024];

    private DiscardingWriter()
    {
    }

    public void Advance(int count)
    {
    }

    public Memory<byte> GetMemory(int sizeHint = 0) => sizeHint <= _scratch.Length ? _scratch : new byte[sizeHint];

    public Span<byte> GetSpan(int sizeHint = 0) => GetMemory(sizeHint).Span;
}
