using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using NativeRelay.Config;

namespace NativeRelay.TlsPolicies;

/// <summary>
/// The configured CA bundle (outboundTls.caFile, serve --ca-file): trust anchors used beside the
/// system's store. Loaded once per configuration; immutable afterwards.
/// </summary>
public sealed class TrustAnchors
{
    private TrustAnchors(string path, X509Certificate2Collection certificates)
    {
        Path = path;
        Certificates = certificates;
    }

    public string Path { get; }
    public X509Certificate2Collection Certificates { get; }

    /// <summary>Reads every certificate of a PEM file; a missing, unreadable or empty file is a <see cref="ConfigException"/>.</summary>
    public static TrustAnchors Load(string path, string what)
    {
        string full = System.IO.Path.GetFullPath(path);
        var certificates = new X509Certificate2Collection();
        try
        {
            certificates.ImportFromPemFile(full);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or CryptographicException)
        {
            throw new ConfigException($"{what}: cannot read CA certificates from {full}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
        if (certificates.Count == 0)
            throw new ConfigException($"{what}: {full} holds no PEM certificate");
        return new TrustAnchors(full, certificates);
    }
}
