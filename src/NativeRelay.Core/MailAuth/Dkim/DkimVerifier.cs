using System.Security.Cryptography;
using System.Text;
using NativeRelay.Message;
using NativeRelay.Routing;
using Ed25519Math = Org.BouncyCastle.Math.EC.Rfc8032.Ed25519;

namespace NativeRelay.MailAuth.Dkim;

/// <summary>
/// Checks the DKIM-Signature fields of a message (RFC 6376 6, RFC 8463, RFC 8301), at most
/// <c>maxSignatures</c> of them, top first, with the canonicalization code the signer uses. Keys
/// come from DNS through <see cref="DkimKeyLookup"/> (the relay's resolver, cached), all of a
/// message's lookups at once; the hashing is done before the first await, so no span outlives it.
/// </summary>
public sealed class DkimVerifier : IDkimVerifier
{
    private readonly DkimKeyLookup _keys;
    private readonly int _maxSignatures;
    private readonly Func<DateTimeOffset> _now;

    public DkimVerifier(IDnsResolver resolver, int maxSignatures = 5, int keyCacheSize = 10_000, Func<DateTimeOffset>? now = null)
        : this(new DkimKeyLookup(resolver, keyCacheSize), maxSignatures, now)
    {
    }

    public DkimVerifier(DkimKeyLookup keys, int maxSignatures = 5, Func<DateTimeOffset>? now = null)
    {
        _keys = keys;
        _maxSignatures = maxSignatures;
        _now = now ?? (() => DateTimeOffset.UtcNow);
    }

    /// <summary>From the <c>dkim.verify</c> settings.</summary>
    public static DkimVerifier Create(IDnsResolver resolver, DkimSettings settings) =>
        new(resolver, settings.MaxSignatures, settings.KeyCacheSize);

    public Task<IReadOnlyList<DkimVerdict>> VerifyAsync(ReadOnlyMemory<byte> message, CancellationToken cancel)
    {
        var scanner = new HeaderScanner(message.Span);
        while (scanner.TryReadNext(out _)) { }
        var body = message[scanner.BodyStart..];
        return CheckAsync(Prepare(message.Span[..scanner.BodyStart], hasher => hasher.Append(body.Span)), cancel);
    }

    /// <summary>
    /// The same for a message in the relay's pooled blocks (what a receiving session holds): the
    /// header section is read in place (or copied, bounded, when it spans blocks), the body hashed
    /// block by block; nothing of the message is referenced after this returns its task.
    /// </summary>
    public Task<IReadOnlyList<DkimVerdict>> VerifyAsync(MessageBuffer message, CancellationToken cancel)
    {
        var section = DkimHeaderSection.Read(message);
        try
        {
            long bodyStart = section.BodyStart;
            return CheckAsync(Prepare(section.Headers, hasher =>
            {
                foreach (var segment in message.GetSegments(bodyStart))
                    hasher.Append(segment.Span);
            }), cancel);
        }
        finally
        {
            section.Dispose();
        }
    }

    private async Task<IReadOnlyList<DkimVerdict>> CheckAsync(List<Pending> checks, CancellationToken cancel)
    {
        if (checks.Count == 0)
            return [];
        var lookups = new Task<DkimKeyAnswer>?[checks.Count];
        for (int i = 0; i < checks.Count; i++)
            if (checks[i].Verdict is null)
                lookups[i] = _keys.GetAsync(checks[i].Selector, checks[i].Domain);
        var verdicts = new DkimVerdict[checks.Count];
        for (int i = 0; i < checks.Count; i++)
        {
            var c = checks[i];
            if (c.Verdict is not null)
            {
                verdicts[i] = c.Verdict;
                continue;
            }
            var answer = await lookups[i]!.WaitAsync(cancel).ConfigureAwait(false);
            verdicts[i] = Check(c, answer);
        }
        return verdicts;
    }

    /// <summary>What is known of one signature before its key is fetched.</summary>
    private sealed class Pending
    {
        public string Domain = "";
        public string Selector = "";
        public string Algorithm = "";
        public string Prefix = "";
        public string? Identity;
        public DkimAlgorithm Kind;
        public byte[] HeaderHash = [];
        public byte[] Signature = [];
        public DkimVerdict? Verdict; // decided already (malformed, body hash mismatch, expired)

        public DkimVerdict Result(DkimResult result, string? reason) => new(result, Domain, Selector, Algorithm, reason, Prefix);
    }

