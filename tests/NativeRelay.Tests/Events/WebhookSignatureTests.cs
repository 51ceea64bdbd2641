using System.Security.Cryptography;
using System.Text;
using NativeRelay.Events;

namespace NativeRelay.Tests.Events;

/// <summary>The X-NativeRelay-Signature header against an HMAC computed here, the way a receiver computes it.</summary>
public sealed class WebhookSignatureTests
{
    private static readonly byte[] Secret = Encoding.UTF8.GetBytes("whsec_test_secret");
    private static readonly byte[] Body = Encoding.UTF8.GetBytes("[{\"id\":\"a\",\"type\":\"delivery\"}]");

    [Fact]
    public void Header_is_t_and_v1_with_the_hmac_of_timestamp_dot_body()
    {
        string header = WebhookSignature.Create(Secret, 1765000000, Body);
        var expected = HMACSHA256.HashData(Secret, Encoding.ASCII.GetBytes("1765000000.").Concat(Body).ToArray());
        Assert.Equal($"t=1765000000,v1={Convert.ToHexString(expected).ToLowerInvariant()}", header);
    }

    [Fact]
    public void Verify_accepts_its_own_header_and_refuses_a_changed_body_secret_or_timestamp()
    {
        string header = WebhookSignature.Create(Secret, 1765000000, Body);
        Assert.True(WebhookSignature.Verify(Secret, header, Body, out long t));
        Assert.Equal(1765000000, t);
        var changed = (byte[])Body.Clone();
        changed[^2] ^= 1;
        Assert.False(WebhookSignature.Verify(Secret, header, changed, out _));
        Assert.False(WebhookSignature.Verify("other"u8, header, Body, out _));
        Assert.False(WebhookSignature.Verify(Secret, header.Replace("t=1765000000", "t=1765000001"), Body, out _));
        Assert.False(WebhookSignature.Verify(Secret, "v1=zz", Body, out _));
        Assert.False(WebhookSignature.Verify(Secret, "t=1,v1=nothex", Body, out _));
    }
}
