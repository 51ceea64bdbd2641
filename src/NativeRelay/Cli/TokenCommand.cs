using System.CommandLine;
using NativeRelay.Api;
using NativeRelay.Config;

namespace NativeRelay.Cli;

/// <summary>
/// <c>nativerelay token add NAME --file FILE [--pools P,...] [--sender-domains D,...] [--rate N]</c>:
/// makes a bearer token for the HTTP API, prints it once on standard output, and stores only its
/// SHA-256 in the tokens file (added or replaced, rewritten atomically, mode 0600).
/// <c>token delete NAME --file FILE</c> removes it. A running relay reads the file again on SIGHUP.
/// </summary>
internal static class TokenCommand
{
    private static readonly Argument<string> Name = Flags.Argument("NAME", "the token's name (letters, digits, '.', '_', '-'), shown in logs and Received headers", static (_, text) => text);

    // Shared by both subcommands (options are static, like every verb's: the tree is built again per parse).
    // Checked in the action rather than marked required, so an unknown flag is still the error reported first.
    private static readonly Option<string> File = Flags.Text("--file", "FILE", "the tokens file (serve --tokens, http.tokensFile); required");

    private static readonly Option<string[]> Pools = Flags.Repeatable("--pools", "POOL[,POOL...]", "pools the token may inject into", shown: "any pool");

    private static readonly Option<string[]> SenderDomains = Flags.Repeatable("--sender-domains", "DOMAIN[,DOMAIN...]",
        "sender domains the token may use (\".example.com\" also covers subdomains)", shown: "any domain");

    private static readonly Option<int> Rate = Flags.Value("--rate", "N", "requests per second for this token (0: unlimited)",
        static (flag, text) => FlagValues.Int(flag, text, 0, 1_000_000), "http.requestsPerSecond");

    public static Command Build()
    {
        var add = new VerbCommand("add", "Make a token, print it once, and store its hash in the tokens file.",
            """
            The token is printed on standard output and nowhere else: only its SHA-256 is kept. A token
            of the same name is replaced (the old one stops working at the relay's next SIGHUP).
            """)
        {
            Name, File, Pools, SenderDomains, Rate,
        };
        add.SetAction(result => Add(result.GetValue(Name)!, FileOf(result, File), Split(result.ValueOrNull(Pools)),
            Split(result.ValueOrNull(SenderDomains)), result.GetResult(Rate) is { Implicit: false } ? result.GetValue(Rate) : null));

        var delete = new VerbCommand("delete", "Remove a token from the tokens file.", "The relay stops accepting it at its next SIGHUP.")
        {
            Name, File,
        };
        delete.SetAction(result => Delete(result.GetValue(Name)!, FileOf(result, File)));

        return new VerbCommand("token", "Manage the HTTP API's bearer tokens.",
            """
            serve --http IP:PORT --tokens FILE turns the API on; docs/CONFIG.md (http) has the file's format.
            """)
        {
            add, delete,
        };
    }

    private static string FileOf(ParseResult result, Option<string> file) =>
        result.ValueOrNull(file) ?? throw new ConfigException("--file FILE is required: the tokens file (serve --tokens)");

    private static string[] Split(string[]? values) =>
        values is null ? [] : values.SelectMany(v => v.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)).ToArray();

    private static int Add(string name, string file, string[] pools, string[] domains, int? rate)
    {
        NativeRelay.Net.OpenSslLibrary.Require("token add"); // only the token's SHA-256 is stored
        var (token, line) = TokenStore.Create(name, pools, domains, rate);
        bool replaced = PasswdCommand.Rewrite(file, name, line);
        Console.Out.WriteLine(token);
        Console.Error.WriteLine($"nativerelay: {(replaced ? "replaced" : "added")} token {name} in {file} (shown once, above; only its hash is stored)");
        return 0;
    }

    private static int Delete(string name, string file)
    {
        if (!PasswdCommand.Rewrite(file, name, newLine: null))
            throw new ConfigException($"token {name} is not in {file}");
        Console.Error.WriteLine($"nativerelay: removed token {name} from {file}");
        return 0;
    }
}