    /// <summary>Parses and hashes every signature (up to the limit) of a header section; the body comes through <paramref name="feedBody"/>.</summary>
    private List<Pending> Prepare(ReadOnlySpan<byte> message, Action<DkimBodyHasher> feedBody)
    {
        var fields = new List<HeaderField>();
        var scanner = new HeaderScanner(message);
        while (scanner.TryReadNext(out var field))
            fields.Add(field);
        var checks = new List<Pending>();
        using var bodyHasher = new DkimBodyHasher();
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var field in fields)
        {
            if (!field.NameEquals(message, "DKIM-Signature"u8))
                continue;
            if (checks.Count == _maxSignatures)
                break;
            checks.Add(PrepareOne(message, fields, field, feedBody, bodyHasher, hash));
        }
        return checks;
    }

    private Pending PrepareOne(ReadOnlySpan<byte> message, List<HeaderField> fields, HeaderField signatureField,
        Action<DkimBodyHasher> feedBody, DkimBodyHasher bodyHasher, IncrementalHash hash)
    {
        var p = new Pending();
        // Copies (verification is off the sending hot path): the tag helpers below read them.
        var value = signatureField.RawValue(message).ToArray();
        var tagArray = new (Range Name, Range Value)[DkimTagList.MaxTags];
        if (!DkimTagList.TryParse(value, tagArray, out int count))
            return Fail(p, DkimResult.PermError, "signature is not a tag list");
        var tags = tagArray[..count];
        string Tag(ReadOnlySpan<byte> name) => DkimTagList.TryGet(value, tags, name, out var r) ? Encoding.UTF8.GetString(value.AsSpan(r)) : "";
        bool Has(ReadOnlySpan<byte> name) => DkimTagList.TryGet(value, tags, name, out _);

        p.Domain = Tag("d"u8).ToLowerInvariant();
        p.Selector = Tag("s"u8);
        p.Algorithm = Tag("a"u8);
        if (DkimTagList.TryGet(value, tags, "b"u8, out var bRange))
        {
            Span<byte> clean = stackalloc byte[12];
            var raw = value.AsSpan(bRange);
            int take = 0;
            foreach (byte b in raw)
            {
                if (take == clean.Length)
                    break;
                if (b is not ((byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n'))
                    clean[take++] = b;
            }
            p.Prefix = Encoding.ASCII.GetString(clean[..Math.Min(take, 8)]);
        }
        if (Tag("v"u8) != "1")
            return Fail(p, DkimResult.PermError, "v= is not 1");
        foreach (var required in new[] { "a", "b", "bh", "d", "h", "s" })
            if (!Has(Encoding.ASCII.GetBytes(required)))
                return Fail(p, DkimResult.PermError, $"signature has no {required}=");
        if (p.Algorithm == "rsa-sha256")
            p.Kind = DkimAlgorithm.RsaSha256;
        else if (p.Algorithm == "ed25519-sha256")
            p.Kind = DkimAlgorithm.Ed25519Sha256;
        else if (p.Algorithm == "rsa-sha1")
            return Fail(p, DkimResult.PermError, "rsa-sha1 is not accepted (RFC 8301)");
        else
            return Fail(p, DkimResult.PermError, $"unknown algorithm {p.Algorithm}");
        if (p.Domain.Length == 0 || p.Selector.Length == 0)
            return Fail(p, DkimResult.PermError, "empty d= or s=");

        var headerMode = DkimCanonicalization.Simple;
        var bodyMode = DkimCanonicalization.Simple;
        if (Has("c"u8) && !DkimCanonicalizer.TryParse(Tag("c"u8), out headerMode, out bodyMode))
            return Fail(p, DkimResult.PermError, $"unknown canonicalization c={Tag("c"u8)}");
        if (Has("q"u8) && !DkimKeyRecord.ListHas(Encoding.ASCII.GetBytes(Tag("q"u8)), "dns/txt"u8))
            return Fail(p, DkimResult.PermError, "q= does not offer dns/txt");

        var h = Tag("h"u8).Split(':', StringSplitOptions.TrimEntries);
        if (!h.Any(n => n.Equals("from", StringComparison.OrdinalIgnoreCase)))
            return Fail(p, DkimResult.PermError, "From is not signed (h=)");

        if (Has("i"u8))
        {
            p.Identity = Tag("i"u8);
            int at = p.Identity.LastIndexOf('@');
            var iDomain = at < 0 ? "" : p.Identity[(at + 1)..].ToLowerInvariant();
            if (iDomain != p.Domain && !iDomain.EndsWith("." + p.Domain, StringComparison.Ordinal))
                return Fail(p, DkimResult.PermError, "i= is not in d=");
        }
        long? timestamp = null;
        if (Has("t"u8))
        {
            if (!long.TryParse(Tag("t"u8), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long t))
                return Fail(p, DkimResult.PermError, "t= is not a number");
            timestamp = t;
        }
        if (Has("x"u8))
        {
            if (!long.TryParse(Tag("x"u8), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out long x))
                return Fail(p, DkimResult.PermError, "x= is not a number");
            if (timestamp is long t0 && x < t0)
                return Fail(p, DkimResult.PermError, "x= is before t=");
            if (x < _now().ToUnixTimeSeconds())
                return Fail(p, DkimResult.PermError, "signature expired (x=)");
        }
        long limit = long.MaxValue;
        if (Has("l"u8) && !long.TryParse(Tag("l"u8), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out limit))
            return Fail(p, DkimResult.PermError, "l= is not a number");

        var bodyHash = DecodeBase64(Tag("bh"u8));
        p.Signature = DecodeBase64(Tag("b"u8)) ?? [];
        if (bodyHash is null || p.Signature.Length == 0)
            return Fail(p, DkimResult.PermError, "b= or bh= is not base64");

        // The body hash.
        bodyHasher.Reset(bodyMode, limit);
        feedBody(bodyHasher);
        Span<byte> computed = stackalloc byte[32];
        bodyHasher.Finish(computed);
        if (limit != long.MaxValue && bodyHasher.CanonicalLength < limit)
            return Fail(p, DkimResult.PermError, "l= is longer than the body");
        if (!computed.SequenceEqual(bodyHash))
            return Fail(p, DkimResult.Fail, "body hash did not verify");

        // The signed fields, each name's instances from the bottom up (RFC 6376 5.4.2).
        var used = new Dictionary<string, int>(StringComparer.OrdinalIgnoreCase);
        foreach (var name in h)
        {
            used.TryGetValue(name, out int skip);
            used[name] = skip + 1;
            var nameBytes = Encoding.ASCII.GetBytes(name);
            for (int f = fields.Count - 1; f >= 0; f--)
            {
                if (!fields[f].NameEquals(message, nameBytes))
                    continue;
                if (skip-- > 0)
                    continue;
                DkimCanonicalizer.HashHeader(message[fields[f].Start..fields[f].End], headerMode, hash);
                break;
            }
        }
        // The signature field itself, with the value of b= removed and no final CRLF.
        int valueOffset = signatureField.ValueStart;
        var (bStart, bLength) = bRange.GetOffsetAndLength(value.Length);
        var without = new byte[signatureField.ValueEnd - signatureField.Start - bLength];
        message[signatureField.Start..(valueOffset + bStart)].CopyTo(without);
        message[(valueOffset + bStart + bLength)..signatureField.ValueEnd].CopyTo(without.AsSpan(valueOffset + bStart - signatureField.Start));
        DkimCanonicalizer.HashHeader(without, headerMode, hash, withCrlf: false);
        p.HeaderHash = hash.GetHashAndReset();
        return p;
    }

    private static Pending Fail(Pending p, DkimResult result, string reason)
    {
        p.Verdict = p.Result(result, reason);
        return p;
    }

    private static byte[]? DecodeBase64(string text)
    {
        var clean = new byte[text.Length];
        int n = DkimTagList.CopyWithoutWhitespace(Encoding.ASCII.GetBytes(text), clean);
        var decoded = new byte[(n * 3 + 3) / 4];
        if (System.Buffers.Text.Base64.DecodeFromUtf8(clean.AsSpan(0, n), decoded, out _, out int length) != System.Buffers.OperationStatus.Done)
            return null;
        return decoded[..length];
    }

    private static DkimVerdict Check(Pending p, DkimKeyAnswer answer)
    {
        switch (answer.Status)
        {
            case DnsStatus.TempFail:
                return p.Result(DkimResult.TempError, $"key lookup failed: {answer.Error ?? "temporary DNS failure"}");
            case DnsStatus.NxDomain or DnsStatus.NoData:
                return p.Result(DkimResult.PermError, $"no key for {p.Selector}._domainkey.{p.Domain}");
        }
        var key = DkimKeyRecord.Parse(answer.Record!, out var error);
        if (key is null)
            return p.Result(DkimResult.PermError, error);
        if (key.Algorithm != p.Kind)
            return p.Result(DkimResult.PermError, "key type does not match a=");
        if (key.StrictIdentity && p.Identity is not null && !p.Identity.EndsWith("@" + p.Domain, StringComparison.OrdinalIgnoreCase))
            return p.Result(DkimResult.PermError, "key requires i= to be in d= exactly (t=s)");
        bool good;
        if (p.Kind == DkimAlgorithm.Ed25519Sha256)
        {
            if (key.PublicKey.Length != Ed25519Math.PublicKeySize)
                return p.Result(DkimResult.PermError, "Ed25519 key is not 32 bytes");
            good = p.Signature.Length == Ed25519Math.SignatureSize
                   && Ed25519Math.Verify(p.Signature, 0, key.PublicKey, 0, p.HeaderHash, 0, p.HeaderHash.Length);
        }
        else
        {
            using var rsa = RSA.Create();
            try
            {
                try
                {
                    rsa.ImportSubjectPublicKeyInfo(key.PublicKey, out _);
                }
                catch (CryptographicException)
                {
                    rsa.ImportRSAPublicKey(key.PublicKey, out _);
                }
            }
            catch (CryptographicException)
            {
                return p.Result(DkimResult.PermError, "key p= is not an RSA public key");
            }
            if (rsa.KeySize < 1024)
                return p.Result(DkimResult.PermError, $"RSA key of {rsa.KeySize} bits is too short (RFC 8301)");
            good = rsa.VerifyHash(p.HeaderHash, p.Signature, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        }
        return good ? p.Result(DkimResult.Pass, key.Testing ? "key is in test mode (t=y)" : null)
                    : p.Result(DkimResult.Fail, "signature did not verify");
    }
}
