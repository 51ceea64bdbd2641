using System.CommandLine;
using System.Text.Json;
using NativeRelay.Config;
using NativeRelay.Control;

namespace NativeRelay.Cli;

/// <summary>
/// <c>nativerelay suppress add|remove|list|import</c>: the suppression list of the relay running on
/// a spool, through its control socket (found with <c>--spool DIR</c> or <c>--config FILE</c>, as
/// <c>queue</c> finds it). Every change is durable when the command returns. Exit codes: 0 done,
/// 1 refused or failed, 2 usage or configuration error, 3 no relay running on that spool.
/// </summary>
internal static class SuppressCommand
{
    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(30);

    private static Option<T> Recursive<T>(Option<T> option)
    {
        option.Recursive = true;
        return option;
    }

    private static readonly Option<bool> Json = Recursive(Flags.Switch("--json", "print JSON (one object per line) instead of text"));
    private static readonly Option<string> SpoolFlag = Recursive(Flags.Text("--spool", "DIR", "the spool of the relay to ask",
        $"the configuration's, else {new RelayOptions().Spool}"));
    private static readonly Option<string> Config = Recursive(Flags.Text("--config", "FILE", "find the spool in this configuration file, as serve does"));
    private static readonly Option<string> Scope = Recursive(Flags.Value("--scope", "SCOPE",
        "where the entries apply: global, pool:NAME or domain:SENDERDOMAIN (list: only that scope)",
        static (_, text) => NativeRelay.Traffic.Suppression.SuppressionScope.TryParse(text, out var s, out var error)
            ? s.ToString() : throw new ConfigException($"--scope: {error}"), shown: "global"));
    private static readonly Option<string> Reason = Flags.Text("--reason", "TEXT", "why the addresses are added (shown by list)", "added by the administrator");

    private const string Details =
        "Exit codes: 0 done, 1 refused or failed, 2 usage or configuration error, 3 no relay running on that spool.";

    public static Command Build()
    {
        var add = Change("add", "Add addresses to the suppression list (refused at RCPT from then on).", ControlProtocol.Commands.SuppressAdd);
        add.Options.Add(Reason);
        var remove = Change("remove", "Remove addresses from the suppression list.", ControlProtocol.Commands.SuppressRemove);

        var list = new VerbCommand("list", "List the entries: address, scope, when and why they were added.", Details);
        list.SetAction((result, _) => Run(result, spool => ListAsync(result, spool)));

        var import = new VerbCommand("import", "Add every address of FILE (one a line; # comments and what follows the address are ignored).", Details);
        var file = Flags.Argument<string>("FILE", "the file of addresses (- for standard input)", static (_, text) => text);
        import.Arguments.Add(file);
        import.Options.Add(Reason);
        import.SetAction((result, _) => Run(result, spool => ImportAsync(result, spool, result.GetValue(file)!)));

        return new VerbCommand("suppress", "Add, remove, list and import entries of a running relay's suppression list.",
            """
            The suppression list of the relay running on a spool, through its control socket (found with
            --spool DIR or --config FILE, as serve finds its spool). A suppressed recipient is refused at RCPT
            with 550 5.7.1; hard bounces of some classes are added by themselves (suppression.autoAdd). Every
            change is durable (fsynced) when the command returns. Exit codes: 0 done, 1 refused or failed,
            2 usage or configuration error, 3 no relay running on that spool.
            """)
        {
            Json, SpoolFlag, Config, Scope,
            add, remove, list, import,
        };
    }

    private static Command Change(string name, string description, string command)
    {
        var verb = new VerbCommand(name, description, Details);
        var addresses = new Argument<string[]>("ADDRESS")
        {
            Description = "user@domain (one or more)",
            Arity = ArgumentArity.OneOrMore,
            // A word starting with '-' is an unknown flag, not an address (as Flags.Argument has it).
            CustomParser = result =>
            {
                foreach (var token in result.Tokens)
                    if (token.Value.Length > 1 && token.Value[0] == '-')
                        result.AddError($"unknown flag '{token.Value}'");
                return [.. result.Tokens.Select(t => t.Value)];
            },
        };
        verb.Arguments.Add(addresses);
        verb.SetAction((result, _) => Run(result, spool => ChangeAsync(result, spool, command, result.GetValue(addresses) ?? [])));
        return verb;
    }

    private static Task<int> Run(ParseResult result, Func<string, Task<int>> action) =>
        ControlVerb.RunAsync("suppress", () => action(ControlVerb.SpoolDirectory(result.ValueOrNull(SpoolFlag), result.ValueOrNull(Config))));

