using System.Runtime.InteropServices;
using NativeRelay.Net;

namespace NativeRelay.MailAuth.Dkim;

/// <summary>
/// Ed25519 signatures from OpenSSL 3's libcrypto, which .NET already loads for TLS and RSA on
/// Linux: about twice as fast as BouncyCastle's managed RFC 8032 code (which stays the fallback
/// when libcrypto cannot be loaded, so a minimal image without OpenSSL still signs). Ed25519 is
/// deterministic, so both give the same signature for the same key and data (tested).
/// The functions are looked up once with <see cref="NativeLibrary"/> and called through
/// unmanaged function pointers (no marshalling stubs, AOT-safe).
/// </summary>
internal sealed unsafe class OpenSslEd25519 : IDisposable
{
    private const int NidEd25519 = 1087; // EVP_PKEY_ED25519

    private static readonly Api? s_api = Api.Load();
    private IntPtr _key; // EVP_PKEY*, read-only once made: shared by every signing thread (OpenSSL 3 allows it)

    private OpenSslEd25519(IntPtr key) => _key = key;

    /// <summary>The key from its 32-byte seed, or null when libcrypto is not there (or refuses the key).</summary>
    public static OpenSslEd25519? TryCreate(ReadOnlySpan<byte> seed)
    {
        if (s_api is not { } api || seed.Length != 32)
            return null;
        IntPtr key;
        fixed (byte* p = seed)
            key = api.NewRawPrivateKey(NidEd25519, IntPtr.Zero, p, (nuint)seed.Length);
        return key == IntPtr.Zero ? null : new OpenSslEd25519(key);
    }

    /// <summary>PureEdDSA over <paramref name="data"/>; false when OpenSSL reports an error.</summary>
    public bool TrySign(ReadOnlySpan<byte> data, Span<byte> signature)
    {
        var api = s_api!;
        IntPtr ctx = api.MdCtxNew();
        if (ctx == IntPtr.Zero)
            return false;
        try
        {
            if (api.DigestSignInit(ctx, IntPtr.Zero, IntPtr.Zero, IntPtr.Zero, _key) != 1)
                return false;
            nuint length = (nuint)signature.Length;
            fixed (byte* sig = signature)
            fixed (byte* tbs = data)
                return api.DigestSign(ctx, sig, &length, tbs, (nuint)data.Length) == 1 && length == 64;
        }
        finally
        {
            api.MdCtxFree(ctx);
        }
    }

    public void Dispose()
    {
        var key = Interlocked.Exchange(ref _key, IntPtr.Zero);
        if (key != IntPtr.Zero)
            s_api!.PkeyFree(key);
    }

    private sealed class Api
    {
        public delegate* unmanaged<int, IntPtr, byte*, nuint, IntPtr> NewRawPrivateKey;
        public delegate* unmanaged<IntPtr, void> PkeyFree;
        public delegate* unmanaged<IntPtr> MdCtxNew;
        public delegate* unmanaged<IntPtr, void> MdCtxFree;
        public delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, int> DigestSignInit;
        public delegate* unmanaged<IntPtr, byte*, nuint*, byte*, nuint, int> DigestSign;

        public static Api? Load()
        {
            if (Environment.GetEnvironmentVariable("NATIVERELAY_ED25519") == "managed")
                return null; // for comparisons and tests of the fallback
            if (!NativeLibrary.TryLoad(OpenSslLibrary.LibCrypto, out var lib))
                return null;
            if (!NativeLibrary.TryGetExport(lib, "EVP_PKEY_new_raw_private_key", out var newKey)
                || !NativeLibrary.TryGetExport(lib, "EVP_PKEY_free", out var free)
                || !NativeLibrary.TryGetExport(lib, "EVP_MD_CTX_new", out var ctxNew)
                || !NativeLibrary.TryGetExport(lib, "EVP_MD_CTX_free", out var ctxFree)
                || !NativeLibrary.TryGetExport(lib, "EVP_DigestSignInit", out var init)
                || !NativeLibrary.TryGetExport(lib, "EVP_DigestSign", out var sign))
                return null;
            return new Api
            {
                NewRawPrivateKey = (delegate* unmanaged<int, IntPtr, byte*, nuint, IntPtr>)newKey,
                PkeyFree = (delegate* unmanaged<IntPtr, void>)free,
                MdCtxNew = (delegate* unmanaged<IntPtr>)ctxNew,
                MdCtxFree = (delegate* unmanaged<IntPtr, void>)ctxFree,
                DigestSignInit = (delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr, IntPtr, int>)init,
                DigestSign = (delegate* unmanaged<IntPtr, byte*, nuint*, byte*, nuint, int>)sign,
            };
        }
    }
}
