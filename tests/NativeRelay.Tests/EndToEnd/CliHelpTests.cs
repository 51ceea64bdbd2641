using Xunit.Abstractions;

namespace NativeRelay.Tests.EndToEnd;

using NativeRelay.Tests.Support;

/// <summary>
/// Per-verb help of the published binary: every verb and queue subcommand answers --help and -h
/// with its usage, every flag and the flag's default; an unknown flag is one line naming the
/// verb's help, exit 2 (sendmail: 64, EX_USAGE).
/// </summary>
[Trait("Category", "EndToEnd")]
public sealed class CliHelpTests(ITestOutputHelper log)
{
    /// <summary>Each verb's flags; "flag=default" when --help must show that default.</summary>
    public static readonly TheoryData<string, string> Verbs = new()
    {
        { "serve", "--config --listen=127.0.0.1:2525 --spool=./var/spool --hostname --relay-to --dns --remote-port=25 --tls-cert --tls-key "
                   + "--tls-policy=opportunistic --ca-file --dnssec --no-dane --no-mta-sts "
                   + "--listen-tls --submission --users --metrics --http=off --tokens --http-tls --log-format=text --log-level=info --drain-seconds=30 --user --local-domain --maildir-root "
                   + "--dkim --auth-check=off --authserv-id --source --shaping=none --redis=no --redis-password-file --node=host" },
        { "check-config", "<FILE>" },
        { "sendmail", "-t -i -f -F -v --server --config=/etc/nativerelay/nativerelay.json --spool <RECIPIENT>" },
        { "passwd", "<USER> --file --iterations=600000 --delete" },
        { "blast", "--to=127.0.0.1:2525 --messages=1000 --sessions=10 --size=1024 --per-connection=0 --recipients=1 --from=blast@example.org "
                   + "--rcpt=sink@example.com --rate=0 --timeout=600 --tls --helo=blast.example.org --json --quiet --http=SMTP --token --token-file" },
        { "sink", "--listen=127.0.0.1:2526 --reply-code=250 --rcpt-reply=250 --rcpt-fail-share=0 --rcpt-defer-share=0 --delay=0 --save --exit-after --timeout --hostname=sink.nativerelay.test "
                  + "--no-pipelining --no-chunking --tls-cert --tls-key --json --quiet" },
        { "bench", "--messages=20000 --sessions=20 --size=1024 --per-connection=0 --timeout=120 --temp-dir --json --quiet" },
        { "queue", "--json --spool=./var/spool --config list show flush delete bounce hold release stats" },
        { "queue list", "--domain --older-than --json --spool --config" },
        { "queue show", "<ID> --json --spool --config" },
        { "queue flush", "<ID> --domain --json --spool --config" },
        { "queue delete", "<ID> --domain --yes --json --spool --config" },
        { "queue bounce", "<ID> --domain --json --spool --config" },
        { "queue hold", "<ID> --domain --json --spool --config" },
        { "queue release", "<ID> --domain --json --spool --config" },
        { "queue stats", "--cluster --json --spool --config" },
        { "suppress", "--json --spool=./var/spool --config --scope=global add remove list import" },
        { "suppress add", "<ADDRESS> --reason --scope --json --spool --config" },
        { "suppress remove", "<ADDRESS> --scope --json --spool --config" },
        { "suppress list", "--scope --json --spool --config" },
        { "suppress import", "<FILE> --reason --scope --json --spool --config" },
        { "traffic", "--json --spool=./var/spool --config status resume" },
        { "traffic status", "--json --spool --config" },
        { "traffic resume", "--site --source=every --json --spool --config" },
        { "cluster", "--json --spool=./var/spool --config status" },
        { "cluster status", "--json --spool --config" },
        { "dkim", "keygen verify" },
        { "dkim keygen", "--domain --selector --algorithm=rsa --bits=2048 --out" },
        { "dkim verify", "<FILE> --dns --config" },
        { "token", "add delete" },
        { "token add", "<NAME> --file --pools --sender-domains --rate" },
        { "token delete", "<NAME> --file" },
        { "tls-rpt", "send" },
        { "tls-rpt send", "--config --spool --server --dns --ca-file --include-today" },
    };

