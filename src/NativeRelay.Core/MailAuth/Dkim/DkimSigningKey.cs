using System.Formats.Asn1;
using System.Security.Cryptography;
using NativeRelay.Config;
using Ed25519Math = Org.BouncyCastle.Math.EC.Rfc8032.Ed25519;

namespace NativeRelay.MailAuth.Dkim;

/// <summary>
/// One private key for d=<see cref="Domain"/>, s=<see cref="Selector"/>: RSA (1024 to 4096 bits,
/// from .NET's own cryptography) or Ed25519 (.NET 10 has none: OpenSSL's libcrypto when it can be
/// loaded, see <see cref="OpenSslEd25519"/>, else BouncyCastle's RFC 8032 code).
/// Read from a PEM file (PKCS#8, or PKCS#1 for RSA). Signing is thread-safe. The key material is
/// never printed; messages name the file.
/// </summary>
public sealed class DkimSigningKey : IDisposable
{
    private const string RsaOid = "1.2.840.113549.1.1.1";
    private const string Ed25519Oid = "1.3.101.112";

    private readonly RSA? _rsa;
    private readonly byte[]? _ed25519Seed;
    private readonly byte[]? _ed25519Public;
    private readonly OpenSslEd25519? _openSsl; // the fast path; BouncyCastle when null

    private DkimSigningKey(string domain, string selector, string file, RSA? rsa, byte[]? ed25519Seed)
    {
        Domain = domain;
        Selector = selector;
        File = file;
        _rsa = rsa;
        _ed25519Seed = ed25519Seed;
        if (ed25519Seed is not null)
        {
            // Kept so each signature does not derive it again (that would double the cost).
            _ed25519Public = new byte[Ed25519Math.PublicKeySize];
            Ed25519Math.GeneratePublicKey(ed25519Seed, 0, _ed25519Public, 0);
            _openSsl = OpenSslEd25519.TryCreate(ed25519Seed);
        }
        Algorithm = rsa is null ? DkimAlgorithm.Ed25519Sha256 : DkimAlgorithm.RsaSha256;
        SignatureLength = rsa is null ? Ed25519Math.SignatureSize : (rsa.KeySize + 7) / 8;
    }

    public string Domain { get; }
    public string Selector { get; }
    public string File { get; }
    public DkimAlgorithm Algorithm { get; }

    /// <summary>Bytes of a signature (b= before base64).</summary>
    public int SignatureLength { get; }

    /// <summary>RSA modulus bits; 256 for Ed25519.</summary>
    public int Bits => _rsa?.KeySize ?? 256;