    private static ControlRequest Request(ParseResult result, string command) => new()
    {
        Command = command,
        Scope = result.ValueOrNull(Scope),
        Reason = result.GetResult(Reason) is { Implicit: false } ? result.GetValue(Reason) : null,
    };

    private static int Finish(ParseResult result, ControlResponse final, Func<ControlResponse, string> text)
    {
        if (!final.Ok)
        {
            Console.Error.WriteLine($"nativerelay suppress: {final.Error ?? "the relay refused the request"}");
            return QueueCommand.ExitFailed;
        }
        Console.WriteLine(result.GetValue(Json) ? JsonSerializer.Serialize(final, ControlJsonContext.Default.ControlResponse) : text(final));
        return QueueCommand.ExitOk;
    }

    private static async Task<int> ChangeAsync(ParseResult result, string spool, string command, string[] addresses)
    {
        // A request is one line of at most ControlProtocol.MaxRequestBytes: many addresses go in
        // several requests (each committed before its answer), their counts added up.
        ControlResponse? final = null;
        int changed = 0, unchanged = 0;
        foreach (var batch in Batches(addresses, ControlProtocol.MaxRequestBytes - 512))
        {
            var request = Request(result, command);
            request.Addresses = batch;
            final = await ControlClient.ExchangeAsync(spool, request, _ => { }, upload: null, Timeout);
            if (!final.Ok)
                break;
            changed += final.Count ?? 0;
            unchanged += final.Unchanged ?? 0;
        }
        if (final is { Ok: true })
        {
            final.Count = changed;
            final.Unchanged = unchanged;
        }
        bool add = command == ControlProtocol.Commands.SuppressAdd;
        return Finish(result, final!, f => add
            ? $"{f.Count ?? 0} address(es) added, {f.Unchanged ?? 0} already on the list"
            : $"{f.Count ?? 0} address(es) removed, {f.Unchanged ?? 0} not on the list");
    }

    private static IEnumerable<List<string>> Batches(string[] addresses, int maxBytes)
    {
        var batch = new List<string>();
        int bytes = 0;
        foreach (var a in addresses)
        {
            int size = System.Text.Encoding.UTF8.GetByteCount(a) * 2 + 8; // JSON escaping at worst doubles it
            if (batch.Count > 0 && bytes + size > maxBytes)
            {
                yield return batch;
                batch = [];
                bytes = 0;
            }
            batch.Add(a);
            bytes += size;
        }
        if (batch.Count > 0)
            yield return batch;
    }

    private static async Task<int> ListAsync(ParseResult result, string spool)
    {
        bool json = result.GetValue(Json);
        var output = Console.Out;
        var final = await ControlClient.ExchangeAsync(spool, Request(result, ControlProtocol.Commands.SuppressList), line =>
        {
            if (line.Suppression is not { } e)
                return;
            if (json)
                output.WriteLine(JsonSerializer.Serialize(line, ControlJsonContext.Default.ControlResponse));
            else
                output.WriteLine($"{e.Address}\t{e.Scope}\t{DateTimeOffset.FromUnixTimeMilliseconds(e.AddedUnixMs):yyyy-MM-ddTHH:mm:ssZ}\t{e.Reason}");
        }, upload: null, Timeout);
        if (!final.Ok)
        {
            Console.Error.WriteLine($"nativerelay suppress: {final.Error ?? "the relay refused the request"}");
            return QueueCommand.ExitFailed;
        }
        if (!json)
            Console.Error.WriteLine($"-- {final.Count ?? 0} entr{(final.Count == 1 ? "y" : "ies")}");
        return QueueCommand.ExitOk;
    }

    private static async Task<int> ImportAsync(ParseResult result, string spool, string file)
    {
        Stream input;
        try
        {
            input = file == "-" ? Console.OpenStandardInput() : File.OpenRead(file);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"nativerelay suppress: cannot read {file}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
            return QueueCommand.ExitFailed;
        }
        await using (input)
        {
            var final = await ControlClient.ExchangeAsync(spool, Request(result, ControlProtocol.Commands.SuppressImport), _ => { }, input, Timeout);
            if (final.Problems is { } problems && !result.GetValue(Json))
                foreach (var p in problems)
                    Console.Error.WriteLine($"nativerelay suppress: {p}");
            return Finish(result, final, f => $"{f.Count ?? 0} address(es) added, {f.Unchanged ?? 0} already on the list or not addresses");
        }
    }
}