    [Theory]
    [MemberData(nameof(Verbs))]
    public async Task Help_and_h_print_usage_every_flag_and_its_default(string verb, string flags)
    {
        using var dir = new TempDir();
        foreach (var help in new[] { "--help", "-h" })
        {
            var result = await CliRun.RunAsync([.. verb.Split(' '), help], [], dir.Path, log);

            Assert.True(result.ExitCode == 0, $"{verb} {help}: {result}");
            Assert.Empty(result.Stderr);
            var lines = result.Stdout.Split('\n').Select(l => l.Trim()).ToList();
            Assert.Contains(lines, l => l.StartsWith($"nativerelay {verb} ", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.StartsWith("-?, -h, --help", StringComparison.Ordinal));
            foreach (var flag in flags.Split(' '))
            {
                var (name, shown) = flag.IndexOf('=') is int eq and > 0 ? (flag[..eq], flag[(eq + 1)..]) : (flag, null);
                var line = lines.FirstOrDefault(l => l.StartsWith(name + " ", StringComparison.Ordinal) || l.StartsWith(name + ",", StringComparison.Ordinal)
                                                     || l.Contains(", " + name + " ", StringComparison.Ordinal));
                Assert.True(line is not null, $"{verb} {help} does not list {name}:\n{result.Stdout}");
                if (shown is not null)
                    Assert.True(line.Contains("[default: ", StringComparison.Ordinal) && line.Contains(shown, StringComparison.Ordinal),
                        $"{verb} {help}: {name} does not show its default {shown}: {line}");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Verbs))]
    public async Task An_unknown_flag_is_one_line_naming_the_verbs_help(string verb, string flags)
    {
        _ = flags;
        using var dir = new TempDir();

        var result = await CliRun.RunAsync([.. verb.Split(' '), "--no-such-flag"], [], dir.Path, log);

        Assert.True(result.ExitCode == (verb == "sendmail" ? 64 : 2), result.ToString());
        Assert.Empty(result.Stdout);
        var line = Assert.Single(result.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries));
        Assert.Contains("--no-such-flag", line);
        Assert.Contains($"'nativerelay {verb} --help'", line);
    }

    [Fact]
    public async Task Top_level_help_lists_every_verb_and_points_to_their_help()
    {
        using var dir = new TempDir();
        foreach (var help in new[] { "--help", "-h", "help" })
        {
            var result = await CliRun.RunAsync([help], [], dir.Path, log);

            Assert.True(result.ExitCode == 0, result.ToString());
            foreach (var verb in new[] { "serve", "check-config", "sendmail", "passwd", "blast", "sink", "bench", "queue", "suppress", "traffic", "cluster", "dkim", "token", "tls-rpt" })
                Assert.Matches($@"(?m)^\s+{verb}\b", result.Stdout);
            Assert.Contains("--version", result.Stdout);
            Assert.Contains("nativerelay VERB --help", result.Stdout);
        }

        var bare = await CliRun.RunAsync([], [], dir.Path, log);
        Assert.True(bare.ExitCode == 2, bare.ToString());
        Assert.Contains("serve", bare.Stderr);

        var unknown = await CliRun.RunAsync(["frobnicate"], [], dir.Path, log);
        Assert.True(unknown.ExitCode == 2, unknown.ToString());
        Assert.Equal("nativerelay: unknown command 'frobnicate' (try 'nativerelay --help')", unknown.Stderr.Trim());
    }

    [Fact]
    public async Task Help_wins_over_other_flags_and_errors()
    {
        using var dir = new TempDir();

        var result = await CliRun.RunAsync(["blast", "--messages", "lots", "--help"], [], dir.Path, log);

        Assert.True(result.ExitCode == 0, result.ToString());
        Assert.Contains("--messages <N>", result.Stdout);
    }

    [Fact]
    public async Task Sendmail_keeps_h_with_a_value_as_the_hop_count()
    {
        using var dir = new TempDir();

        // -h N is sendmail's hop count: accepted and ignored, so the message is handled (here: no
        // relay to take it), not help, and not a usage error.
        var result = await CliRun.RunAsync(["sendmail", "-h", "3", "--server", $"127.0.0.1:{FreePort.Get()}", "bob@example.test"],
            CliRun.Latin1("Subject: x\n\nbody\n"), dir.Path, log);

        Assert.True(result.ExitCode != 64, result.ToString());
        Assert.DoesNotContain("Usage:", result.Stdout);
        Assert.DoesNotContain("unknown option", result.Stderr);
    }

    [Fact]
    public async Task Called_as_sendmail_it_answers_help_and_h_as_sendmail()
    {
        using var dir = new TempDir();
        string link = dir.File("sendmail");
        File.CreateSymbolicLink(link, RelayBinary.Path);
        foreach (var help in new[] { "--help", "-h" })
        {
            var result = await CliRun.RunAsync([help], [], dir.Path, log, executable: link);

            Assert.True(result.ExitCode == 0, result.ToString());
            Assert.Contains("sendmail [<RECIPIENT>...] [options]", result.Stdout);
            Assert.Contains("--server <HOST:PORT>", result.Stdout);
        }
        var bad = await CliRun.RunAsync(["-Q"], [], dir.Path, log, executable: link);
        Assert.True(bad.ExitCode == 64, bad.ToString());
        Assert.Equal("sendmail: unknown option -Q (try 'nativerelay sendmail --help')", bad.Stderr.Trim());
    }

    [Fact]
    public async Task Shell_completion_suggests_the_flags_of_a_verb()
    {
        using var dir = new TempDir();

        // What dotnet-suggest (or the bash function in the README) asks: the words that complete "serve --li".
        var result = await CliRun.RunAsync(["[suggest:20]", "nativerelay serve --li"], [], dir.Path, log);

        Assert.True(result.ExitCode == 0, result.ToString());
        var words = result.Stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Contains("--listen", words);
        Assert.Contains("--listen-tls", words);
        Assert.DoesNotContain("--spool", words);
    }
}
