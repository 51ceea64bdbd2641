using System.CommandLine;
using System.CommandLine.Help;
using System.CommandLine.Invocation;

namespace NativeRelay.Cli;

/// <summary>
/// The command tree of the binary: every verb, in the order <c>nativerelay --help</c> lists them.
/// A verb is a file under Cli/ with a <c>Build()</c> that returns its <see cref="Command"/>
/// (flags, arguments, subcommands, action); adding a verb is one line here.
/// </summary>
internal static class Verbs
{
    public static RootCommand Root()
    {
        var root = new RootCommand(
            """
            NativeRelay: a mail transfer agent.

            serve with no arguments listens on 127.0.0.1:2525, spools under ./var/spool and relays for
            loopback clients only. See docs/CONFIG.md for the configuration file, and
            'nativerelay VERB --help' for the flags of each verb.
            """)
        {
            ServeCommand.Build(),
            CheckConfigCommand.Build(),
            SendmailCommand.Build(),
            PasswdCommand.Build(),
            BlastCommand.Build(),
            SinkCommand.Build(),
            BenchCommand.Build(),
            QueueCommand.Build(),
            SuppressCommand.Build(),
            TrafficCommand.Build(),
            ClusterCommand.Build(),
            DkimCommand.Build(),
            TokenCommand.Build(),
            TlsRptCommand.Build(),
        };
        foreach (var option in root.Options)
        {
            if (option is VersionOption version)
                version.Action = new PrintVersion();
            if (option is HelpOption help)
                WithDetails(help);
        }
        // With no verb: the list of verbs, on standard error, as a usage error.
        root.SetAction(result =>
        {
            root.Parse(["--help"]).Invoke(new InvocationConfiguration { Output = Console.Error });
            return Entry.ExitUsage;
        });
        return root;
    }

    /// <summary>-h/--help that also prints a <see cref="VerbCommand"/>'s details.</summary>
    public static HelpOption WithDetails(HelpOption help)
    {
        if (help.Action is HelpAction standard)
            help.Action = new VerbCommand.HelpWithDetails(standard);
        return help;
    }

    public static string Version =>
        typeof(Verbs).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

    /// <summary>"nativerelay 0.1.0", not the informational version System.CommandLine prints by default.</summary>
    private sealed class PrintVersion : SynchronousCommandLineAction
    {
        public override bool ClearsParseErrors => true;

        public override int Invoke(ParseResult parseResult)
        {
            parseResult.InvocationConfiguration.Output.WriteLine($"nativerelay {Version}");
            return 0;
        }
    }
}
