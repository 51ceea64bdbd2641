using System.Security.Cryptography;
using System.Text;
using NativeRelay.Config;
using NativeRelay.MailAuth;
using NativeRelay.MailAuth.Dkim;
using NativeRelay.Message;
using NativeRelay.Routing;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit;

/// <summary>DKIM: canonicalization (RFC 6376 3.4), tag lists, keys, signing and our verifier, with keys served by a real DNS responder.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class DkimTests : IDisposable
{
    private readonly TestDnsServer _dns = new();
    private readonly TempDir _dir = new("nativerelay-dkim");

    public void Dispose()
    {
        _dns.Dispose();
        _dir.Dispose();
    }

    private static byte[] Sha(string s) => SHA256.HashData(Encoding.ASCII.GetBytes(s));

    private static byte[] BodyHash(string body, DkimCanonicalization mode, int pieceSize = int.MaxValue)
    {
        using var hasher = new DkimBodyHasher(mode);
        var bytes = Encoding.ASCII.GetBytes(body);
        for (int i = 0; i < bytes.Length; i += pieceSize)
            hasher.Append(bytes.AsSpan(i, Math.Min(pieceSize, bytes.Length - i)));
        var hash = new byte[32];
        hasher.Finish(hash);
        return hash;
    }

    private static string HeaderCanon(string field, DkimCanonicalization mode)
    {
        // Hash the canonical form and compare with the hash of an expected string: the same code path the signer uses.
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        DkimCanonicalizer.HashHeader(Encoding.ASCII.GetBytes(field), mode, hash);
        return Convert.ToHexString(hash.GetHashAndReset());
    }

    [Fact]
    public void The_RFC_6376_example_canonicalizes_as_the_RFC_says()
    {
        // RFC 6376 3.4.5.
        const string body = " C \r\nD \t E\r\n\r\n\r\n";
        Assert.Equal(Sha(" C\r\nD E\r\n"), BodyHash(body, DkimCanonicalization.Relaxed));
        Assert.Equal(Sha(" C \r\nD \t E\r\n"), BodyHash(body, DkimCanonicalization.Simple));
        Assert.Equal(Convert.ToHexString(Sha("a:X\r\n")), HeaderCanon("A: X\r\n", DkimCanonicalization.Relaxed));
        Assert.Equal(Convert.ToHexString(Sha("b:Y Z\r\n")), HeaderCanon("B : Y\t\r\n\tZ  \r\n", DkimCanonicalization.Relaxed));
        Assert.Equal(Convert.ToHexString(Sha("B : Y\t\r\n\tZ  \r\n")), HeaderCanon("B : Y\t\r\n\tZ  \r\n", DkimCanonicalization.Simple));
    }

    [Fact]
    public void Empty_bodies_and_missing_final_line_ends()
    {
        Assert.Equal(Sha(""), BodyHash("", DkimCanonicalization.Relaxed));
        Assert.Equal(Sha("\r\n"), BodyHash("", DkimCanonicalization.Simple));
        Assert.Equal(Sha(""), BodyHash("\r\n\r\n  \r\n", DkimCanonicalization.Relaxed));
        Assert.Equal(Sha("\r\n"), BodyHash("\r\n\r\n", DkimCanonicalization.Simple));
        Assert.Equal(Sha("abc\r\n"), BodyHash("abc", DkimCanonicalization.Simple));
        Assert.Equal(Sha("abc\r\n"), BodyHash("abc  ", DkimCanonicalization.Relaxed));
        Assert.Equal(Sha("a\r\n\r\nb\r\n"), BodyHash("a\r\n\r\nb\r\n\r\n", DkimCanonicalization.Simple));
        Assert.Equal(Sha(" one two three four\r\nfive six\r\n"), BodyHash("  one two\tthree  four \r\nfive six", DkimCanonicalization.Relaxed));
        Assert.Equal(Sha("one two\r\n"), BodyHash("one two", DkimCanonicalization.Relaxed, 4));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(7)]
    public void A_body_cut_into_pieces_anywhere_hashes_the_same(int pieceSize)
    {
        const string body = "Hello  \t world \r\n\r\n line two\t\r\n\r\n  \r\nlast word of a b c\r\n\r\n\r\n";
        foreach (var mode in new[] { DkimCanonicalization.Relaxed, DkimCanonicalization.Simple })
            Assert.Equal(BodyHash(body, mode), BodyHash(body, mode, pieceSize));
    }

    /// <summary>RFC 6376 3.4.4 written the plain way, to check the run-based hasher against.</summary>
    private static string RelaxedReference(string body)
    {
        var lines = body.Split("\r\n").Select(l => System.Text.RegularExpressions.Regex.Replace(l, "[ \t]+", " ").TrimEnd(' ')).ToList();
        while (lines.Count > 0 && lines[^1].Length == 0)
            lines.RemoveAt(lines.Count - 1);
        return lines.Count == 0 ? "" : string.Join("\r\n", lines) + "\r\n";
    }

    [Fact]
    public void Random_bodies_in_random_pieces_hash_as_the_plain_reading_of_the_RFC_says()
    {
        var random = new Random(6376);
        string[] atoms = ["a", "bc", " ", "  ", "\t", " \t ", "\r\n", "\r\n\r\n", "word", "x y"];
        for (int round = 0; round < 300; round++)
        {
            var body = string.Concat(Enumerable.Range(0, random.Next(0, 40)).Select(_ => atoms[random.Next(atoms.Length)]));
            var expected = Sha(RelaxedReference(body));
            Assert.True(expected.AsSpan().SequenceEqual(BodyHash(body, DkimCanonicalization.Relaxed)), $"relaxed: [{body.Replace("\r", "\\r").Replace("\n", "\\n").Replace("\t", "\\t")}]");
            Assert.True(expected.AsSpan().SequenceEqual(BodyHash(body, DkimCanonicalization.Relaxed, random.Next(1, 6))), $"relaxed in pieces: [{body.Replace("\r", "\\r").Replace("\n", "\\n").Replace("\t", "\\t")}]");
        }
    }

    [Fact]
    public void Tag_lists_trim_white_space_and_refuse_duplicates()
    {
        var text = " v = 1 ;\r\n\ta=rsa-sha256; b= ab\r\n cd ;"u8.ToArray();
        var tags = new (Range, Range)[DkimTagList.MaxTags];
        Assert.True(DkimTagList.TryParse(text, tags, out int count));
        Assert.Equal(3, count);
        Assert.True(DkimTagList.TryGet(text, tags.AsSpan(0, count), "v"u8, out var v));
        Assert.Equal("1", Encoding.ASCII.GetString(text.AsSpan(v)));
        Assert.True(DkimTagList.TryGet(text, tags.AsSpan(0, count), "b"u8, out var b));
        Assert.Equal("ab\r\n cd", Encoding.ASCII.GetString(text.AsSpan(b)));
        Assert.False(DkimTagList.TryParse("a=1; a=2"u8, tags, out _));
        Assert.False(DkimTagList.TryParse("a=1; junk"u8, tags, out _));
        Assert.False(DkimTagList.TryParse("1a=1"u8, tags, out _));
    }

    // ---- keys ----

    private (string File, string Record) NewKey(string domain, string selector, DkimAlgorithm algorithm, int bits = 2048)
    {
        var (file, record) = DkimKeygen.Generate(domain, selector, algorithm, bits, _dir.Path);
        // The zone line's strings, joined, are the TXT record.
        var text = string.Concat(record[(record.IndexOf('"'))..].Split('"').Where((_, i) => i % 2 == 1));
        _dns.Txt($"{selector}._domainkey.{domain}", text);
        return (file, text);
    }

    [Fact]
    public void Keygen_writes_a_private_file_and_a_record_in_255_octet_strings()
    {
        var (file, record) = DkimKeygen.Generate("example.test", "big", DkimAlgorithm.RsaSha256, 4096, _dir.Path);
        Assert.Equal(Path.Combine(_dir.Path, "big.example.test.pem"), file);
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        Assert.StartsWith("big._domainkey.example.test IN TXT \"v=DKIM1; k=rsa; p=", record);
        var strings = record[record.IndexOf('"')..].Split('"').Where((_, i) => i % 2 == 1).ToList();
        Assert.True(strings.Count > 1);
        Assert.All(strings, s => Assert.True(s.Length <= 255));
        using var key = DkimSigningKey.Load("example.test", "big", file);
        Assert.Equal(4096, key.Bits);
        Assert.Equal(key.KeyRecord(), string.Concat(strings));
        // Never over an existing key.
        var e = Assert.Throws<ConfigException>(() => DkimKeygen.Generate("example.test", "big", DkimAlgorithm.RsaSha256, 2048, _dir.Path));
        Assert.Contains("exists", e.Message);

        var (edFile, edRecord) = DkimKeygen.Generate("example.test", "ed", DkimAlgorithm.Ed25519Sha256, 0, _dir.Path);
        Assert.Matches("^ed._domainkey.example.test IN TXT \"v=DKIM1; k=ed25519; p=[A-Za-z0-9+/]{43}=\"$", edRecord);
        using var ed = DkimSigningKey.Load("example.test", "ed", edFile);
        Assert.Equal(DkimAlgorithm.Ed25519Sha256, ed.Algorithm);
    }

    [Fact]
    public void Broken_keys_are_configuration_errors_that_name_the_file()
    {
        var missing = _dir.File("missing.pem");
        Assert.Contains(missing, Assert.Throws<ConfigException>(() => DkimSigningKey.Load("example.test", "s", missing)).Message);
        var garbage = _dir.File("garbage.pem");
        File.WriteAllText(garbage, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n");
        Assert.Contains(garbage, Assert.Throws<ConfigException>(() => DkimSigningKey.Load("example.test", "s", garbage)).Message);
        var notPem = _dir.File("text.pem");
        File.WriteAllText(notPem, "hello");
        Assert.Contains(notPem, Assert.Throws<ConfigException>(() => DkimSigningKey.Load("example.test", "s", notPem)).Message);
        var small = _dir.File("small.pem");
        using (var rsa = RSA.Create(512))
            File.WriteAllText(small, rsa.ExportPkcs8PrivateKeyPem());
        Assert.Contains("512 bits", Assert.Throws<ConfigException>(() => DkimSigningKey.Load("example.test", "s", small)).Message);
        var pkcs1 = _dir.File("pkcs1.pem");
        using (var rsa = RSA.Create(1024))
            File.WriteAllText(pkcs1, rsa.ExportRSAPrivateKeyPem());
        using var key = DkimSigningKey.Load("example.test", "s", pkcs1);
        Assert.Equal(1024, key.Bits);
    }

    // ---- signing and verifying ----

    private const string Message =
        "From: Alice <alice@example.test>\r\n" +
        "To: bob@elsewhere.test\r\n" +
        "Subject: a subject that is long enough to be folded onto a second line when\r\n" +
        " written by a careful client\r\n" +
        "Date: Mon, 7 Dec 2026 02:00:00 +0000\r\n" +
        "Message-ID: <1@example.test>\r\n" +
        "\r\n" +
        "Hello  Bob,\t\r\n\r\nthis is the body.\r\n\r\n\r\n";

    private static MessageBuffer Buffer(string message, int reserve)
    {
        var buffer = MessageBuffer.Rent();
        buffer.Reserve(reserve);
        buffer.TrimReservedFront(reserve);
        buffer.Write(Encoding.UTF8.GetBytes(message));
        return buffer;
    }

    private static byte[] Bytes(MessageBuffer buffer)
    {
        var bytes = new byte[buffer.ContentLength];
        buffer.CopyTo(0, bytes);
        return bytes;
    }

    private DkimSigner Signer(DkimOptions options) => DkimSigner.Create(DkimSettings.Validate(options));

    private DkimVerifier Verifier() => new(new DnsClientResolver([_dns.EndPoint], TimeSpan.FromSeconds(2)));

    private async Task<byte[]> SignAsync(DkimSigner signer, string message, string sender = "alice@example.test", string? user = null, int? reserve = null)
    {
        var buffer = Buffer(message, reserve ?? signer.MaxHeaderLength);
        try
        {
            buffer = await signer.SignAsync(buffer, Encoding.ASCII.GetBytes(sender), user);
            return Bytes(buffer);
        }
        finally
        {
            buffer.Release();
        }
    }

    [Theory]
    [InlineData("relaxed/relaxed")]
    [InlineData("simple/simple")]
    [InlineData("relaxed/simple")]
    public async Task Dual_signatures_verify_with_our_verifier_and_with_dkimpy(string canonicalization)
    {
        var rsa = NewKey("example.test", "rsa", DkimAlgorithm.RsaSha256);
        var ed = NewKey("example.test", "ed", DkimAlgorithm.Ed25519Sha256);
        using var signer = Signer(new DkimOptions
        {
            Canonicalization = canonicalization,
            ExpirationSeconds = 3600,
            Keys = [new() { Domain = "example.test", Selector = "rsa", KeyFile = rsa.File }, new() { Domain = "example.test", Selector = "ed", KeyFile = ed.File }],
        });

        var signed = await SignAsync(signer, Message);
        var text = Encoding.ASCII.GetString(signed);
        Assert.StartsWith("DKIM-Signature: v=1; a=rsa-sha256; c=" + canonicalization + ";\r\n\td=example.test; s=rsa; t=", text);
        Assert.Contains("DKIM-Signature: v=1; a=ed25519-sha256;", text);
        Assert.EndsWith(Message, text);
        // From over-signed; To..Message-ID once; absent fields (Cc, Reply-To...) not listed; no l=.
        Assert.Contains("h=from:from:to:subject:date:message-id;", text);
        Assert.DoesNotContain("l=", text);
        Assert.Matches(@"t=(\d+); x=(\d+);\r\n", text);
        Assert.All(text.Split("\r\n"), line => Assert.True(line.Length <= 78, line));

        var verdicts = await Verifier().VerifyAsync(signed, CancellationToken.None);
        Assert.Equal(2, verdicts.Count);
        Assert.All(verdicts, v => Assert.Equal(DkimResult.Pass, v.Result));
        Assert.Equal(["rsa-sha256", "ed25519-sha256"], verdicts.Select(v => v.Algorithm));
        Assert.All(verdicts, v => Assert.Equal("example.test", v.Domain));
        Assert.All(verdicts, v => Assert.Equal(8, v.SignaturePrefix.Length));

        var dkimpy = await DkimTools.DkimpyVerifyAsync(signed, new Dictionary<string, string>
        {
            ["rsa._domainkey.example.test"] = rsa.Record,
            ["ed._domainkey.example.test"] = ed.Record,
        });
        Assert.Equal(2, dkimpy.Count);
        Assert.All(dkimpy, r => Assert.True(r.Result == "pass", $"{r.Algorithm}: {r.Detail}"));
    }

    [Fact]
    public async Task A_changed_body_or_header_or_an_added_From_fails()
    {
        var rsa = NewKey("example.test", "rsa", DkimAlgorithm.RsaSha256);
        using var signer = Signer(new DkimOptions { Keys = [new() { Domain = "example.test", Selector = "rsa", KeyFile = rsa.File }] });
        var signed = Encoding.ASCII.GetString(await SignAsync(signer, Message));
        var verifier = Verifier();

        var body = await verifier.VerifyAsync(Encoding.ASCII.GetBytes(signed.Replace("the body", "the BODY")), default);
        Assert.Equal(DkimResult.Fail, body[0].Result);
        Assert.Equal("body hash did not verify", body[0].Reason);

        var header = await verifier.VerifyAsync(Encoding.ASCII.GetBytes(signed.Replace("Subject: a subject", "Subject: A subject")), default);
        Assert.Equal(DkimResult.Fail, header[0].Result);
        Assert.Equal("signature did not verify", header[0].Reason);

        var secondFrom = await verifier.VerifyAsync(Encoding.ASCII.GetBytes(signed.Replace("To: bob", "From: mallory@evil.test\r\nTo: bob")), default);
        Assert.Equal(DkimResult.Fail, secondFrom[0].Result);

        // Relaxed canonicalization forgives re-folding and trailing white space.
        var refolded = await verifier.VerifyAsync(Encoding.ASCII.GetBytes(signed.Replace("folded onto a second line when\r\n written", "folded onto a second line when written").Replace("Hello  Bob,", "Hello Bob,")), default);
        Assert.Equal(DkimResult.Pass, refolded[0].Result);
    }

    [Fact]
    public async Task Missing_revoked_and_unreachable_keys_are_perm_or_temp_errors()
    {
        var rsa = NewKey("example.test", "rsa", DkimAlgorithm.RsaSha256);
        using var signer = Signer(new DkimOptions { Keys = [new() { Domain = "example.test", Selector = "rsa", KeyFile = rsa.File }] });
        var signed = Encoding.ASCII.GetString(await SignAsync(signer, Message));

        var otherSelector = Encoding.ASCII.GetBytes(signed.Replace("s=rsa;", "s=gone;"));
        var missing = await Verifier().VerifyAsync(otherSelector, default);
        Assert.Equal(DkimResult.PermError, missing[0].Result);
        Assert.Contains("no key", missing[0].Reason);

        _dns.Txt("rsa._domainkey.example.test", "v=DKIM1; k=rsa; p=");
        var revoked = await Verifier().VerifyAsync(Encoding.ASCII.GetBytes(signed), default);
        Assert.Equal(DkimResult.PermError, revoked[0].Result);
        Assert.Contains("revoked", revoked[0].Reason);

        _dns.ServFail("rsa._domainkey.example.test");
        var temp = await Verifier().VerifyAsync(Encoding.ASCII.GetBytes(signed), default);
        Assert.Equal(DkimResult.TempError, temp[0].Result);
    }

    [Fact]
    public async Task Key_records_are_cached_and_signatures_past_the_limit_are_not_checked()
    {
        var rsa = NewKey("example.test", "rsa", DkimAlgorithm.RsaSha256);
        using var signer = Signer(new DkimOptions { Keys = [new() { Domain = "example.test", Selector = "rsa", KeyFile = rsa.File }] });
        var signed = await SignAsync(signer, Message);
        var verifier = new DkimVerifier(new DnsClientResolver([_dns.EndPoint], TimeSpan.FromSeconds(2)), maxSignatures: 1);
        for (int i = 0; i < 3; i++)
            Assert.Equal(DkimResult.Pass, (await verifier.VerifyAsync(signed, default))[0].Result);
        Assert.Equal(1, _dns.Queries("rsa._domainkey.example.test", "TXT"));

        // Twice signed: only the first is checked.
        var twice = await SignAsync(signer, Encoding.ASCII.GetString(signed));
        Assert.Single(await verifier.VerifyAsync(twice, default));
        Assert.Equal(2, (await Verifier().VerifyAsync(twice, default)).Count);
    }

    [Fact]
    public async Task Expired_signatures_and_unsafe_algorithms_are_perm_errors()
    {
        var rsa = NewKey("example.test", "rsa", DkimAlgorithm.RsaSha256);
        using var signer = DkimSigner.Create(DkimSettings.Validate(new DkimOptions
        {
            ExpirationSeconds = 60,
            Keys = [new() { Domain = "example.test", Selector = "rsa", KeyFile = rsa.File }],
        }), now: () => DateTimeOffset.UtcNow.AddHours(-1));
        var signed = await SignAsync(signer, Message);
        var expired = await Verifier().VerifyAsync(signed, default);
        Assert.Equal(DkimResult.PermError, expired[0].Result);
        Assert.Contains("expired", expired[0].Reason);

        var sha1 = await Verifier().VerifyAsync(Encoding.ASCII.GetBytes(Encoding.ASCII.GetString(signed).Replace("a=rsa-sha256", "a=rsa-sha1")), default);
        Assert.Equal(DkimResult.PermError, sha1[0].Result);
    }

    [Fact]
    public async Task Keys_are_chosen_by_From_then_parent_domains_then_sender_and_user_when_configured()
    {
        var parent = NewKey("example.test", "p", DkimAlgorithm.Ed25519Sha256);
        var other = NewKey("other.test", "o", DkimAlgorithm.Ed25519Sha256);
        using var fromOnly = Signer(new DkimOptions { Keys = [new() { Domain = "example.test", Selector = "p", KeyFile = parent.File }] });
        var news = Message.Replace("alice@example.test", "alice@news.example.test");
        Assert.StartsWith("From:", Encoding.ASCII.GetString(await SignAsync(fromOnly, news)));   // not a configured domain: unsigned

        using var subdomains = Signer(new DkimOptions { Keys = [new() { Domain = "example.test", Selector = "p", KeyFile = parent.File, Subdomains = true }] });
        var signedNews = await SignAsync(subdomains, news);
        Assert.Contains("d=example.test; s=p;", Encoding.ASCII.GetString(signedNews));
        Assert.Equal(DkimResult.Pass, (await Verifier().VerifyAsync(signedNews, default))[0].Result);

        var fromStranger = Message.Replace("alice@example.test", "someone@stranger.test");
        using var bySender = Signer(new DkimOptions
        {
            SignBy = ["from", "sender", "user"],
            Keys = [new() { Domain = "example.test", Selector = "p", KeyFile = parent.File }, new() { Domain = "other.test", Selector = "o", KeyFile = other.File }],
        });
        Assert.Contains("d=other.test;", Encoding.ASCII.GetString(await SignAsync(bySender, fromStranger, sender: "bounces@other.test")));
        Assert.Contains("d=example.test;", Encoding.ASCII.GetString(await SignAsync(bySender, fromStranger, sender: "x@nowhere.test", user: "carol@example.test")));
        Assert.StartsWith("From:", Encoding.ASCII.GetString(await SignAsync(bySender, fromStranger, sender: "", user: null)));
    }

    [Fact]
    public async Task A_signature_that_does_not_fit_the_reserve_goes_to_a_copy_with_room()
    {
        var rsa = NewKey("example.test", "rsa", DkimAlgorithm.RsaSha256, 4096);
        using var signer = Signer(new DkimOptions { Keys = [new() { Domain = "example.test", Selector = "rsa", KeyFile = rsa.File }] });
        // A body over one block, so the copy has to cross blocks too.
        var big = Message + string.Concat(Enumerable.Repeat("0123456789 abcdefghij 0123456789 abcdefghij\r\n", 3000));
        var original = Buffer(big, 16);
        var result = await signer.SignAsync(original, "alice@example.test"u8.ToArray(), null);
        try
        {
            Assert.NotSame(original, result);
            var bytes = Bytes(result);
            Assert.EndsWith(big, Encoding.ASCII.GetString(bytes));
            Assert.Equal(DkimResult.Pass, (await Verifier().VerifyAsync(bytes, default))[0].Result);
            // The same from the pooled blocks, as a receiving session would check it.
            Assert.Equal(DkimResult.Pass, (await Verifier().VerifyAsync(result, default))[0].Result);
            var tampered = Buffer(Encoding.ASCII.GetString(bytes).Replace("abcdefghij\r\n0123", "abcdefghiJ\r\n0123"), 0);
            Assert.Equal(DkimResult.Fail, (await Verifier().VerifyAsync(tampered, default))[0].Result);
            tampered.Release();
        }
        finally
        {
            result.Release();
        }
    }

    [Fact]
    public async Task A_From_below_a_header_section_longer_than_the_first_block_still_picks_the_key()
    {
        var ed = NewKey("example.test", "ed", DkimAlgorithm.Ed25519Sha256);
        using var signer = Signer(new DkimOptions { Keys = [new() { Domain = "example.test", Selector = "ed", KeyFile = ed.File }] });
        var references = "References:" + string.Concat(Enumerable.Range(0, 400).Select(i => $"\r\n <thread-{i}@lists.example.test>"));
        var message = references + "\r\n" + Message;
        Assert.True(message.IndexOf("From:", StringComparison.Ordinal) > MessageBuffer.FirstBlockSize);
        var signed = await SignAsync(signer, message);
        var text = Encoding.ASCII.GetString(signed);
        Assert.StartsWith("DKIM-Signature:", text);
        Assert.Contains("references", text[..text.IndexOf("References:", StringComparison.Ordinal)]);
        Assert.Equal(DkimResult.Pass, (await Verifier().VerifyAsync(signed, default))[0].Result);
        var dkimpy = await DkimTools.DkimpyVerifyAsync(signed, new Dictionary<string, string> { ["ed._domainkey.example.test"] = ed.Record });
        Assert.Equal("pass", Assert.Single(dkimpy).Result);
    }

    [Fact]
    public async Task Messages_signed_by_dkimpy_verify_here_and_broken_ones_do_not()
    {
        using var rsa = RSA.Create(2048);
        var rsaRecord = "v=DKIM1; k=rsa; p=" + Convert.ToBase64String(rsa.ExportSubjectPublicKeyInfo());
        var seed = RandomNumberGenerator.GetBytes(32);
        var edPublic = new byte[32];
        Org.BouncyCastle.Math.EC.Rfc8032.Ed25519.GeneratePublicKey(seed, 0, edPublic, 0);
        _dns.Txt("py._domainkey.example.test", rsaRecord);
        _dns.Txt("pyed._domainkey.example.test", "v=DKIM1; k=ed25519; p=" + Convert.ToBase64String(edPublic));
        var message = DkimTools.Crlf("From: alice@example.test\nTo: bob@elsewhere.test\nSubject: from dkimpy\nDate: Mon, 7 Dec 2026 02:00:00 +0000\nMessage-ID: <py@example.test>\n\nBody  text\t\n\n");

        foreach (var c in new[] { "relaxed/relaxed", "simple/simple" })
        {
            var byRsa = await DkimTools.DkimpySignAsync(message, rsa.ExportRSAPrivateKeyPem(), "py", "example.test", "rsa-sha256", c);
            var byEd = await DkimTools.DkimpySignAsync(message, Convert.ToBase64String(seed), "pyed", "example.test", "ed25519-sha256", c);
            Assert.Equal(DkimResult.Pass, (await Verifier().VerifyAsync(byRsa, default)).Single().Result);
            Assert.Equal(DkimResult.Pass, (await Verifier().VerifyAsync(byEd, default)).Single().Result);

            var broken = Encoding.ASCII.GetBytes(Encoding.ASCII.GetString(byEd).Replace("Body  text", "Body  texT"));
            Assert.Equal(DkimResult.Fail, (await Verifier().VerifyAsync(broken, default)).Single().Result);
            var wrongKey = Encoding.ASCII.GetBytes(Encoding.ASCII.GetString(byRsa).Replace("Subject: from dkimpy", "Subject: from dkimpY"));
            Assert.Equal(DkimResult.Fail, (await Verifier().VerifyAsync(wrongKey, default)).Single().Result);
        }
        var noKey = await DkimTools.DkimpySignAsync(message, rsa.ExportRSAPrivateKeyPem(), "unpublished", "example.test", "rsa-sha256");
        Assert.Equal(DkimResult.PermError, (await Verifier().VerifyAsync(noKey, default)).Single().Result);
        // A key of the other type than a= says.
        _dns.Txt("mixed._domainkey.example.test", rsaRecord);
        var mixed = await DkimTools.DkimpySignAsync(message, Convert.ToBase64String(seed), "mixed", "example.test", "ed25519-sha256");
        Assert.Equal(DkimResult.PermError, (await Verifier().VerifyAsync(mixed, default)).Single().Result);
    }

    [Fact]
    public void The_dkim_section_is_validated()
    {
        Assert.False(DkimSettings.Validate(new DkimOptions()).Signs);
        Assert.Throws<ConfigException>(() => DkimSettings.Validate(new DkimOptions { Canonicalization = "loose" }));
        Assert.Throws<ConfigException>(() => DkimSettings.Validate(new DkimOptions { Headers = ["To", "Subject"] }));
        Assert.Throws<ConfigException>(() => DkimSettings.Validate(new DkimOptions { SignBy = ["envelope"] }));
        Assert.Throws<ConfigException>(() => DkimSettings.Validate(new DkimOptions { Keys = [new() { Domain = "example.test", Selector = "bad selector", KeyFile = "k" }] }));
        Assert.Throws<ConfigException>(() => DkimSettings.Validate(new DkimOptions { Keys = [new() { Domain = "example.test", Selector = "s" }] }));
        var s = DkimSettings.Validate(new DkimOptions { Canonicalization = "simple", Keys = [new() { Domain = "Example.TEST.", Selector = "s", KeyFile = "k" }] });
        Assert.Equal(DkimCanonicalization.Simple, s.BodyCanonicalization);
        Assert.Equal("example.test", s.Keys[0].Domain);
    }
}
