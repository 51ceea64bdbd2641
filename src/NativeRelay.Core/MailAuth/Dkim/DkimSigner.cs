using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using NativeRelay.Message;
using NativeRelay.Telemetry;

namespace NativeRelay.MailAuth.Dkim;

/// <summary>
/// Signs messages (RFC 6376 5, RFC 8463): picks the keys by the From: domain (or the envelope
/// sender's, or the authenticated user's, as configured), hashes the body once straight from the
/// pooled blocks, signs the selected header fields with each key of the domain (dual RSA and
/// Ed25519 signatures when it has both), and writes the DKIM-Signature fields into the message
/// buffer's reserved front. The key choice is a header scan on the calling thread; the hashing
/// and the signing run on the thread pool, never on a socket thread.
/// </summary>
public sealed class DkimSigner : IMessageSigner, IDisposable
{
    private const int FoldWidth = 72;

    [ThreadStatic] private static SigningScratch? t_scratch;

    private readonly DkimSettings _settings;
    private readonly Log? _log;
    private readonly Func<DateTimeOffset> _now;
    private readonly Dictionary<string, DkimSigningKey[]> _exact = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, DkimSigningKey[]>.AlternateLookup<ReadOnlySpan<char>> _exactLookup;
    private readonly Dictionary<string, DkimSigningKey[]> _parents = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, DkimSigningKey[]>.AlternateLookup<ReadOnlySpan<char>> _parentLookup;
    private readonly byte[][] _headers;   // lower-case names to sign, in h= order
    private readonly bool[] _overSign;    // per name of _headers: listed once more than it occurs
    private readonly List<DkimSigningKey> _keys = [];

    private DkimSigner(DkimSettings settings, Log? log, Func<DateTimeOffset>? now)
    {
        _settings = settings;
        _log = log;
        _now = now ?? (() => DateTimeOffset.UtcNow);
        _exactLookup = _exact.GetAlternateLookup<ReadOnlySpan<char>>();
        _parentLookup = _parents.GetAlternateLookup<ReadOnlySpan<char>>();
        var names = settings.Headers.Select(h => h.ToLowerInvariant()).ToList();
        foreach (var o in settings.OverSign.Select(h => h.ToLowerInvariant()))
            if (!names.Contains(o))
                names.Add(o);
        _headers = names.Select(Encoding.ASCII.GetBytes).ToArray();
        _overSign = names.Select(n => settings.OverSign.Any(o => o.Equals(n, StringComparison.OrdinalIgnoreCase))).ToArray();
    }

    /// <summary>Loads every configured key (<see cref="NativeRelay.Config.ConfigException"/> naming the file of a bad one).</summary>
    public static DkimSigner Create(DkimSettings settings, Log? log = null, Func<DateTimeOffset>? now = null)
    {
        var signer = new DkimSigner(settings, log, now);
        try
        {
            foreach (var k in settings.Keys)
                signer._keys.Add(DkimSigningKey.Load(k.Domain, k.Selector, k.KeyFile));
        }
        catch
        {
            signer.Dispose();
            throw;
        }
        foreach (var group in settings.Keys.Zip(signer._keys).GroupBy(p => p.First.Domain, StringComparer.OrdinalIgnoreCase))
        {
            var keys = group.Select(p => p.Second).ToArray();
            signer._exact[group.Key] = keys;
            if (group.Any(p => p.First.Subdomains))
                signer._parents[group.Key] = group.Where(p => p.First.Subdomains).Select(p => p.Second).ToArray();
        }
        signer.MaxHeaderLength = signer._exact.Values.Max(signer.EstimateLength);
        return signer;
    }

    public IReadOnlyList<DkimSigningKey> Keys => _keys;

    public int MaxHeaderLength { get; private set; }