    /// <summary>Reads the key file. <exception cref="ConfigException">naming the file when it is missing, unreadable or not a usable key.</exception></summary>
    public static DkimSigningKey Load(string domain, string selector, string file)
    {
        string pem;
        try
        {
            pem = System.IO.File.ReadAllText(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"dkim key {file}: cannot read it: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
        return FromPem(domain, selector, file, pem);
    }

    /// <summary>
    /// The key from PEM text (PKCS#8 "PRIVATE KEY" with RSA or Ed25519, or PKCS#1 "RSA PRIVATE KEY").
    /// Anything else, damaged DER included, is a <see cref="ConfigException"/> naming the file.
    /// </summary>
    public static DkimSigningKey FromPem(string domain, string selector, string file, string pem)
    {
        try
        {
            return ParsePem(domain, selector, file, pem);
        }
        catch (Exception e) when (e is CryptographicException or AsnContentException or ArgumentException or FormatException)
        {
            throw new ConfigException($"dkim key {file}: not a usable private key: {e.Message}");
        }
    }

    private static DkimSigningKey ParsePem(string domain, string selector, string file, string pem)
    {
        if (!PemEncoding.TryFind(pem, out var fields))
            throw new ConfigException($"dkim key {file}: no PEM block (expected -----BEGIN PRIVATE KEY-----)");
        var label = pem.AsSpan()[fields.Label];
        var der = Convert.FromBase64String(pem[fields.Base64Data]);
        try
        {
            if (label.SequenceEqual("RSA PRIVATE KEY"))
                return Rsa(domain, selector, file, rsa => rsa.ImportRSAPrivateKey(der, out _));
            if (!label.SequenceEqual("PRIVATE KEY"))
                throw new ConfigException($"dkim key {file}: a {label} PEM block is not a private key (expected PRIVATE KEY or RSA PRIVATE KEY)");
            var (oid, privateKey) = ReadPkcs8(der);
            if (oid == RsaOid)
                return Rsa(domain, selector, file, rsa => rsa.ImportPkcs8PrivateKey(der, out _));
            if (oid != Ed25519Oid)
                throw new ConfigException($"dkim key {file}: algorithm {oid} is neither RSA nor Ed25519");
            // CurvePrivateKey ::= OCTET STRING (RFC 8410 7), 32 bytes of seed.
            var seed = new AsnReader(privateKey, AsnEncodingRules.DER).ReadOctetString();
            if (seed.Length != Ed25519Math.SecretKeySize)
                throw new ConfigException($"dkim key {file}: an Ed25519 private key has 32 bytes, not {seed.Length}");
            return new DkimSigningKey(domain, selector, file, null, seed);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(der);
        }
    }

    private static DkimSigningKey Rsa(string domain, string selector, string file, Action<RSA> import)
    {
        var rsa = RSA.Create();
        try
        {
            import(rsa);
            if (rsa.KeySize is < 1024 or > 4096)
                throw new ConfigException($"dkim key {file}: an RSA key of {rsa.KeySize} bits (1024 to 4096 are allowed, RFC 8301)");
            return new DkimSigningKey(domain, selector, file, rsa, null);
        }
        catch
        {
            rsa.Dispose();
            throw;
        }
    }

    private static (string Oid, byte[] PrivateKey) ReadPkcs8(byte[] der)
    {
        // PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, privateKey OCTET STRING, ... }
        var info = new AsnReader(der, AsnEncodingRules.DER).ReadSequence();
        info.ReadInteger();
        var algorithm = info.ReadSequence();
        var oid = algorithm.ReadObjectIdentifier();
        return (oid, info.ReadOctetString());
    }

    /// <summary>Signs the SHA-256 of the canonical header data (RSA: PKCS#1 v1.5; Ed25519: PureEdDSA over the hash, RFC 8463 3). Returns the signature length.</summary>
    public int Sign(ReadOnlySpan<byte> sha256, Span<byte> signature)
    {
        if (_rsa is not null)
            return _rsa.SignHash(sha256, signature, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        if (_openSsl is not null && _openSsl.TrySign(sha256, signature[..Ed25519Math.SignatureSize]))
            return Ed25519Math.SignatureSize;
        // BouncyCastle's RFC 8032 code takes arrays: two small ones per signature.
        byte[] message = sha256.ToArray();
        byte[] sig = new byte[Ed25519Math.SignatureSize];
        Ed25519Math.Sign(_ed25519Seed!, 0, _ed25519Public!, 0, message, 0, message.Length, sig, 0);
        sig.CopyTo(signature);
        return sig.Length;
    }

    /// <summary>The public key as p= wants it: SubjectPublicKeyInfo for RSA (RFC 6376 3.6.1), the raw 32 bytes for Ed25519 (RFC 8463 4).</summary>
    public byte[] PublicKey()
    {
        if (_rsa is not null)
            return _rsa.ExportSubjectPublicKeyInfo();
        return _ed25519Public!.ToArray();
    }

    /// <summary>The DNS key record's text: "v=DKIM1; k=rsa; p=...".</summary>
    public string KeyRecord() => $"v=DKIM1; k={DkimAlgorithms.KeyType(Algorithm)}; p={Convert.ToBase64String(PublicKey())}";

    public string Describe() => $"{Selector}._domainkey.{Domain} {DkimAlgorithms.Name(Algorithm)}{(_rsa is null ? "" : $" {Bits} bits")} from {File}";

    public void Dispose()
    {
        _rsa?.Dispose();
        _openSsl?.Dispose();
        if (_ed25519Seed is not null)
            CryptographicOperations.ZeroMemory(_ed25519Seed);
    }
}
