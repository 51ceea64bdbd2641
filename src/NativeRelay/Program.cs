using System.CommandLine;
using System.CommandLine.Invocation;
using System.CommandLine.Parsing;
using NativeRelay.Cli;
using NativeRelay.Config;

// The executable only parses the command line and wires the library together; every verb lives
// in its own file under Cli/ and is listed in Verbs.
return await Entry.RunAsync(args);

namespace NativeRelay.Cli
{
    internal static class Entry
    {
        public const int ExitUsage = 2;

        public static async Task<int> RunAsync(string[] args)
        {
            // Before any socket exists: the runtime decides how to dispatch socket completions once.
            NativeRelay.Net.SocketEngineTuning.Apply();
            // Installed as /usr/sbin/sendmail (a symlink): behave as "nativerelay sendmail".
            // sendmail keeps its own getopt-style parser (-ti, -fsender, -oi, ...).
            if (SendmailCommand.InvokedAsSendmail())
                return await SendmailCommand.RunAsync(args);
            if (args is ["sendmail", ..])
                return await SendmailCommand.RunAsync(args[1..]);
            if (args is ["help" or "version"])
                args = ["--" + args[0]];
            try
            {
                var result = Parse(args);
                if (result.Action is ParseErrorAction)
                {
                    Console.Error.WriteLine($"nativerelay: {Usage.Error(result)}");
                    return ExitUsage;
                }
                // The verbs handle SIGINT and SIGTERM themselves (serve drains, the tools report): no handler of System.CommandLine.
                return await result.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null });
            }
            catch (ConfigException e)
            {
                Console.Error.WriteLine($"nativerelay: {e.Message}");
                return ExitUsage;
            }
        }

        /// <summary>The command line against the tree of <see cref="Verbs"/>; "@file" is an argument like any other, not a response file.</summary>
        public static ParseResult Parse(string[] args) =>
            Verbs.Root().Parse(args, new ParserConfiguration { ResponseFileTokenReplacer = null });
    }
}
