using System.Buffers;
using NativeRelay.Message;

namespace NativeRelay.MailAuth.Dkim;

/// <summary>
/// The header section of a message in pooled blocks, as one span: the first block when the
/// section ends there (almost always), otherwise a bounded copy from the shared pool. Signing and
/// verifying read header fields from it and the body from the blocks, from <see cref="BodyStart"/>.
/// </summary>
internal ref struct DkimHeaderSection
{
    /// <summary>Larger header sections are not signed or verified.</summary>
    public const int MaxLength = 1024 * 1024;

    private byte[]? _rented;

    /// <summary>The header fields and the blank line after them (or everything, when there is no body).</summary>
    public ReadOnlySpan<byte> Headers;

    /// <summary>Offset of the body from the message's start.</summary>
    public long BodyStart;

    /// <summary>False when the header section is longer than <see cref="MaxLength"/>.</summary>
    public bool Complete;

    public static DkimHeaderSection Read(MessageBuffer message)
    {
        var section = new DkimHeaderSection { Complete = true };
        var first = message.FirstBlockContent();
        var scanner = new HeaderScanner(first);
        while (scanner.TryReadNext(out _)) { }
        ReadOnlySpan<byte> headers = first;
        if (scanner.Status == HeaderScanStatus.NoBody && first.Length < message.ContentLength)
        {
            int length = (int)Math.Min(message.ContentLength, MaxLength);
            section._rented = ArrayPool<byte>.Shared.Rent(length);
            message.CopyTo(0, section._rented.AsSpan(0, length));
            headers = section._rented.AsSpan(0, length);
            scanner = new HeaderScanner(headers);
            while (scanner.TryReadNext(out _)) { }
            section.Complete = !(scanner.Status == HeaderScanStatus.NoBody && length < message.ContentLength);
        }
        section.BodyStart = scanner.BodyStart;
        section.Headers = headers[..scanner.BodyStart];
        return section;
    }

    public void Dispose()
    {
        if (_rented is not null)
            ArrayPool<byte>.Shared.Return(_rented);
        _rented = null;
    }
}
