using System.Diagnostics;
using System.Text;
using System.Text.RegularExpressions;
using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// The run-time footprint of docs/deploy/FOOTPRINT.md, checked: the binary runs in a root file
/// system holding only those files (docs/deploy/image/rootfs.sh, the image's root; or the root
/// unpacked from the built image when NATIVERELAY_ROOTFS names it, `make image-test`), with chroot,
/// an empty environment and the image's unprivileged user. It relays over STARTTLS in both
/// directions, and strace shows every file it opened is one the footprint lists; then each file
/// of the footprint is taken away in turn and serve and check-config either run or say in one
/// line what is missing: never a stack trace.
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class FootprintTests(ITestOutputHelper log)
{
    private const string Uid = "65532";
    private const string Binary = "/usr/local/bin/nativerelay";
    private const string ConfigPath = "/etc/nativerelay/nativerelay.json";
    private const string Spool = "/var/spool/nativerelay";
    private const string Lib = "/lib/x86_64-linux-gnu/";

    /// <summary>The files of the footprint, as FOOTPRINT.md lists them (directories end in '/').</summary>
    private static readonly string[] Footprint =
    [
        Binary, Lib + "libc.so.6", Lib + "libm.so.6", Lib + "ld-linux-x86-64.so.2", "/lib64/ld-linux-x86-64.so.2",
        Lib + "libssl.so.3", Lib + "libcrypto.so.3",
        "/etc/ssl/certs/", "/usr/lib/ssl/", "/etc/resolv.conf", "/etc/passwd", "/etc/group",
        "/etc/nativerelay/", Spool + "/",
    ];

    [Fact]
    public async Task The_image_root_relays_over_starttls_and_the_relay_opens_only_footprint_files()
    {
        using var dir = new TempDir();
        var root = MakeRoot(dir);
        var cert = TestCertificate.Create(dir.Path, "hop", "hop.test");
        InstallCertificate(root, dir);

        // The next hop: a relay on the host with a certificate, in front of the test sink; its
        // Received header says whether the image's relay delivered to it over TLS.
        await using var sink = new TestSmtpSink();
        int hopPort = FreePort.Get();
        using var hop = await RelayProcess.StartServeAsync(
            ["--listen", $"127.0.0.1:{hopPort}", "--spool", dir.File("hop-spool"), "--hostname", "hop.test",
             "--relay-to", sink.Endpoint, "--tls-cert", cert.CertificatePath, "--tls-key", cert.KeyPath], hopPort, dir.Path, log);

        int port = FreePort.Get();
        WriteConfig(root, port, tls: true, relayTo: $"127.0.0.1:{hopPort}", extra: "\"delivery\": { \"tlsPolicy\": \"required\" },");
        string trace = dir.File("strace.txt");
        using (var relay = ChrootProcess.Start(root, ["serve", "--config", ConfigPath], log, straceTo: trace))
        {
            await relay.WaitUntilGreetingAsync(port);
            await using (var client = await SecureSmtpClient.ConnectEhloAsync(port))
            {
                await client.StartTlsAsync();
                await client.ExpectAsync("EHLO client.test", 250);
                var queued = await client.SendMessageAsync("alice@client.test", ["bob@example.test"], MessageText.Simple("footprint@client.test"));
                Assert.True(queued.Code == 250, queued.ToString());
            }
            var delivered = await sink.WaitForMessageAsync(m => m.DataText.Contains("footprint@client.test"), TimeSpan.FromSeconds(30), "the message relayed from the image root");
            var received = Regex.Matches(delivered.DataText.Replace("\r\n ", " ").Replace("\r\n\t", " "), @"^Received: (.*)$", RegexOptions.Multiline)
                .Select(m => m.Groups[1].Value).ToList();
            // Newest first: the hop's (the image's relay -> the hop), then the image relay's own (client -> image).
            Assert.True(received.Count >= 2, delivered.DataText);
            Assert.Matches(@"by hop\.test .*with ESMTPS", received[0]);
            Assert.Matches(@"by image\.test .*with ESMTPS", received[1]);

            // The image's health check, run as the image runs it.
            using (var health = ChrootProcess.Start(root, ["queue", "stats", "--config", ConfigPath], log))
                Assert.True(await health.WaitForExitAsync() == 0, health.Output);
            Assert.Equal(0, await relay.StopAsync());
        }

        // Every file the relay opened (successfully) is in the footprint; what it looked for and
        // did not find (/proc, /sys, ...) is logged for the reader, and could only be in the root.
        var (opened, missing) = StraceFiles(trace);
        log.WriteLine("opened: " + string.Join(" ", opened.Order()));
        log.WriteLine("looked for, absent: " + string.Join(" ", missing.Order()));
        var outside = opened.Where(p => !InFootprint(p)).ToList();
        Assert.True(outside.Count == 0, "opened outside the footprint: " + string.Join(", ", outside));
        // TLS really came from the image's OpenSSL.
        Assert.Contains(Lib + "libssl.so.3", opened);
        Assert.Contains(Lib + "libcrypto.so.3", opened);
    }

    [Fact]
    public async Task A_scratch_root_without_etc_relays_plain_smtp_to_an_address_and_without_openssl()
    {
        using var dir = new TempDir();
        var root = MakeRoot(dir);
        Directory.Delete(Path.Combine(root, "etc"), recursive: true);
        foreach (var lib in new[] { "libssl.so.3", "libcrypto.so.3" })
            File.Delete(root + Lib + lib);

        // The next hop offers STARTTLS: without OpenSSL the relay must not try it (the handshake
        // would abort the process) and delivers in plain text, as to a peer without STARTTLS.
        await using var sink = new TestSmtpSink();
        var cert = TestCertificate.Create(dir.Path, "hop", "hop.test");
        int hopPort = FreePort.Get();
        using var hop = await RelayProcess.StartServeAsync(
            ["--listen", $"127.0.0.1:{hopPort}", "--spool", dir.File("hop-spool"), "--hostname", "hop.test",
             "--relay-to", sink.Endpoint, "--tls-cert", cert.CertificatePath, "--tls-key", cert.KeyPath], hopPort, dir.Path, log);
        int port = FreePort.Get();
        using var relay = ChrootProcess.Start(root, ["serve", "--listen", $"127.0.0.1:{port}", "--spool", Spool, "--hostname", "image.test", "--relay-to", $"127.0.0.1:{hopPort}"], log);
        await relay.WaitUntilGreetingAsync(port);
        await using (var client = await SecureSmtpClient.ConnectEhloAsync(port))
        {
            var queued = await client.SendMessageAsync("alice@client.test", ["bob@example.test"], MessageText.Simple("scratch@client.test"));
            Assert.True(queued.Code == 250, queued.ToString());
        }
        var delivered = await sink.WaitForMessageAsync(m => m.DataText.Contains("scratch@client.test"), TimeSpan.FromSeconds(30), "the message relayed from the scratch root");
        Assert.Matches(@"Received: from image\.test .*\s+by hop\.test .*with ESMTP id", delivered.DataText.Replace("\r\n ", " ").Replace("\r\n\t", " "));
        Assert.Equal(0, await relay.StopAsync());
        Assert.DoesNotContain("Unhandled", relay.Output);
        // Skipped STARTTLS is said; MTA-STS is not: with a smarthost nothing goes by MX, where it applies.
        Assert.Contains("STARTTLS to next hops is not attempted", relay.Output);
        Assert.DoesNotContain("MTA-STS", relay.Output);
    }

    public sealed record Missing(string File, bool Tls, bool RelayTo, string? ExpectedLine, bool CheckConfigValid = false);

    /// <summary>
    /// One file of the footprint taken away. ExpectedLine null: serve starts (greets) and
    /// check-config says valid; otherwise both refuse with exit 2 and that line. The libraries the
    /// loader needs fail before the relay runs: the loader's own one line, exit 127.
    /// </summary>
    public static TheoryData<Missing> MissingFiles() => new()
    {
        new(Lib + "libssl.so.3", Tls: true, RelayTo: true, "tls.certificate needs OpenSSL 3, which cannot be loaded: libssl.so.3 is missing (install libssl3 on Debian/Ubuntu"),
        new(Lib + "libcrypto.so.3", Tls: true, RelayTo: true, "tls.certificate needs OpenSSL 3, which cannot be loaded: libcrypto.so.3 is missing (install libssl3 on Debian/Ubuntu"),
        new(Lib + "libssl.so.3", Tls: false, RelayTo: true, null),
        new(Lib + "libcrypto.so.3", Tls: false, RelayTo: true, null),
        new("/etc/resolv.conf", Tls: true, RelayTo: false, "no DNS servers: /etc/resolv.conf is missing; give --dns IP[:PORT] or routing.dns"),
        new("/etc/resolv.conf", Tls: true, RelayTo: true, null),
        new("/etc/ssl/certs/ca-certificates.crt", Tls: true, RelayTo: false, null),
        // .NET's certificate code needs the user's home directory: HOME, or the passwd entry.
        new("/etc/passwd", Tls: true, RelayTo: false, "tls.certificate: the relay's user has no home directory (HOME is unset and /etc/passwd has no entry for uid 65532)"),
        new("/etc/passwd", Tls: false, RelayTo: false, null),
        new("/etc/group", Tls: true, RelayTo: false, null),
        new(Lib + "libm.so.6", Tls: false, RelayTo: true, "error while loading shared libraries: libm.so.6: cannot open shared object file"),
        new(Lib + "libc.so.6", Tls: false, RelayTo: true, "error while loading shared libraries: libc.so.6: cannot open shared object file"),
        new(Lib + "ld-linux-x86-64.so.2", Tls: false, RelayTo: true, "No such file or directory"),
        new(ConfigPath, Tls: false, RelayTo: true, "/etc/nativerelay/nativerelay.json"),
        // check-config does not open the spool; serve cannot make it (/var/spool is root's).
        new(Spool, Tls: false, RelayTo: true, "cannot open the spool /var/spool/nativerelay", CheckConfigValid: true),
    };

    [Theory]
    [MemberData(nameof(MissingFiles))]
    public async Task Without_a_footprint_file_the_relay_runs_or_says_what_is_missing_in_one_line(Missing m)
    {
        using var dir = new TempDir();
        var root = MakeRoot(dir);
        File.WriteAllText(Path.Combine(root, "etc/resolv.conf"), "nameserver 127.0.0.1\n");
        InstallCertificate(root, dir);
        int port = FreePort.Get();
        WriteConfig(root, port, m.Tls, m.RelayTo ? "127.0.0.1:9" : null);
        string path = root + m.File;
        if (Directory.Exists(path))
            Directory.Delete(path, recursive: true);
        else
        {
            Assert.True(File.Exists(path), $"{m.File} is not in the root: the footprint list is stale");
            File.Delete(path);
        }
        bool loaderFails = m.File.StartsWith(Lib + "lib", StringComparison.Ordinal) && m.File.EndsWith(".so.6", StringComparison.Ordinal)
                           || m.File.Contains("ld-linux", StringComparison.Ordinal);

        foreach (var verb in new[] { "check-config", "serve" })
        {
            string[] args = verb == "serve" ? ["serve", "--config", ConfigPath] : ["check-config", ConfigPath];
            using var relay = ChrootProcess.Start(root, args, log);
            if (m.ExpectedLine is null || verb == "check-config" && m.CheckConfigValid)
            {
                if (verb == "serve")
                {
                    await relay.WaitUntilGreetingAsync(port);
                    Assert.Equal(0, await relay.StopAsync());
                }
                else
                {
                    Assert.True(await relay.WaitForExitAsync() == 0, relay.Output);
                    Assert.Contains(": valid", relay.Output);
                }
            }
            else
            {
                int code = await relay.WaitForExitAsync();
                var errors = relay.Stderr.TrimEnd('\n').Split('\n');
                Assert.True(errors.Length == 1, $"{verb}: one line expected:\n{relay.Output}");
                Assert.Contains(m.ExpectedLine, errors[0]);
                if (loaderFails)
                    Assert.Equal(127, code);
                else
                {
                    Assert.Equal(2, code);
                    Assert.StartsWith("nativerelay: ", errors[0]);
                }
            }
            Assert.DoesNotContain("Unhandled", relay.Output);
            Assert.DoesNotContain("   at ", relay.Output);
        }
    }

    /// <summary>
    /// A feature the operator turned on that cannot work without OpenSSL (its cryptography is
    /// OpenSSL's on Linux): in a root without libssl/libcrypto, check-config and serve refuse it in
    /// one line naming the option, exit 2, where the relay used to abort ("No usable version of
    /// libssl was found") when the key, the users or the webhook's name was first computed.
    /// </summary>
    [Theory]
    [InlineData("dkim")]
    [InlineData("usersFile")]
    [InlineData("webhook")]
    public async Task Without_openssl_a_feature_that_needs_it_is_refused_in_one_line(string feature)
    {
        using var dir = new TempDir();
        var root = MakeRoot(dir);
        foreach (var lib in new[] { "libssl.so.3", "libcrypto.so.3" })
            File.Delete(root + Lib + lib);
        int port = FreePort.Get();
        string etc = root + "/etc/nativerelay/";
        (string extra, string option) = feature switch
        {
            "dkim" => Write(etc + "dkim.pem", System.Security.Cryptography.RSA.Create(2048).ExportPkcs8PrivateKeyPem(),
                "\"dkim\": { \"keys\": [ { \"domain\": \"image.test\", \"selector\": \"s1\", \"keyFile\": \"/etc/nativerelay/dkim.pem\" } ] },", "dkim.keys"),
            "usersFile" => Write(etc + "users", "alice:" + NativeRelay.Smtp.Auth.PasswordHash.Create("secret", 1000) + "\n",
                "\"usersFile\": \"/etc/nativerelay/users\",", "usersFile"),
            // No name: the default one is the URL's SHA-256, computed while the options are validated.
            _ => Write(etc + "webhook.secret", "s3cret\n",
                "\"events\": { \"webhooks\": [ { \"url\": \"http://127.0.0.1:9/hook\", \"secretFile\": \"/etc/nativerelay/webhook.secret\" } ] },", "events.webhooks"),
        };
        WriteConfig(root, port, tls: false, relayTo: "127.0.0.1:9", extra: extra);

        foreach (var args in new[] { new[] { "check-config", ConfigPath }, ["serve", "--config", ConfigPath] })
        {
            using var relay = ChrootProcess.Start(root, args, log);
            int code = await relay.WaitForExitAsync();
            var errors = relay.Stderr.TrimEnd('\n').Split('\n');
            Assert.True(errors.Length == 1, $"{args[0]}: one line expected:\n{relay.Output}");
            Assert.StartsWith($"nativerelay: ", errors[0]);
            Assert.Contains($"{option} needs OpenSSL 3, which cannot be loaded: libcrypto.so.3 is missing (install libssl3 on Debian/Ubuntu", errors[0]);
            Assert.True(code == 2, relay.Output);
            Assert.DoesNotContain("No usable version", relay.Output);
        }

        static (string, string) Write(string file, string text, string extra, string option)
        {
            File.WriteAllText(file, text);
            Run("chown", [$"{Uid}:{Uid}", file]);
            return (extra, option);
        }
    }

    /// <summary>
    /// MTA-STS is on by default and a recipient domain decides, by publishing "_mta-sts", whether
    /// the relay fetches a policy over HTTPS: without OpenSSL that handshake would abort the relay
    /// on remote input. In a root without libssl/libcrypto the relay says once at start that
    /// MTA-STS is off, does not even look the record up (it could change nothing), fetches nothing,
    /// delivers to the domain's MX in plain text (its STARTTLS is not tried), and keeps running.
    /// </summary>
    [Fact]
    public async Task Without_openssl_a_domain_publishing_mta_sts_gets_its_mail_and_the_relay_lives_on()
    {
        using var dir = new TempDir();
        var root = MakeRoot(dir);
        foreach (var lib in new[] { "libssl.so.3", "libcrypto.so.3" })
            File.Delete(root + Lib + lib);

        using var pki = new TestPki();
        await using var dns = new TestDnsServer();
        await using var peers = PeerGroup.Start("127.0.0.2");
        peers[0].StartTls = true;
        peers[0].ServerCertificate = pki.Issue(["mx.sts.test"]);
        // The policy would name the MX and enforce TLS: it is served, and must not be asked for.
        await using var policy = new TestHttpsServer("127.0.0.5", pki.Issue(["mta-sts.sts.test"]))
            { Body = "version: STSv1\r\nmode: enforce\r\nmx: mx.sts.test\r\nmax_age: 86400\r\n" };
        dns.Mx("sts.test", (10, "mx.sts.test")).A("mx.sts.test", "127.0.0.2")
           .Txt("_mta-sts.sts.test", "v=STSv1; id=20261207;")
           .A("mta-sts.sts.test", "127.0.0.5");

        int port = FreePort.Get();
        WriteConfig(root, port, tls: false, relayTo: null,
            extra: $"\"routing\": {{ \"dns\": [\"{dns.Address}\"], \"remotePort\": {peers.Port} }}, \"outboundTls\": {{ \"mtaStsPort\": {policy.Port} }},");
        using var relay = ChrootProcess.Start(root, ["serve", "--config", ConfigPath], log);
        await relay.WaitUntilGreetingAsync(port);
        for (int i = 1; i <= 2; i++)
        {
            await using (var client = await SecureSmtpClient.ConnectEhloAsync(port))
            {
                var queued = await client.SendMessageAsync("alice@client.test", ["bob@sts.test"], MessageText.Simple($"sts-{i}@client.test"));
                Assert.True(queued.Code == 250, queued.ToString());
            }
            var got = await peers[0].WaitForMessageAsync(m => m.Header("Message-ID") == $"<sts-{i}@client.test>", $"message {i} at the MX of sts.test");
            Assert.False(got.Tls);
        }
        Assert.True(dns.Queries("sts.test", "MX") >= 1, "the relay never looked up the domain's MX");
        Assert.Equal(0, dns.Queries("_mta-sts.sts.test", "TXT"));
        Assert.Empty(policy.Requests);
        Assert.Equal(0, await relay.StopAsync());
        Assert.Contains("MTA-STS: off, OpenSSL 3 cannot be loaded (libcrypto.so.3 is missing)", relay.Output);
        Assert.Single(Regex.Matches(relay.Output, "MTA-STS: off"));
        Assert.DoesNotContain("No usable version", relay.Output);
        Assert.DoesNotContain("Unhandled", relay.Output);
    }

    /// <summary>
    /// `nativerelay sendmail` makes a Message-ID for a message without one and, when the relay
    /// cannot be reached, a maildrop file with a random name: random bytes that came from
    /// RandomNumberGenerator, which is OpenSSL's on Linux, and aborted the verb in a root without
    /// it. They come from getrandom(2) now: no OpenSSL, no /dev/urandom (the root has no /dev).
    /// </summary>
    [Fact]
    public async Task Without_openssl_sendmail_makes_a_message_id_and_leaves_the_message_in_the_maildrop()
    {
        using var dir = new TempDir();
        var root = MakeRoot(dir);
        foreach (var lib in new[] { "libssl.so.3", "libcrypto.so.3" })
            File.Delete(root + Lib + lib);
        Assert.False(Directory.Exists(root + "/dev"));

        // Port 9 on loopback: nothing listens, so the message goes to the maildrop.
        using var sendmail = ChrootProcess.Start(root, ["sendmail", "--server", "127.0.0.1:9", "--spool", Spool, "-f", "alice@image.test", "bob@example.test"], log,
            stdin: "Subject: no message id\n\nhello\n");
        Assert.True(await sendmail.WaitForExitAsync() == 0, sendmail.Output);
        Assert.DoesNotContain("No usable version", sendmail.Output);
        string maildrop = root + Spool + "/maildrop";
        var file = Assert.Single(Directory.GetFiles(maildrop), f => !Path.GetFileName(f).StartsWith("tmp.", StringComparison.Ordinal));
        Assert.Matches("^[0-9a-f]{32}$", Path.GetFileName(file));
        Assert.Matches(@"Message-ID: <\d+\.[0-9a-f]{16}@", File.ReadAllText(file));
    }

    /// <summary>The verbs that hash, sign or make keys refuse in one line in a root without OpenSSL, where they aborted.</summary>
    [Theory]
    [InlineData("passwd", "passwd alice --file /var/spool/nativerelay/users")]
    [InlineData("token add", "token add api --file /var/spool/nativerelay/tokens")]
    [InlineData("dkim keygen", "dkim keygen --domain image.test --selector s1 --algorithm ed25519 --out /var/spool/nativerelay")]
    public async Task Without_openssl_a_verb_that_hashes_or_signs_refuses_in_one_line(string verb, string commandLine)
    {
        using var dir = new TempDir();
        var root = MakeRoot(dir);
        foreach (var lib in new[] { "libssl.so.3", "libcrypto.so.3" })
            File.Delete(root + Lib + lib);
        using var run = ChrootProcess.Start(root, commandLine.Split(' '), log, stdin: "secret\n");
        int code = await run.WaitForExitAsync();
        var errors = run.Stderr.TrimEnd('\n').Split('\n');
        Assert.True(errors.Length == 1, run.Output);
        Assert.StartsWith($"nativerelay: {verb} needs OpenSSL 3, which cannot be loaded: libcrypto.so.3 is missing", errors[0]);
        Assert.Equal(2, code);
        Assert.Empty(Directory.GetFiles(root + Spool));
    }

    // --- the root --------------------------------------------------------------------------

    /// <summary>A fresh copy of the root under test in DIR/root: rootfs.sh's, or NATIVERELAY_ROOTFS.</summary>
    private static string MakeRoot(TempDir dir)
    {
        if (!string.Equals(Environment.UserName, "root", StringComparison.Ordinal) || Libc.geteuid() != 0)
            throw new Xunit.Sdk.XunitException("the footprint tests run the relay in a root file system with chroot and need root (CI runs as root)");
        string root = dir.File("root");
        string? image = Environment.GetEnvironmentVariable("NATIVERELAY_ROOTFS");
        if (!string.IsNullOrEmpty(image))
            Run("cp", ["-a", image.TrimEnd('/') + "/.", root + "/"], mkdir: root);
        else
            Run("bash", [Path.Combine(CliRun.RepoRoot, "docs", "deploy", "image", "rootfs.sh"), RelayBinary.Path, root]);
        return root;
    }

    private static void InstallCertificate(string root, TempDir dir)
    {
        var cert = TestCertificate.Create(dir.Path, "image", "image.test");
        string tls = Path.Combine(root, "etc/nativerelay/tls");
        Directory.CreateDirectory(tls);
        File.Copy(cert.CertificatePath, Path.Combine(tls, "fullchain.pem"));
        File.Copy(cert.KeyPath, Path.Combine(tls, "privkey.pem"));
        // The key readable by the image's user only (as INSTALL.md says: group or owner).
        Run("chown", [$"{Uid}:{Uid}", Path.Combine(tls, "privkey.pem")]);
        Run("chmod", ["0600", Path.Combine(tls, "privkey.pem")]);
    }

    private static void WriteConfig(string root, int port, bool tls, string? relayTo, string extra = "")
    {
        var sb = new StringBuilder("{\n");
        sb.Append($"  \"hostname\": \"image.test\",\n  \"listen\": [\"127.0.0.1:{port}\"],\n  \"spool\": \"{Spool}\",\n");
        if (tls)
            sb.Append("  \"tls\": { \"certificate\": \"/etc/nativerelay/tls/fullchain.pem\", \"key\": \"/etc/nativerelay/tls/privkey.pem\" },\n");
        if (relayTo is not null)
            sb.Append($"  \"relayTo\": \"{relayTo}\",\n");
        sb.Append("  ").Append(extra).Append("\n  \"shutdown\": { \"drainSeconds\": 1 }\n}\n");
        string path = root + ConfigPath;
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, sb.ToString());
    }

    /// <summary>A footprint file, a file under a footprint directory, or a directory on the way to one.</summary>
    private static bool InFootprint(string path) =>
        Footprint.Any(f => f.EndsWith('/') ? path.StartsWith(f, StringComparison.Ordinal) || path == f.TrimEnd('/') : path == f)
        || Footprint.Any(f => f.StartsWith(path.TrimEnd('/') + "/", StringComparison.Ordinal));

    /// <summary>
    /// Paths in the file system calls of the relay, split into those that succeeded and those that
    /// did not. One trace file per thread (TRACE.PID); the process's own begins in the chroot tool,
    /// which reads the host's files before it changes root, so it counts from the relay's execve
    /// on; the others are the relay's threads. A relative path is taken as under the spool (the
    /// working directory, and the directory whose fd the spool's openat calls use).
    /// </summary>
    private static (HashSet<string> Opened, HashSet<string> Missing) StraceFiles(string trace)
    {
        var opened = new HashSet<string>(StringComparer.Ordinal);
        var missing = new HashSet<string>(StringComparer.Ordinal);
        var call = new Regex(@"^(\w+)\((?:AT_FDCWD, |\d+, )?""([^""]*)"".*\)\s+=\s+(-?\d+)", RegexOptions.Compiled);
        var files = Directory.GetFiles(Path.GetDirectoryName(trace)!, Path.GetFileName(trace) + ".*");
        string exec = $"execve(\"{Binary}\"";
        var main = files.Where(f => File.ReadLines(f).Any(l => l.StartsWith(exec, StringComparison.Ordinal) && !l.Contains("= -1", StringComparison.Ordinal))).ToList();
        Assert.True(main.Count == 1, $"one trace with the relay's execve expected, found {main.Count} of {files.Length}");
        foreach (var file in files)
        {
            bool started = file != main[0];
            foreach (var line in File.ReadLines(file))
            {
                if (!started)
                {
                    started = line.StartsWith(exec, StringComparison.Ordinal);
                    continue;
                }
                var m = call.Match(line);
                if (!m.Success || m.Groups[2].Value.Length == 0)
                    continue;
                string path = m.Groups[2].Value;
                if (!path.StartsWith('/'))
                    path = Spool + "/" + path;
                (m.Groups[3].Value.StartsWith('-') ? missing : opened).Add(path);
            }
        }
        return (opened, missing);
    }

    private static void Run(string file, string[] args, string? mkdir = null)
    {
        if (mkdir is not null)
            Directory.CreateDirectory(mkdir);
        var psi = new ProcessStartInfo(file) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args)
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd() + p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0)
            throw new Xunit.Sdk.XunitException($"{file} {string.Join(' ', args)}: exit {p.ExitCode}\n{err}");
    }

    private static class Libc
    {
        [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
        public static extern uint geteuid();

        [System.Runtime.InteropServices.DllImport("libc", SetLastError = true)]
        public static extern int kill(int pid, int signal);
    }

    /// <summary>
    /// The relay run as the image runs it: chroot into the root, the image's user, an empty
    /// environment, no file descriptors but the three standard ones; optionally under strace.
    /// </summary>
    private sealed class ChrootProcess : IDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _stdout = new(), _stderr = new();
        private readonly ITestOutputHelper _log;
        private readonly string _describe;

        private ChrootProcess(Process process, ITestOutputHelper log, string describe)
        {
            _process = process;
            _log = log;
            _describe = describe;
        }

        public string Stderr { get { lock (_stderr) return _stderr.ToString(); } }
        public string Output { get { lock (_stdout) lock (_stderr) return $"{_describe}\nstdout:\n{_stdout}\nstderr:\n{_stderr}"; } }

        public static ChrootProcess Start(string root, string[] args, ITestOutputHelper log, string? straceTo = null, string? stdin = null)
        {
            var psi = new ProcessStartInfo { RedirectStandardError = true, RedirectStandardOutput = true, RedirectStandardInput = true, UseShellExecute = false, WorkingDirectory = "/" };
            psi.Environment.Clear();
            var argv = new List<string>();
            if (straceTo is not null)
            {
                if (!File.Exists("/usr/bin/strace"))
                    throw new Xunit.Sdk.XunitException("strace is needed to trace the relay's file accesses (apt-get install strace; .ci/run installs it)");
                // -ff: one file per thread (straceTo.PID), so no call is split across lines.
                argv.AddRange(["/usr/bin/strace", "-ff", "-qq", "-e", "trace=%file", "-o", straceTo]);
            }
            argv.AddRange(["/usr/sbin/chroot", $"--userspec={Uid}:{Uid}", root, Binary]);
            argv.AddRange(args);
            psi.FileName = argv[0];
            foreach (var a in argv.Skip(1))
                psi.ArgumentList.Add(a);
            var p = new Process { StartInfo = psi };
            var self = new ChrootProcess(p, log, string.Join(' ', argv));
            p.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (self._stdout) self._stdout.Append(e.Data).Append('\n'); };
            p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (self._stderr) self._stderr.Append(e.Data).Append('\n'); };
            p.Start();
            p.BeginOutputReadLine();
            p.BeginErrorReadLine();
            if (stdin is not null)
                p.StandardInput.Write(stdin);
            p.StandardInput.Close();
            return self;
        }

        public async Task WaitUntilGreetingAsync(int port)
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (DateTime.UtcNow < deadline)
            {
                if (_process.HasExited)
                {
                    _process.WaitForExit();
                    throw new Xunit.Sdk.XunitException($"the relay exited ({_process.ExitCode}) before greeting\n{Output}");
                }
                try
                {
                    await using var client = await TestSmtpClient.ConnectAsync(port, TimeSpan.FromSeconds(2));
                    if ((await client.TryReadReplyAsync())?.Code == 220)
                        return;
                }
                catch (Exception e) when (e is System.Net.Sockets.SocketException or IOException or TimeoutException or OperationCanceledException)
                {
                }
                await Task.Delay(50);
            }
            throw new Xunit.Sdk.XunitException($"the relay did not greet on {port}\n{Output}");
        }

        /// <summary>SIGTERM to the relay (the chroot's process: chroot execs the relay; under strace, strace's child) and its exit code.</summary>
        public async Task<int> StopAsync()
        {
            int pid = _process.Id;
            if (_process.StartInfo.FileName == "/usr/bin/strace")
                pid = int.Parse(File.ReadAllText($"/proc/{pid}/task/{pid}/children").Split(' ', StringSplitOptions.RemoveEmptyEntries)[0]);
            Assert.Equal(0, Libc.kill(pid, 15));
            return await WaitForExitAsync();
        }

        public async Task<int> WaitForExitAsync()
        {
            using var cancel = new CancellationTokenSource(TimeSpan.FromSeconds(60));
            await _process.WaitForExitAsync(cancel.Token);
            _process.WaitForExit();
            _log.WriteLine(Output);
            return _process.ExitCode;
        }

        public void Dispose()
        {
            if (!_process.HasExited)
                _process.Kill(entireProcessTree: true);
            _process.Dispose();
        }
    }
}
