using System.CommandLine;

namespace NativeRelay.Cli;

/// <summary>Usage errors: one line naming the verb and where its help is.</summary>
internal static class Usage
{
    /// <summary>"serve: unknown flag '--bogus' (try 'nativerelay serve --help')": the first mistake of a parse that failed.</summary>
    public static string Error(ParseResult result)
    {
        var command = result.CommandResult.Command;
        string path = Path(command);
        string message;
        if (result.UnmatchedTokens.Count > 0)
        {
            string token = result.UnmatchedTokens[0];
            message = token.StartsWith('-') ? $"unknown flag '{token}'"
                : command.Subcommands.Count > 0 ? $"unknown command '{token}'"
                : $"unexpected argument '{token}'";
        }
        else if (command.Arguments.FirstOrDefault(a => a.Arity.MinimumNumberOfValues > 0 && result.GetResult(a) is not { Tokens.Count: > 0 }) is { } missing)
        {
            message = $"{missing.Name} is missing: usage: {Synopsis(command)}";
        }
        else if (command.Action is null && command.Subcommands.Count > 0)
        {
            message = $"which command? {string.Join(", ", command.Subcommands.Where(c => !c.Hidden).Select(c => c.Name))}";
        }
        else
        {
            message = result.Errors.Count > 0 ? result.Errors[0].Message.TrimEnd('.') : "invalid command line";
        }
        return path.Length == 0
            ? $"{message} (try 'nativerelay --help')"
            : $"{path}: {message} (try 'nativerelay {path} --help')";
    }

    /// <summary>"nativerelay passwd USER [options]".</summary>
    private static string Synopsis(Command command)
    {
        var words = new List<string> { "nativerelay", Path(command) };
        words.AddRange(command.Arguments.Select(a => a.Arity.MinimumNumberOfValues > 0 ? a.Name : $"[{a.Name}]"));
        if (command.Options.Any(o => o is not System.CommandLine.Help.HelpOption))
            words.Add("[options]");
        return string.Join(' ', words);
    }

    /// <summary>"queue list" for the list subcommand of queue; "" for the root.</summary>
    public static string Path(Command command)
    {
        var names = new List<string>();
        for (var c = command; c is not null and not RootCommand; c = c.Parents.OfType<Command>().FirstOrDefault())
            names.Insert(0, c.Name);
        return string.Join(' ', names);
    }
}
