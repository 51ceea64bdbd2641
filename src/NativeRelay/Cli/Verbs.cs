namespace NativeRelay.Cli;

/// <summary>A command of the binary: its name, a usage line for --help, and what it runs.</summary>
internal sealed record Verb(string Name, string Usage, Func<string[], Task<int>> Run);

/// <summary>Every verb, in the order --help lists them. Add a verb here and in its own file.</summary>
internal static class Verbs
{
    public static readonly Verb[] All =
    [
        new("serve", "serve [--listen IP:PORT]... [--spool DIR] [--hostname NAME] [--relay-to HOST:PORT] [--config FILE]", ServeCommand.RunAsync),
    ];
}
