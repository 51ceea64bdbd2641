using System.Security.Cryptography;
using System.Text;
using NativeRelay.Config;

namespace NativeRelay.MailAuth.Dkim;

/// <summary>
/// <c>nativerelay dkim keygen</c>: makes a key, writes it as DIR/SELECTOR.DOMAIN.pem (PKCS#8,
/// mode 0600, never over an existing file) and returns the DNS record to publish.
/// </summary>
public static class DkimKeygen
{
    public const int DefaultRsaBits = 2048;

    /// <summary>Writes the key file; returns its path and the zone-file line for its public key.</summary>
    public static (string File, string Record) Generate(string domain, string selector, DkimAlgorithm algorithm, int bits, string directory)
    {
        domain = domain.Trim().TrimEnd('.').ToLowerInvariant();
        if (!RelaySettings.IsValidHostname(domain) || !domain.Contains('.'))
            throw new ConfigException($"--domain: '{domain}' is not a domain name");
        if (!RelaySettings.IsValidHostname(selector))
            throw new ConfigException($"--selector: '{selector}' is not a DNS label");
        if (algorithm == DkimAlgorithm.RsaSha256 && bits is < 1024 or > 4096)
            throw new ConfigException($"--bits: {bits} (1024 to 4096; 2048 is the default)");
        string pem = algorithm == DkimAlgorithm.RsaSha256 ? NewRsa(bits) : NewEd25519();
        string file = Path.Combine(directory, $"{selector}.{domain}.pem");
        try
        {
            Directory.CreateDirectory(directory);
            var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows())
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            using var stream = new FileStream(file, options);
            stream.Write(Encoding.ASCII.GetBytes(pem));
        }
        catch (IOException e) when (File.Exists(file))
        {
            throw new ConfigException($"{file} exists already (a key is never overwritten): {e.Message}");
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"cannot write {file}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
        using var key = DkimSigningKey.Load(domain, selector, file);
        return (file, Record(selector, domain, key.KeyRecord()));
    }

    /// <summary>The zone-file line: the record split into character-strings of at most 255 octets (RFC 1035 3.3.14).</summary>
    public static string Record(string selector, string domain, string text)
    {
        var sb = new StringBuilder();
        sb.Append(selector).Append("._domainkey.").Append(domain).Append(" IN TXT");
        for (int i = 0; i < text.Length; i += 255)
            sb.Append(" \"").Append(text, i, Math.Min(255, text.Length - i)).Append('"');
        return sb.ToString();
    }

    private static string NewRsa(int bits)
    {
        using var rsa = RSA.Create(bits);
        return rsa.ExportPkcs8PrivateKeyPem();
    }

    private static string NewEd25519()
    {
        // PrivateKeyInfo { 0, { id-Ed25519 }, OCTET STRING { OCTET STRING seed } } (RFC 8410 7).
        ReadOnlySpan<byte> prefix = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        var der = new byte[prefix.Length + 32];
        prefix.CopyTo(der);
        RandomNumberGenerator.Fill(der.AsSpan(prefix.Length));
        var pem = new string(PemEncoding.Write("PRIVATE KEY", der)) + "\n";
        CryptographicOperations.ZeroMemory(der);
        return pem;
    }
}
