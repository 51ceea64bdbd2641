using System.Runtime.InteropServices;

namespace NativeRelay.Net;

/// <summary>
/// Whether OpenSSL can be loaded. .NET does TLS (and X.509, and most of its crypto) on Linux
/// through OpenSSL, which its shim (linked into the native binary) opens with dlopen the first
/// time it is needed, so <c>ldd</c> does not list it; when it is missing the shim prints "No usable
/// version of libssl was found" and aborts the process, which no catch can turn into an error.
/// This probe asks the dynamic loader for the same files first, so the relay can refuse to start
/// with one line instead (<see cref="NativeRelay.Hosting.StartupChecks"/>), and opportunistic
/// STARTTLS can be skipped rather than abort a delivery.
/// </summary>
public static class OpenSslLibrary
{
    /// <summary>What OpenSSL 3 is made of: libssl needs libcrypto (its DT_NEEDED).</summary>
    public const string LibSsl = "libssl.so.3", LibCrypto = "libcrypto.so.3";

    private static readonly Lazy<string?> s_problem = new(() => Probe(NativeLibrary.TryLoad, Environment.GetEnvironmentVariable("CLR_OPENSSL_VERSION_OVERRIDE")));

    /// <summary>True when OpenSSL can be loaded (the answer is found once and kept).</summary>
    public static bool IsAvailable => s_problem.Value is null;

    /// <summary>Null when OpenSSL can be loaded; otherwise which file is missing, in a few words.</summary>
    public static string? Problem => s_problem.Value;

    /// <summary>
    /// The names .NET's shim tries, in its order: libssl.so.{CLR_OPENSSL_VERSION_OVERRIDE} when
    /// set, libssl.so.3, then OpenSSL 1.1's libssl.so.1.1. When none loads, the missing file is
    /// named: libcrypto.so.3 when that is what is missing (libssl.so.3 cannot load without it),
    /// otherwise libssl.so.3.
    /// </summary>
    internal static string? Probe(TryLoad tryLoad, string? versionOverride)
    {
        if (!string.IsNullOrEmpty(versionOverride) && tryLoad("libssl.so." + versionOverride, out _))
            return null;
        if (tryLoad(LibSsl, out _) || tryLoad("libssl.so.1.1", out _))
            return null;
        return tryLoad(LibCrypto, out _) ? $"{LibSsl} is missing" : $"{LibCrypto} is missing";
    }

    internal delegate bool TryLoad(string name, out IntPtr handle);

    /// <summary>
    /// For a verb that hashes or signs (.NET's hashes, HMAC, PBKDF2 and RSA are OpenSSL's on
    /// Linux): the one-line refusal when OpenSSL cannot be loaded, rather than the shim's abort.
    /// </summary>
    public static void Require(string what)
    {
        if (Problem is { } problem)
            throw new NativeRelay.Config.ConfigException(Refusal(what, problem));
    }

    /// <summary>The one line start-up prints when TLS is configured and OpenSSL cannot be loaded.</summary>
    public static string Refusal(string what, string problem) =>
        $"{what} needs OpenSSL 3, which cannot be loaded: {problem} (install libssl3 on Debian/Ubuntu, openssl on Alpine; on distroless use a base with OpenSSL, e.g. base-debian12; see docs/deploy/FOOTPRINT.md)";
}