    public async ValueTask<MessageBuffer> SignAsync(MessageBuffer message, byte[] envelopeSender, string? authenticatedUser)
    {
        var keys = FindKeys(message, envelopeSender, authenticatedUser);
        if (keys is null)
            return message;
        return await Task.Run(() => Sign(message, keys)).ConfigureAwait(false);
    }

    /// <summary>The keys for this message, or null (a debug line says why it goes unsigned).</summary>
    public DkimSigningKey[]? FindKeys(MessageBuffer message, ReadOnlySpan<byte> envelopeSender, string? authenticatedUser)
    {
        foreach (var by in _settings.SignBy)
        {
            DkimSigningKey[]? keys = by switch
            {
                DkimSignBy.From => FindByFrom(message),
                DkimSignBy.Sender => FindByAddress(envelopeSender),
                _ => authenticatedUser is null ? null : FindByAddress(Encoding.UTF8.GetBytes(authenticatedUser)),
            };
            if (keys is not null)
                return keys;
        }
        if (_log?.IsEnabled(LogLevel.Debug) == true)
            _log.Debug($"dkim: no key for this message (from {FromDomainForLog(message)}, sender {Encoding.UTF8.GetString(envelopeSender)}): sent unsigned");
        return null;
    }

    private DkimSigningKey[]? FindByFrom(MessageBuffer message)
    {
        // The whole header section: a long References: can push From: past the first block.
        using var section = DkimHeaderSection.Read(message);
        return TryFindFrom(section.Headers, out var value) ? FindByAddress(section.Headers[value]) : null;
    }

    private static string FromDomainForLog(MessageBuffer message)
    {
        using var section = DkimHeaderSection.Read(message);
        return TryFindFrom(section.Headers, out var value) ? Encoding.UTF8.GetString(DomainOf(section.Headers[value])) : "(no From)";
    }

    private static bool TryFindFrom(ReadOnlySpan<byte> headers, out Range value)
    {
        var scanner = new HeaderScanner(headers);
        while (scanner.TryReadNext(out var field))
        {
            if (field.NameEquals(headers, "From"u8))
            {
                value = field.ValueStart..field.ValueEnd;
                return true;
            }
        }
        value = default;
        return false;
    }

    /// <summary>The keys for the domain of an address ("Name &lt;a@b&gt;", "a@b"): exact, then parents that sign their subdomains.</summary>
    private DkimSigningKey[]? FindByAddress(ReadOnlySpan<byte> address)
    {
        var domain = DomainOf(address);
        if (domain.IsEmpty || domain.Length > 253)
            return null;
        Span<char> chars = stackalloc char[domain.Length];
        for (int i = 0; i < domain.Length; i++)
            chars[i] = (char)domain[i];
        if (_exactLookup.TryGetValue(chars, out var keys))
            return keys;
        if (_parents.Count == 0)
            return null;
        ReadOnlySpan<char> parent = chars;
        while (parent.IndexOf('.') is int dot and >= 0)
        {
            parent = parent[(dot + 1)..];
            if (_parentLookup.TryGetValue(parent, out keys))
                return keys;
        }
        return null;
    }

    /// <summary>The domain of the (last) address in a From value or a path: after the last '@', to a '&gt;', white space, ',' or ';'.</summary>
    internal static ReadOnlySpan<byte> DomainOf(ReadOnlySpan<byte> value)
    {
        int angle = value.LastIndexOf((byte)'<');
        if (angle >= 0)
        {
            int close = value[angle..].IndexOf((byte)'>');
            value = close < 0 ? value[(angle + 1)..] : value[(angle + 1)..(angle + close)];
        }
        int at = value.LastIndexOf((byte)'@');
        if (at < 0)
            return default;
        var domain = value[(at + 1)..];
        int end = domain.IndexOfAny(" \t\r\n>,;()\""u8);
        if (end >= 0)
            domain = domain[..end];
        if (!domain.IsEmpty && domain[^1] == (byte)'.')
            domain = domain[..^1];
        foreach (byte b in domain)
            if (b >= 0x80)
                return default; // a U-label: keys are configured by A-label
        return domain;
    }

