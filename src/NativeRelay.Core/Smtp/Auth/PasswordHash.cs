using System.Security.Cryptography;
using System.Text;

namespace NativeRelay.Smtp.Auth;

/// <summary>
/// Salted password hashes of the users file: PBKDF2 with HMAC-SHA-256 (RFC 8018), written as
/// <c>$pbkdf2-sha256$ITERATIONS$SALT$HASH</c> with SALT and HASH in base64 (the layout of
/// passlib and Dovecot's PBKDF2 schemes, so an operator recognises it).
/// </summary>
/// <remarks>
/// 600,000 iterations is OWASP's 2023 figure for PBKDF2-HMAC-SHA256: about a tenth of a second
/// per check on one core, which the relay pays once per user (successful checks are cached, see
/// <see cref="UserStore"/>). The comparison is constant-time.
/// </remarks>
public static class PasswordHash
{
    public const string Scheme = "$pbkdf2-sha256$";
    public const int DefaultIterations = 600_000;
    public const int MinIterations = 1_000;
    public const int MaxIterations = 100_000_000;
    public const int SaltBytes = 16;
    public const int HashBytes = 32;

    /// <summary>Hashes a password with a fresh random salt.</summary>
    public static string Create(ReadOnlySpan<byte> password, int iterations = DefaultIterations)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(iterations, MinIterations);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(iterations, MaxIterations);
        Span<byte> salt = stackalloc byte[SaltBytes];
        RandomNumberGenerator.Fill(salt);
        Span<byte> hash = stackalloc byte[HashBytes];
        Rfc2898DeriveBytes.Pbkdf2(password, salt, hash, iterations, HashAlgorithmName.SHA256);
        return $"{Scheme}{iterations}${Convert.ToBase64String(salt)}${Convert.ToBase64String(hash)}";
    }

    public static string Create(string password, int iterations = DefaultIterations) =>
        Create(Encoding.UTF8.GetBytes(password), iterations);

    /// <summary>A parsed hash, ready to verify against.</summary>
    public sealed class Parsed
    {
        internal Parsed(int iterations, byte[] salt, byte[] hash)
        {
            Iterations = iterations;
            Salt = salt;
            Hash = hash;
        }

        public int Iterations { get; }
        public byte[] Salt { get; }
        public byte[] Hash { get; }

        /// <summary>Derives the key from the password and compares in constant time.</summary>
        public bool Verify(ReadOnlySpan<byte> password)
        {
            Span<byte> derived = stackalloc byte[Hash.Length];
            Rfc2898DeriveBytes.Pbkdf2(password, Salt, derived, Iterations, HashAlgorithmName.SHA256);
            return CryptographicOperations.FixedTimeEquals(derived, Hash);
        }
    }

    /// <summary>Parses <c>$pbkdf2-sha256$N$SALT$HASH</c>; base64 with or without padding.</summary>
    public static bool TryParse(string text, out Parsed? parsed, out string? error)
    {
        parsed = null;
        if (!text.StartsWith(Scheme, StringComparison.Ordinal))
        {
            error = $"unknown hash scheme (expected {Scheme}...; make one with `nativerelay passwd`)";
            return false;
        }
        var parts = text[Scheme.Length..].Split('$');
        if (parts.Length != 3)
        {
            error = "a hash is $pbkdf2-sha256$ITERATIONS$SALT$HASH";
            return false;
        }
        if (!int.TryParse(parts[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int iterations)
            || iterations < MinIterations || iterations > MaxIterations)
        {
            error = $"iterations must be a number from {MinIterations} to {MaxIterations}";
            return false;
        }
        var salt = DecodeBase64(parts[1]);
        var hash = DecodeBase64(parts[2]);
        if (salt is null || salt.Length < 8 || hash is null || hash.Length < 16 || hash.Length > 64)
        {
            error = "salt or hash is not base64 of a sensible length (salt at least 8 bytes, hash 16 to 64)";
            return false;
        }
        parsed = new Parsed(iterations, salt, hash);
        error = null;
        return true;
    }

    private static byte[]? DecodeBase64(string text)
    {
        // passlib's "adapted base64" uses '.' for '+'; accept it, and missing padding.
        var s = text.Replace('.', '+');
        s = (s.Length % 4) switch { 2 => s + "==", 3 => s + "=", _ => s };
        try
        {
            return Convert.FromBase64String(s);
        }
        catch (FormatException)
        {
            return null;
        }
    }
}
