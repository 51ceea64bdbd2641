using System.Net;
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
    public const string Usage = "dkim keygen --domain D --selector S [--algorithm rsa|ed25519] [--bits N] --out DIR | dkim verify FILE [--dns IP:PORT]... [--config FILE]";

    public static async Task<int> RunAsync(string[] args)
    {
        if (args.Length == 0 || args[0] is "--help" or "-h")
        {
            Console.WriteLine("usage: nativerelay " + Usage);
            return args.Length == 0 ? 2 : 0;
        }
        return args[0] switch
        {
            "keygen" => Keygen(args[1..]),
            "verify" => await VerifyAsync(args[1..]),
            _ => throw new ConfigException($"dkim: unknown command '{args[0]}' (keygen or verify)"),
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

    private static int Keygen(string[] args)
    {
        string? domain = null, selector = null, outDir = null;
        var algorithm = DkimAlgorithm.RsaSha256;
        int bits = DkimKeygen.DefaultRsaBits;
        var reader = new ArgReader(args);
        while (reader.TryNextFlag(out var flag))
        {
            switch (flag)
            {
                case "--domain": domain = reader.Value(flag); break;
                case "--selector": selector = reader.Value(flag); break;
                case "--out": outDir = reader.Value(flag); break;
                case "--algorithm":
                    algorithm = reader.Value(flag) switch
                    {
                        "rsa" => DkimAlgorithm.RsaSha256,
                        "ed25519" => DkimAlgorithm.Ed25519Sha256,
                        var other => throw new ConfigException($"--algorithm: '{other}' (rsa or ed25519)"),
                    };
                    break;
                case "--bits":
                    var text = reader.Value(flag);
                    if (!int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out bits))
                        throw new ConfigException($"--bits: '{text}' is not a number");
                    break;
                default:
                    throw new ConfigException($"unknown flag '{flag}' for dkim keygen");
            }
        }
        if (domain is null || selector is null || outDir is null)
            throw new ConfigException("usage: nativerelay dkim keygen --domain D --selector S [--algorithm rsa|ed25519] [--bits N] --out DIR");
        var (file, record) = DkimKeygen.Generate(domain, selector, algorithm, bits, outDir);
        Console.Error.WriteLine($"wrote {file} (mode 0600); publish this record:");
        Console.WriteLine(record);
        return 0;
    }

    /// <summary>Prints one line per signature; exit 0 when there is at least one and all pass, 1 otherwise.</summary>
    private static async Task<int> VerifyAsync(string[] args)
    {
        if (args.Length == 0 || args[0].StartsWith("--", StringComparison.Ordinal))
            throw new ConfigException("usage: nativerelay dkim verify FILE [--dns IP:PORT]... [--config FILE]");
        string file = args[0];
        var options = new RelayOptions();
        List<string>? dns = null;
        var reader = new ArgReader(args[1..]);
        while (reader.TryNextFlag(out var flag))
        {
            switch (flag)
            {
                case "--config": options = RelaySettings.LoadFile(reader.Value(flag)); break;
                case "--dns": (dns ??= new()).Add(reader.Value(flag)); break;
                default: throw new ConfigException($"unknown flag '{flag}' for dkim verify");
            }
        }
        if (dns is not null)
            options.Routing.Dns = dns;
        var settings = RelaySettings.Validate(options);
        byte[] message;
        try
        {
            message = File.ReadAllBytes(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"cannot read {file}: {e.Message}");
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
