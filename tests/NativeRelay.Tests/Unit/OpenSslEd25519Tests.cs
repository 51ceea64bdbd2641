using System.Security.Cryptography;
using NativeRelay.MailAuth.Dkim;
using Ed25519Math = Org.BouncyCastle.Math.EC.Rfc8032.Ed25519;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// The libcrypto path for Ed25519 signs exactly as BouncyCastle's RFC 8032 code does (Ed25519 is
/// deterministic), for random keys and data of every DKIM length, and its signatures verify.
/// </summary>
public sealed class OpenSslEd25519Tests
{
    [Fact]
    public void Signatures_equal_bouncy_castles_and_verify()
    {
        for (int i = 0; i < 50; i++)
        {
            var seed = RandomNumberGenerator.GetBytes(32);
            var data = RandomNumberGenerator.GetBytes(i % 3 == 0 ? 32 : i * 7);
            using var key = OpenSslEd25519.TryCreate(seed);
            Assert.NotNull(key); // libcrypto.so.3 is on every machine the tests run on (the relay's TLS needs it)

            var fast = new byte[64];
            Assert.True(key.TrySign(data, fast));

            var publicKey = new byte[32];
            Ed25519Math.GeneratePublicKey(seed, 0, publicKey, 0);
            var reference = new byte[64];
            Ed25519Math.Sign(seed, 0, publicKey, 0, data, 0, data.Length, reference, 0);
            Assert.Equal(reference, fast);
            Assert.True(Ed25519Math.Verify(fast, 0, publicKey, 0, data, 0, data.Length));
        }
    }

    [Fact]
    public void A_seed_of_the_wrong_length_gives_no_key()
    {
        Assert.Null(OpenSslEd25519.TryCreate(new byte[31]));
    }
}
