namespace NativeRelay.MailAuth.Dkim;

/// <summary>The signing algorithms (a=): RSA (RFC 6376, RFC 8301: SHA-256 only, 1024 bits at least) and Ed25519 (RFC 8463).</summary>
public enum DkimAlgorithm : byte
{
    RsaSha256,
    Ed25519Sha256,
}

public static class DkimAlgorithms
{
    public static string Name(DkimAlgorithm a) => a == DkimAlgorithm.RsaSha256 ? "rsa-sha256" : "ed25519-sha256";

    /// <summary>The key type of a DNS key record (k=).</summary>
    public static string KeyType(DkimAlgorithm a) => a == DkimAlgorithm.RsaSha256 ? "rsa" : "ed25519";
}
