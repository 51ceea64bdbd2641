using System.CommandLine;
using NativeRelay.Config;
using NativeRelay.MailAuth;
using NativeRelay.MailAuth.Dkim;
using NativeRelay.Routing;

namespace NativeRelay.Cli;

/// <summary>
/// <c>nativerelay dkim keygen|verify</c>: thin flag parsing over <see cref="DkimKeygen"/> and
/// <see cref="DkimVerifier"/> (the verifier the relay itself uses).
/// </summary>
internal static class DkimCommand
{
    private static readonly Option<string> Domain = Required(Flags.Text("--domain", "DOMAIN", "the signing domain (d=)"));
    private static readonly Option<string> Selector = Required(Flags.Text("--selector", "SELECTOR", "the selector (s=): the record goes at SELECTOR._domainkey.DOMAIN"));
    private static readonly Option<string> Out = Required(Flags.Text("--out", "DIR", "where the key is written, as SELECTOR.DOMAIN.pem (mode 0600; never overwritten)"));
    private static readonly Option<DkimAlgorithm> Algorithm = Flags.Value("--algorithm", "rsa|ed25519", "the key's algorithm",
        static (flag, text) => text switch
        {
            "rsa" => DkimAlgorithm.RsaSha256,
            "ed25519" => DkimAlgorithm.Ed25519Sha256,
            _ => throw new ConfigException($"{flag}: '{text}' (rsa or ed25519)"),
        }, "rsa").Completing("rsa", "ed25519");
    private static readonly Option<int> Bits = Flags.Value("--bits", "N", "RSA key size",
        static (flag, text) => FlagValues.Int(flag, text, 1024, 4096), DkimKeygen.DefaultRsaBits);

    private static readonly Argument<string> File = Flags.Argument("FILE", "the message (Unix or CRLF line ends)", static (_, text) => text);
    private static readonly Option<string[]> Dns = Flags.Repeatable("--dns", "IP:PORT", "DNS server for the key records", shown: "the configuration's, else /etc/resolv.conf");
    private static readonly Option<string> Config = Flags.Text("--config", "FILE", "take the DNS servers and DKIM limits from this configuration");

    private static Option<T> Required<T>(Option<T> option)
    {
        option.Required = true;
        return option;
    }

    public static Command Build()
    {
        var keygen = new VerbCommand("keygen", "Make a DKIM key and print the DNS TXT record to publish.",
            """
            Writes DIR/SELECTOR.DOMAIN.pem (PKCS#8, mode 0600) and prints the record,
            SELECTOR._domainkey.DOMAIN IN TXT "v=DKIM1; k=...; p=...", split into 255-octet strings.
            """)
        {
            Domain, Selector, Algorithm, Bits, Out,
        };
        keygen.SetAction(result => Keygen(result.GetValue(Domain)!, result.GetValue(Selector)!,
            result.ValueOr(Algorithm, DkimAlgorithm.RsaSha256), result.ValueOr(Bits, DkimKeygen.DefaultRsaBits), result.GetValue(Out)!));

        var verify = new VerbCommand("verify", "Check a message's DKIM signatures, as the relay's inbound checks do.",
            """
            Prints one line per signature (pass, fail, neutral, temperror or permerror, with d=, s=, a= and
            the start of b=). Exit code 0 when there is at least one signature and every one passes, 1 otherwise.
            """)
        {
            File, Dns, Config,
        };
        verify.SetAction((result, _) => VerifyAsync(result.GetValue(File)!, result.ValueOrNull(Dns), result.ValueOrNull(Config)));

        return new VerbCommand("dkim", "Make DKIM keys and check signatures.",
            """
            Signing itself is configured with serve --dkim DOMAIN:SELECTOR:KEYFILE or the dkim section of
            the configuration (docs/CONFIG.md).
            """)
        {
            keygen, verify,
        };
    }

    /// <summary>serve's --dkim DOMAIN:SELECTOR:KEYFILE.</summary>
    public static DkimKeyOptions ParseKeyFlag(string text)
    {
        var parts = text.Split(':', 3);
        if (parts.Length != 3 || parts.Any(p => p.Length == 0))
            throw new ConfigException($"--dkim: '{text}' is not DOMAIN:SELECTOR:KEYFILE");
        return new DkimKeyOptions { Domain = parts[0], Selector = parts[1], KeyFile = parts[2] };
    }

    private static int Keygen(string domain, string selector, DkimAlgorithm algorithm, int bits, string outDir)
    {
        // RSA is OpenSSL's, and so are the random bytes of an Ed25519 seed (RandomNumberGenerator).
        NativeRelay.Net.OpenSslLibrary.Require("dkim keygen");
        var (file, record) = DkimKeygen.Generate(domain, selector, algorithm, bits, outDir);
        Console.Error.WriteLine($"wrote {file} (mode 0600); publish this record:");
        Console.WriteLine(record);
        return 0;
    }

    /// <summary>Prints one line per signature; exit 0 when there is at least one and all pass, 1 otherwise.</summary>
    private static async Task<int> VerifyAsync(string file, string[]? dns, string? configFile)
    {
        NativeRelay.Net.OpenSslLibrary.Require("dkim verify"); // SHA-256, RSA
        var options = configFile is null ? new RelayOptions() : RelaySettings.LoadFile(configFile);
        if (dns is { Length: > 0 })
            options.Routing.Dns = [.. dns];
        var settings = RelaySettings.Validate(options);
        byte[] message;
        try
        {
            message = System.IO.File.ReadAllBytes(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"cannot read {file}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
        message = WithCrlf(message);
        var verifier = DkimVerifier.Create(new DnsClientResolver(settings.Routing.DnsServers, settings.Routing.DnsTimeout), settings.Dkim);
        var verdicts = await verifier.VerifyAsync(message, CancellationToken.None);
        if (verdicts.Count == 0)
            Console.WriteLine("none: no DKIM-Signature");
        foreach (var v in verdicts)
            Console.WriteLine($"{v.Result.ToString().ToLowerInvariant()} d={v.Domain} s={v.Selector} a={v.Algorithm} b={v.SignaturePrefix}{(v.Reason is null ? "" : $" ({v.Reason})")}");
        return verdicts.Count > 0 && verdicts.All(v => v.Result == DkimResult.Pass) ? 0 : 1;
    }

    /// <summary>A message saved with Unix line ends gets its CRLFs back (signatures are over CRLF lines).</summary>
    private static byte[] WithCrlf(byte[] message)
    {
        int lf = message.AsSpan().Count((byte)'\n');
        int crlf = message.AsSpan().Count("\r\n"u8);
        if (lf == crlf)
            return message;
        var text = System.Text.Encoding.Latin1.GetString(message).Replace("\r\n", "\n").Replace("\n", "\r\n");
        return System.Text.Encoding.Latin1.GetBytes(text);
    }
}
