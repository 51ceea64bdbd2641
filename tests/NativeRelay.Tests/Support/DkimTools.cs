using System.Text;

namespace NativeRelay.Tests.Support;

/// <summary>One signature's result from an independent verifier.</summary>
public sealed record ExternalDkimResult(int Index, string Algorithm, string Result, string Detail);

/// <summary>
/// The independent DKIM implementations the tests check against: Debian's python3-dkim (dkimpy,
/// signs and verifies RSA and Ed25519) and libmail-dkim-perl (Mail::DKIM; Debian 12's 1.20230212
/// verifies RSA only and reports an Ed25519 signature as unsupported). Missing tools fail the test
/// (.ci/run installs them). dkimpy is run with Debian's own /usr/bin/python3, whatever python3 PATH finds.
/// </summary>
public static class DkimTools
{
    public const string Python = "/usr/bin/python3";

    private const string VerifyPy = """
import sys, re, dkim
msg = open(sys.argv[1], 'rb').read()
recs = {}
for line in open(sys.argv[2]):
    if line.strip():
        n, r = line.rstrip('\n').split('\t', 1)
        recs[n.lower().rstrip('.')] = r.encode()
def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return recs.get(name.lower().rstrip('.'))
d = dkim.DKIM(msg)
sigs = [v for (k, v) in d.headers if k.lower() == b'dkim-signature']
for i, v in enumerate(sigs):
    a = re.search(rb'a\s*=\s*([\w-]+)', v)
    try:
        ok = d.verify(idx=i, dnsfunc=dnsfunc)
        detail = 'ok' if ok else 'verify returned False'
    except Exception as e:
        ok = False
        detail = repr(e)
    print(i, a.group(1).decode() if a else '?', 'pass' if ok else 'fail', detail.replace('\n', ' '), sep='\t')
""";

    private const string SignPy = """
import sys, dkim
msg = open(sys.argv[1], 'rb').read()
key = open(sys.argv[2], 'rb').read()
alg = sys.argv[5].encode()
c = sys.argv[6].encode().split(b'/')
sig = dkim.sign(msg, sys.argv[3].encode(), sys.argv[4].encode(), key, canonicalize=(c[0], c[1]),
                signature_algorithm=alg, include_headers=[b'from', b'to', b'subject', b'date', b'message-id'])
sys.stdout.buffer.write(sig + msg)
""";

    private const string VerifyPl = """
use strict; use warnings;
use Mail::DKIM::Verifier; use Net::DNS::Resolver;
my ($file, $port) = @ARGV;
Mail::DKIM::DNS::resolver(Net::DNS::Resolver->new(nameservers => ['127.0.0.1'], port => $port, recurse => 1, udp_timeout => 5, retry => 1));
open(my $fh, '<:raw', $file) or die "cannot read $file: $!";
my $data = do { local $/; <$fh> };
my $dkim = Mail::DKIM::Verifier->new();
$dkim->PRINT($data);
$dkim->CLOSE();
my $i = 0;
foreach my $sig ($dkim->signatures) {
    print join("\t", $i++, $sig->algorithm // '?', $sig->result // 'none', $sig->result_detail // ''), "\n";
}
""";

    /// <summary>Runs dkimpy on <paramref name="message"/>; keys come from <paramref name="records"/> ("s._domainkey.d" → TXT text).</summary>
    public static async Task<IReadOnlyList<ExternalDkimResult>> DkimpyVerifyAsync(byte[] message, IReadOnlyDictionary<string, string> records)
    {
        RequirePython();
        using var dir = new TempDir("nativerelay-dkimpy");
        File.WriteAllBytes(dir.File("msg.eml"), message);
        File.WriteAllLines(dir.File("keys.tsv"), records.Select(r => $"{r.Key}\t{r.Value}"));
        var run = await ExternalTool.RunAsync(Python, ["-c", VerifyPy, dir.File("msg.eml"), dir.File("keys.tsv")], TimeSpan.FromMinutes(1));
        Assert.True(run.ExitCode == 0, run.Describe("dkimpy verify"));
        return Parse(run.Stdout);
    }

    /// <summary>Runs Mail::DKIM::Verifier on <paramref name="message"/>, its DNS pointed at the tests' responder on 127.0.0.1:<paramref name="dnsPort"/>.</summary>
    public static async Task<IReadOnlyList<ExternalDkimResult>> MailDkimVerifyAsync(byte[] message, int dnsPort)
    {
        ExternalTool.Require("perl", "perl");
        var check = await ExternalTool.RunAsync("perl", ["-MMail::DKIM::Verifier", "-MNet::DNS::Resolver", "-e", "1"], TimeSpan.FromMinutes(1));
        Assert.True(check.ExitCode == 0, "Mail::DKIM is not installed: run `bash .ci/run` (it installs libmail-dkim-perl) or `apt-get install libmail-dkim-perl`.\n" + check.Describe("perl"));
        using var dir = new TempDir("nativerelay-maildkim");
        File.WriteAllBytes(dir.File("msg.eml"), message);
        var run = await ExternalTool.RunAsync("perl", ["-e", VerifyPl, dir.File("msg.eml"), dnsPort.ToString()], TimeSpan.FromMinutes(1));
        Assert.True(run.ExitCode == 0, run.Describe("Mail::DKIM verify"));
        return Parse(run.Stdout);
    }

    /// <summary>
    /// Signs with dkimpy (From, To, Subject, Date, Message-ID). <paramref name="key"/>: PKCS#1 PEM
    /// for rsa-sha256, the base64 of the 32-byte seed for ed25519-sha256 (dkimpy's forms).
    /// </summary>
    public static async Task<byte[]> DkimpySignAsync(byte[] message, string key, string selector, string domain, string algorithm, string canonicalization = "relaxed/relaxed")
    {
        RequirePython();
        using var dir = new TempDir("nativerelay-dkimpy");
        File.WriteAllBytes(dir.File("msg.eml"), message);
        File.WriteAllText(dir.File("key"), key);
        var psi = new System.Diagnostics.ProcessStartInfo(Python) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { "-c", SignPy, dir.File("msg.eml"), dir.File("key"), selector, domain, algorithm, canonicalization })
            psi.ArgumentList.Add(a);
        using var process = System.Diagnostics.Process.Start(psi)!;
        using var output = new MemoryStream();
        var copy = process.StandardOutput.BaseStream.CopyToAsync(output);
        var errors = process.StandardError.ReadToEndAsync();
        await process.WaitForExitAsync().WaitAsync(TimeSpan.FromMinutes(1));
        await copy;
        Assert.True(process.ExitCode == 0, "dkimpy sign failed: " + await errors);
        return output.ToArray();
    }

    private static void RequirePython()
    {
        if (!File.Exists(Python))
            Assert.Fail($"{Python} is missing: run `bash .ci/run` (it installs python3-dkim) or `apt-get install python3-dkim`.");
    }

    private static List<ExternalDkimResult> Parse(string stdout)
    {
        var results = new List<ExternalDkimResult>();
        foreach (var line in stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var parts = line.Split('\t');
            if (parts.Length >= 3 && int.TryParse(parts[0], out int i))
                results.Add(new ExternalDkimResult(i, parts[1], parts[2], parts.Length > 3 ? parts[3] : ""));
        }
        return results;
    }

    /// <summary>CRLF line ends, as on the wire.</summary>
    public static byte[] Crlf(string text) => Encoding.UTF8.GetBytes(text.ReplaceLineEndings("\r\n"));
}
