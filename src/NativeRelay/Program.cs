using NativeRelay.Cli;
using NativeRelay.Config;

// The executable only parses the command line and wires the library together; every verb lives
// in its own file under Cli/ and is listed in Verbs.
return await Entry.RunAsync(args);

namespace NativeRelay.Cli
{
    internal static class Entry
    {
        public static async Task<int> RunAsync(string[] args)
        {
            // Before any socket exists: the runtime decides how to dispatch socket completions once.
            NativeRelay.Net.SocketEngineTuning.Apply();
            // Installed as /usr/sbin/sendmail (a symlink): behave as "nativerelay sendmail".
            if (SendmailCommand.InvokedAsSendmail())
                return await SendmailCommand.RunAsync(args);
            try
            {
                if (args.Length == 0)
                    return Usage(Console.Error, 2);
                switch (args[0])
                {
                    case "--version":
                    case "version":
                        Console.WriteLine($"nativerelay {Version}");
                        return 0;
                    case "--help":
                    case "-h":
                    case "help":
                        return Usage(Console.Out, 0);
                }
                foreach (var verb in Verbs.All)
                    if (verb.Name == args[0])
                        return await verb.Run(args.AsSpan(1).ToArray());
                throw new ConfigException($"unknown command '{args[0]}' (try --help)");
            }
            catch (ConfigException e)
            {
                Console.Error.WriteLine($"nativerelay: {e.Message}");
                return 2;
            }
        }

        public static string Version =>
            typeof(Entry).Assembly.GetName().Version?.ToString(3) ?? "0.0.0";

        private static int Usage(TextWriter w, int code)
        {
            w.WriteLine($"nativerelay {Version}: a mail transfer agent");
            w.WriteLine();
            w.WriteLine("usage:");
            foreach (var verb in Verbs.All)
                w.WriteLine($"  nativerelay {verb.Usage}");
            w.WriteLine("  nativerelay --version");
            w.WriteLine();
            w.WriteLine("serve with no arguments listens on 127.0.0.1:2525, spools under ./var/spool and");
            w.WriteLine("relays for loopback clients only. See docs/CONFIG.md for the configuration file.");
            return code;
        }
    }
}
