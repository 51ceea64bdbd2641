using System.Buffers;
using System.IO.Hashing;
using System.Text;

namespace NativeRelay.Traffic.Suppression;

/// <summary>
/// The 64-bit key of an entry: XxHash3 of the address (ASCII letters lowercased), seeded with a
/// secret drawn at start, mixed with the hash of its scope (0 for global). The seed is not stored:
/// the table is rebuilt from the journal at every start, so nobody outside can aim addresses at
/// one probe chain. Two addresses share a key with odds of about n/2^64 per lookup (a million
/// entries: 5e-14), and then the second is taken for the first.
/// </summary>
internal sealed class SuppressionKeys(ulong seed)
{
    private const int StackLimit = 512;

    /// <summary>
    /// A seed from the runtime's own random source (<see cref="System.Random.Shared"/>, seeded by
    /// the process) and the clock. Not <c>RandomNumberGenerator</c> or <c>Guid.NewGuid</c>: the
    /// first loads OpenSSL and the second needs /dev/urandom, and a relay without TLS runs in a
    /// root that has neither (docs/deploy/FOOTPRINT.md; FootprintTests). The seed only has to be
    /// unknown to senders, who never see a hash.
    /// </summary>
    public static SuppressionKeys Random() =>
        new((ulong)System.Random.Shared.NextInt64() ^ (ulong)System.Diagnostics.Stopwatch.GetTimestamp() * 0x9E3779B97F4A7C15UL);

    public ulong Key(ReadOnlySpan<byte> address, ulong scopeHash) => Key(AddressHash(address), scopeHash);

    /// <summary>An entry's key from its address's hash: one address hash serves every scope a lookup tries.</summary>
    public static ulong Key(ulong addressHash, ulong scopeHash)
    {
        ulong h = Mix(addressHash ^ (scopeHash * 0x9E3779B97F4A7C15UL));
        return h < SuppressionTable.FirstKey ? h + SuppressionTable.FirstKey : h;
    }

    /// <summary>The seeded hash of the address with its ASCII letters lowercased (on the stack up to 512 bytes).</summary>
    public ulong AddressHash(ReadOnlySpan<byte> address)
    {
        byte[]? rented = null;
        Span<byte> lower = address.Length <= StackLimit ? stackalloc byte[StackLimit] : (rented = ArrayPool<byte>.Shared.Rent(address.Length));
        lower = lower[..address.Length];
        ToLowerAscii(address, lower);
        ulong h = XxHash3.HashToUInt64(lower, (long)seed);
        if (rented is not null)
            ArrayPool<byte>.Shared.Return(rented);
        return h;
    }

    /// <summary>The hash a scope mixes into its keys: 0 for global, else of "pool:NAME" / "domain:DOMAIN" (the domain lowercased).</summary>
    public ulong ScopeHash(SuppressionScope scope) => scope.Kind switch
    {
        SuppressionScopeKind.Pool => ScopeHash("pool:"u8, Encoding.UTF8.GetBytes(scope.Name!)),
        SuppressionScopeKind.Domain => ScopeHash("domain:"u8, Encoding.UTF8.GetBytes(scope.Name!)),
        _ => 0,
    };

    /// <summary>Without allocating: prefix plus the name, ASCII letters lowercased.</summary>
    public ulong ScopeHash(ReadOnlySpan<byte> prefix, ReadOnlySpan<byte> name)
    {
        int length = prefix.Length + name.Length;
        if (length > StackLimit)
            return 1; // no scope has such a name (TryParse allows 255): matches nothing
        Span<byte> text = stackalloc byte[length];
        prefix.CopyTo(text);
        ToLowerAscii(name, text[prefix.Length..]);
        return XxHash3.HashToUInt64(text, (long)seed) | 2; // never 0 (global)
    }

    private static void ToLowerAscii(ReadOnlySpan<byte> source, Span<byte> destination)
    {
        for (int i = 0; i < source.Length; i++)
        {
            byte b = source[i];
            destination[i] = (uint)(b - 'A') <= 'Z' - 'A' ? (byte)(b | 0x20) : b;
        }
    }

    // MurmurHash3's 64-bit finalizer: every input bit moves every output bit.
    private static ulong Mix(ulong h)
    {
        h ^= h >> 33;
        h *= 0xFF51AFD7ED558CCDUL;
        h ^= h >> 33;
        h *= 0xC4CEB9FE1A85EC53UL;
        h ^= h >> 33;
        return h;
    }
}
