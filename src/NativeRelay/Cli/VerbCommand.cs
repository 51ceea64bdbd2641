using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;

namespace NativeRelay.Cli;

/// <summary>
/// A verb or subcommand: a one-line summary (what <c>nativerelay --help</c> lists, and the
/// description of its own --help) and optional details printed at the end of its own --help
/// (exit codes, what goes where).
/// </summary>
internal sealed class VerbCommand(string name, string summary, string? details = null) : Command(name, summary)
{
    public string? Details { get; } = details;

    /// <summary>System.CommandLine's help, then the command's details.</summary>
    public sealed class HelpWithDetails(HelpAction standard) : SynchronousCommandLineAction
    {
        public override bool ClearsParseErrors => true;

        public override int Invoke(ParseResult parseResult)
        {
            int code = standard.Invoke(parseResult);
            if (parseResult.CommandResult.Command is VerbCommand { Details: { } details })
            {
                var output = parseResult.InvocationConfiguration.Output;
                output.WriteLine("Details:");
                foreach (var line in details.Split('\n'))
                    output.WriteLine(line.Length == 0 ? "" : "  " + line.TrimEnd('\r'));
                output.WriteLine();
            }
            return code;
        }
    }
}
