using System.Security.Cryptography;
using System.Text;
using BenchmarkDotNet.Attributes;
using NativeRelay.MailAuth.Dkim;
using NativeRelay.Message;
using BcEd25519 = Org.BouncyCastle.Math.EC.Rfc8032.Ed25519;

namespace NativeRelay.Benchmarks;

/// <summary>
/// DKIM signing cost per message (body hash from the pooled blocks, header hash, signature, the
/// field written into the reserved front) for RSA-2048 and Ed25519 at 1 KiB and 100 KiB; and
/// the raw Ed25519 signature of a 32-byte hash by the two candidate libraries, BouncyCastle
/// (taken) and NSec/libsodium (not taken: see perf/RESULTS.md), beside RSA-2048's.
/// </summary>
[MemoryDiagnoser]
public class DkimBenchmarks
{
    private string _dir = "";
    private DkimSigner _signer = null!;
    private DkimSigningKey[] _rsa = [];
    private DkimSigningKey[] _ed = [];
    private MessageBuffer _message1K = null!;
    private MessageBuffer _message100K = null!;
    private readonly byte[] _hash = SHA256.HashData("benchmark"u8);
    private readonly byte[] _signature = new byte[512];
    private byte[] _bcSeed = [];
    private byte[] _bcPublic = [];
    private NSec.Cryptography.Key _nsecKey = null!;
    private const int Reserve = 4096;

    [GlobalSetup]
    public void Setup()
    {
        _dir = Directory.CreateTempSubdirectory("nativerelay-dkim-bench").FullName;
        var (rsaFile, _) = DkimKeygen.Generate("example.org", "rsa", DkimAlgorithm.RsaSha256, 2048, _dir);
        var (edFile, _) = DkimKeygen.Generate("example.org", "ed", DkimAlgorithm.Ed25519Sha256, 0, _dir);
        _signer = DkimSigner.Create(DkimSettings.Validate(new NativeRelay.Config.DkimOptions
        {
            Keys = [new() { Domain = "example.org", Selector = "rsa", KeyFile = rsaFile }, new() { Domain = "example.org", Selector = "ed", KeyFile = edFile }],
        }));
        _rsa = [_signer.Keys[0]];
        _ed = [_signer.Keys[1]];
        _message1K = Buffer(1024);
        _message100K = Buffer(100 * 1024);

        _bcSeed = RandomNumberGenerator.GetBytes(32);
        _bcPublic = new byte[32];
        BcEd25519.GeneratePublicKey(_bcSeed, 0, _bcPublic, 0);
        _nsecKey = NSec.Cryptography.Key.Create(NSec.Cryptography.SignatureAlgorithm.Ed25519);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _signer.Dispose();
        _nsecKey.Dispose();
        Directory.Delete(_dir, recursive: true);
    }

    private static MessageBuffer Buffer(int size)
    {
        var text = new StringBuilder(
            "From: Alice <alice@example.org>\r\nTo: Bob <bob@example.com>\r\nSubject: Quarterly figures and the meeting on Thursday\r\n" +
            "Date: Mon, 23 Nov 2026 07:54:58 +0100\r\nMessage-ID: <20261123065458.12345@example.org>\r\nMIME-Version: 1.0\r\n" +
            "Content-Type: text/plain; charset=utf-8\r\n\r\n");
        while (text.Length < size)
            text.Append("Lorem ipsum dolor sit amet,  consectetur adipiscing elit, sed do eiusmod.\r\n");
        var buffer = MessageBuffer.Rent();
        buffer.Reserve(Reserve);
        buffer.TrimReservedFront(Reserve);
        buffer.Write(Encoding.ASCII.GetBytes(text.ToString(0, size)));
        return buffer;
    }

    private long Sign(MessageBuffer message, DkimSigningKey[] keys)
    {
        _signer.Sign(message, keys);
        long length = message.ContentLength;
        message.TrimReservedFront(Reserve); // drop the field again for the next round
        return length;
    }

    [Benchmark]
    public long SignRsa2048_1K() => Sign(_message1K, _rsa);

    [Benchmark]
    public long SignRsa2048_100K() => Sign(_message100K, _rsa);

    [Benchmark]
    public long SignEd25519_1K() => Sign(_message1K, _ed);

    [Benchmark]
    public long SignEd25519_100K() => Sign(_message100K, _ed);

    private readonly DkimBodyHasher _bodyHasher = new();

    /// <summary>The body hash alone (relaxed canonicalization + SHA-256), beside SHA-256 of the same bytes.</summary>
    [Benchmark]
    public byte BodyHashRelaxed100K()
    {
        _bodyHasher.Reset(DkimCanonicalization.Relaxed);
        foreach (var segment in _message100K.GetSegments())
            _bodyHasher.Append(segment.Span);
        _bodyHasher.Finish(_signature);
        return _signature[0];
    }

    [Benchmark]
    public byte Sha256Only100K()
    {
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var segment in _message100K.GetSegments())
            hash.AppendData(segment.Span);
        hash.GetHashAndReset(_signature);
        return _signature[0];
    }

    [Benchmark]
    public int RawEd25519BouncyCastle()
    {
        BcEd25519.Sign(_bcSeed, 0, _bcPublic, 0, _hash, 0, _hash.Length, _signature, 0);
        return _signature[0];
    }

    [Benchmark]
    public int RawEd25519NSec()
    {
        NSec.Cryptography.SignatureAlgorithm.Ed25519.Sign(_nsecKey, _hash, _signature.AsSpan(0, 64));
        return _signature[0];
    }

    [Benchmark]
    public int RawRsa2048() => _rsa[0].Sign(_hash, _signature);
}
