using System.Globalization;
using System.Security.Cryptography;

namespace NativeRelay.Events;

/// <summary>
/// The <c>X-NativeRelay-Signature</c> header, as Stripe-style receivers check it:
/// <c>t=UNIX-SECONDS,v1=HEX</c> where HEX is the lowercase hex HMAC-SHA256, keyed with the
/// webhook's secret, of the ASCII timestamp, a dot and the exact body bytes. The timestamp lets
/// a receiver refuse replays older than its tolerance.
/// </summary>
public static class WebhookSignature
{
    public const string HeaderName = "X-NativeRelay-Signature";

    public static string Create(ReadOnlySpan<byte> secret, long unixSeconds, ReadOnlySpan<byte> body)
    {
        string t = unixSeconds.ToString(CultureInfo.InvariantCulture);
        return $"t={t},v1={Convert.ToHexStringLower(Mac(secret, t, body))}";
    }

    /// <summary>Checks a header against a body (what a receiver does; the tests use it).</summary>
    public static bool Verify(ReadOnlySpan<byte> secret, string header, ReadOnlySpan<byte> body, out long unixSeconds)
    {
        unixSeconds = 0;
        string? t = null, v1 = null;
        foreach (var part in header.Split(','))
        {
            if (part.StartsWith("t=", StringComparison.Ordinal))
                t = part[2..];
            else if (part.StartsWith("v1=", StringComparison.Ordinal))
                v1 = part[3..];
        }
        if (t is null || v1 is null || !long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out unixSeconds))
            return false;
        byte[] given;
        try
        {
            given = Convert.FromHexString(v1);
        }
        catch (FormatException)
        {
            return false;
        }
        return CryptographicOperations.FixedTimeEquals(given, Mac(secret, t, body));
    }

    private static byte[] Mac(ReadOnlySpan<byte> secret, string t, ReadOnlySpan<byte> body)
    {
        using var hmac = IncrementalHash.CreateHMAC(HashAlgorithmName.SHA256, secret);
        Span<byte> prefix = stackalloc byte[24];
        int n = System.Text.Encoding.ASCII.GetBytes(t, prefix);
        prefix[n++] = (byte)'.';
        hmac.AppendData(prefix[..n]);
        hmac.AppendData(body);
        return hmac.GetHashAndReset();
    }
}
