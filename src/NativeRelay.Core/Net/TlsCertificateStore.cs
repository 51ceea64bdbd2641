using System.Net.Security;
using System.Security.Authentication;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using NativeRelay.Config;

namespace NativeRelay.Net;

/// <summary>
/// The server certificate: loaded from PEM files (certificate, then any intermediates, in one
/// file; the private key in another), and replaced without a restart when the files change or on
/// SIGHUP. A reload that fails (a half-written file, a key that does not match) keeps the
/// certificate in use and says why. Handshakes in progress finish with the certificate they
/// started with; the swap is one reference write.
/// </summary>
public sealed class TlsCertificateStore
{
    /// <summary>RFC 8996 retired TLS 1.0 and 1.1; 1.2 is the floor.</summary>
    public const SslProtocols Protocols = SslProtocols.Tls12 | SslProtocols.Tls13;

    private readonly TlsSettings _settings;
    private volatile Loaded _current;

    private TlsCertificateStore(TlsSettings settings, Loaded current)
    {
        _settings = settings;
        _current = current;
    }

    private sealed record Loaded(SslStreamCertificateContext Context, X509Certificate2 Leaf, byte[] Fingerprint);

    /// <summary>Loads the files; any problem is a one-line <see cref="ConfigException"/>.</summary>
    public static TlsCertificateStore Load(TlsSettings settings) => new(settings, Read(settings, ReadFingerprint(settings)));

    public X509Certificate2 Certificate => _current.Leaf;

    /// <summary>"CN=mail.example.com, expires 2027-01-01, SHA-256 AB12..." for the log.</summary>
    public string Describe()
    {
        var leaf = _current.Leaf;
        return $"{leaf.Subject}, expires {leaf.NotAfter.ToUniversalTime():yyyy-MM-dd}, SHA-256 {leaf.GetCertHashString(HashAlgorithmName.SHA256)[..16]}...";
    }

    /// <summary>Options for one server handshake with the current certificate.</summary>
    public SslServerAuthenticationOptions CreateServerOptions() => new()
    {
        ServerCertificateContext = _current.Context,
        EnabledSslProtocols = Protocols,
        ClientCertificateRequired = false,
        CertificateRevocationCheckMode = X509RevocationMode.NoCheck,
        AllowRenegotiation = false,
    };

    /// <summary>
    /// Reloads when the files' contents changed (or when forced, as on SIGHUP). Returns a line for
    /// the log, or null when nothing changed.
    /// </summary>
    public string? Reload(bool force)
    {
        byte[] fingerprint;
        try
        {
            fingerprint = ReadFingerprint(_settings);
        }
        catch (ConfigException e)
        {
            return force ? $"keeping the current certificate: {e.Message}" : null;
        }
        if (!force && fingerprint.AsSpan().SequenceEqual(_current.Fingerprint))
            return null;
        try
        {
            _current = Read(_settings, fingerprint);
            return $"TLS certificate loaded: {Describe()}";
        }
        catch (ConfigException e)
        {
            // Remember the failed contents so the warning is not repeated until the files change again.
            _current = _current with { Fingerprint = fingerprint };
            return $"keeping the current certificate: {e.Message}";
        }
    }

    private static byte[] ReadFingerprint(TlsSettings settings)
    {
        try
        {
            using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
            hash.AppendData(File.ReadAllBytes(settings.CertificatePath));
            hash.AppendData(File.ReadAllBytes(settings.KeyPath));
            return hash.GetHashAndReset();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"cannot read the TLS certificate or key: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
    }

    private static Loaded Read(TlsSettings settings, byte[] fingerprint)
    {
        try
        {
            var leaf = X509Certificate2.CreateFromPemFile(settings.CertificatePath, settings.KeyPath);
            if (!leaf.HasPrivateKey)
                throw new ConfigException($"{settings.KeyPath} holds no private key for {settings.CertificatePath}");
            var chain = new X509Certificate2Collection();
            chain.ImportFromPemFile(settings.CertificatePath);
            var intermediates = new X509Certificate2Collection();
            foreach (var c in chain)
                if (!c.RawDataMemory.Span.SequenceEqual(leaf.RawDataMemory.Span))
                    intermediates.Add(c);
            var context = SslStreamCertificateContext.Create(leaf, intermediates, offline: true);
            return new Loaded(context, leaf, fingerprint);
        }
        catch (ConfigException)
        {
            throw;
        }
        catch (Exception e) when (e is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw new ConfigException($"cannot load the TLS certificate {settings.CertificatePath} with key {settings.KeyPath}: {e.Message.ReplaceLineEndings(" ")}");
        }
    }
}