    /// <summary>
    /// Hashes and signs the message with <paramref name="keys"/> and prepends the signature fields.
    /// Synchronous and CPU-bound: <see cref="SignAsync"/> runs it on the thread pool.
    /// </summary>
    public MessageBuffer Sign(MessageBuffer message, DkimSigningKey[] keys)
    {
        var scratch = t_scratch ??= new SigningScratch();
        var section = DkimHeaderSection.Read(message);
        byte[] output = ArrayPool<byte>.Shared.Rent(EstimateLength(keys) + 1024);
        try
        {
            if (!section.Complete)
            {
                _log?.Warn($"dkim: header section over {DkimHeaderSection.MaxLength} bytes: sent unsigned");
                return message;
            }
            var headers = section.Headers;
            long bodyStart = section.BodyStart;

            // The body hash, once for every key (they share the canonicalization).
            Span<byte> bodyHash = stackalloc byte[32];
            var body = scratch.Body;
            body.Reset(_settings.BodyCanonicalization);
            foreach (var segment in message.GetSegments(bodyStart))
                body.Append(segment.Span);
            body.Finish(bodyHash);

            int fieldCount = CollectFields(headers, scratch);
            long now = _now().ToUnixTimeSeconds();
            int written = 0;
            foreach (var key in keys)
                written += WriteSignature(key, headers, scratch.Fields.AsSpan(0, fieldCount), bodyHash, now, scratch, output.AsSpan(written));

            if (message.TryPrepend(output.AsSpan(0, written)))
                return message;
            var copy = message.CopyWithFront(written);
            if (!copy.TryPrepend(output.AsSpan(0, written)))
            {
                copy.Release();
                _log?.Warn($"dkim: {written} bytes of signature fields do not fit before the message: sent unsigned");
                return message;
            }
            message.Release();
            return copy;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(output);
            section.Dispose();
        }
    }

    private static int CollectFields(ReadOnlySpan<byte> headers, SigningScratch scratch)
    {
        var scanner = new HeaderScanner(headers);
        int n = 0;
        while (scanner.TryReadNext(out var field))
        {
            if (n == scratch.Fields.Length)
                Array.Resize(ref scratch.Fields, n * 2);
            scratch.Fields[n++] = field;
        }
        return n;
    }

    /// <summary>Writes one complete DKIM-Signature field (with its CRLF) for <paramref name="key"/>; returns its length.</summary>
    private int WriteSignature(DkimSigningKey key, ReadOnlySpan<byte> headers, ReadOnlySpan<HeaderField> fields,
        ReadOnlySpan<byte> bodyHash, long now, SigningScratch scratch, Span<byte> output)
    {
        var w = new ByteWriter(output);
        w.Ascii("DKIM-Signature: v=1; a=");
        w.Ascii(DkimAlgorithms.Name(key.Algorithm));
        w.Ascii("; c=");
        w.Ascii(DkimCanonicalizer.Name(_settings.HeaderCanonicalization));
        w.Byte((byte)'/');
        w.Ascii(DkimCanonicalizer.Name(_settings.BodyCanonicalization));
        w.Ascii(";\r\n\td=");
        w.Ascii(key.Domain);
        w.Ascii("; s=");
        w.Ascii(key.Selector);
        w.Ascii("; t=");
        w.Number(now);
        if (_settings.ExpirationSeconds > 0)
        {
            w.Ascii("; x=");
            w.Number(now + _settings.ExpirationSeconds);
        }
        w.Ascii(";\r\n\th=");
        int lineStart = w.Length - 3;

        // h=: each configured name as many times as it occurs (instances are taken bottom-up,
        // RFC 6376 5.4.2), once more when over-signed; names absent and not over-signed are left out.
        var hash = scratch.Header;
        bool firstName = true;
        for (int i = 0; i < _headers.Length; i++)
        {
            var name = _headers[i];
            int occurrences = 0;
            for (int f = fields.Length - 1; f >= 0; f--)
            {
                if (!fields[f].NameEquals(headers, name))
                    continue;
                occurrences++;
                DkimCanonicalizer.HashHeader(headers[fields[f].Start..fields[f].End], _settings.HeaderCanonicalization, hash);
            }
            int listed = occurrences + (_overSign[i] ? 1 : 0);
            for (int k = 0; k < listed; k++)
            {
                if (!firstName)
                {
                    w.Byte((byte)':');
                    if (w.Length - lineStart + name.Length > FoldWidth)
                    {
                        w.Ascii("\r\n\t ");
                        lineStart = w.Length - 2;
                    }
                }
                w.Bytes(name);
                firstName = false;
            }
        }
        w.Ascii(";\r\n\tbh=");
        w.Base64(bodyHash);
        w.Ascii(";\r\n\tb=");
        int fieldEnd = w.Length;

        // The field itself, b= empty, no final CRLF (RFC 6376 3.7), then the signature of the hash.
        DkimCanonicalizer.HashHeader(output[..fieldEnd], _settings.HeaderCanonicalization, hash, withCrlf: false);
        Span<byte> headerHash = stackalloc byte[32];
        hash.GetHashAndReset(headerHash);
        Span<byte> signature = stackalloc byte[512];
        int signatureLength = key.Sign(headerHash, signature);

        Span<byte> base64 = stackalloc byte[((signatureLength + 2) / 3) * 4];
        System.Buffers.Text.Base64.EncodeToUtf8(signature[..signatureLength], base64, out _, out int encoded);
        int column = 3;
        for (int i = 0; i < encoded; i += FoldWidth - column)
        {
            if (i > 0)
            {
                w.Ascii("\r\n\t ");
                column = 2;
            }
            w.Bytes(base64.Slice(i, Math.Min(FoldWidth - column, encoded - i)));
        }
        w.Ascii("\r\n");
        return w.Length;
    }

    /// <summary>An upper bound of the fields these keys write when every configured header occurs once.</summary>
    private int EstimateLength(DkimSigningKey[] keys)
    {
        int names = _headers.Sum(h => h.Length + 1) + _overSign.Count(o => o) * 8;
        int total = 0;
        foreach (var key in keys)
        {
            int b64 = (key.SignatureLength + 2) / 3 * 4;
            total += 200 + key.Domain.Length + key.Selector.Length + names * 11 / 10 + b64 + b64 / (FoldWidth - 3) * 4;
        }
        return total;
    }

    public void Dispose()
    {
        foreach (var k in _keys)
            k.Dispose();
    }

    /// <summary>Per-thread reusable state: the hashers and the field list, so signing allocates little.</summary>
    private sealed class SigningScratch
    {
        public readonly DkimBodyHasher Body = new();
        public readonly IncrementalHash Header = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        public HeaderField[] Fields = new HeaderField[64];
    }

    private ref struct ByteWriter(Span<byte> buffer)
    {
        private readonly Span<byte> _buffer = buffer;
        public int Length;

        public void Byte(byte b) => _buffer[Length++] = b;

        public void Bytes(scoped ReadOnlySpan<byte> bytes)
        {
            bytes.CopyTo(_buffer[Length..]);
            Length += bytes.Length;
        }

        public void Ascii(string text) => Length += Encoding.ASCII.GetBytes(text, _buffer[Length..]);

        public void Number(long value)
        {
            value.TryFormat(_buffer[Length..], out int n, default, System.Globalization.CultureInfo.InvariantCulture);
            Length += n;
        }

        public void Base64(scoped ReadOnlySpan<byte> data)
        {
            System.Buffers.Text.Base64.EncodeToUtf8(data, _buffer[Length..], out _, out int n);
            Length += n;
        }
    }
}
