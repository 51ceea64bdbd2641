using System.CommandLine;
using System.Net;
using NativeRelay.Config;
using NativeRelay.Local;
using NativeRelay.Maildrop;
using NativeRelay.Message;
using NativeRelay.Net;

namespace NativeRelay.Cli;

/// <summary>
/// <c>nativerelay sendmail</c>, also run when the binary is called as "sendmail" (a symlink at
/// /usr/sbin/sendmail): the interface applications use to send mail. Reads the message on
/// standard input and hands it to the running relay over SMTP in one all-or-nothing transaction.
/// When the relay cannot be reached (or refuses for now), the message goes durably into the
/// spool's maildrop instead (<see cref="MaildropDirectory"/>), which the relay takes into its
/// queue when it runs: a cron job piping into sendmail never loses its mail to a stopped relay.
/// Exit codes are sendmail's (sysexits.h): 0 queued (by the relay, or in the maildrop), 64 usage,
/// 69 refused for good, 75 try again later (neither the relay nor the maildrop took it), 74 input
/// error, 78 bad configuration.
/// </summary>
internal static class SendmailCommand
{
    public const int ExOk = 0;
    public const int ExUsage = 64;
    public const int ExUnavailable = 69;
    public const int ExSoftware = 70;
    public const int ExIoErr = 74;
    public const int ExTempFail = 75;
    public const int ExConfig = 78;

    private const string DefaultConfig = "/etc/nativerelay/nativerelay.json";
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan ReplyTimeout = TimeSpan.FromMinutes(5);

    /// <summary>True when argv[0] is "sendmail" (or "mailq"-less aliases of it): /usr/sbin/sendmail -> nativerelay.</summary>
    public static bool InvokedAsSendmail()
    {
        var argv0 = Environment.GetCommandLineArgs().FirstOrDefault();
        return argv0 is not null && Path.GetFileName(argv0) == "sendmail";
    }

    /// <summary>
    /// The flags as --help and shell completion show them. The command line itself is read by
    /// <see cref="Parse"/>, getopt-style as sendmail does (-ti, -fsender, -oi, -bm ...), which
    /// System.CommandLine does not: a flag added here must be added there too.
    /// </summary>
    public static Command Build()
    {
        var command = new VerbCommand("sendmail", "Queue a message read on standard input with the running relay (/usr/sbin/sendmail).",
            """
            Hands the message to the running relay over SMTP in one all-or-nothing transaction. Also run when
            the binary is called as "sendmail" (a symlink at /usr/sbin/sendmail). Options cluster as in
            sendmail (-ti, -fsender); -oi is -i; -bm, -oX, -B, -N, -R, -V, -L, -h N, -O, -X, -n, -m, -U, -G and
            -e are accepted and change nothing; -h alone is this help. Exit codes (sysexits.h): 0 queued,
            64 usage, 69 refused for good, 74 input error, 75 try again later
            (relay not running, temporary refusal), 78 bad configuration.
            """)
        {
            Flags.Switch("-t", "read the recipients from the message's To, Cc and Bcc (Bcc is removed)"),
            Flags.Switch("-i", "a line with a single dot does not end the message", "-oi"),
            Flags.Text("-f", "SENDER", "envelope sender, <> for none", "USER@HOSTNAME"),
            Flags.Text("-F", "NAME", "full name for the From: header the message is given when it has none"),
            Flags.Switch("-v", "say on standard error what the relay answered"),
            Flags.Text("--server", "HOST:PORT", "the relay to hand the message to", "the configuration's first SMTP listener, else 127.0.0.1:2525"),
            Flags.Text("--config", "FILE", "the relay's configuration (also -C FILE, $NATIVERELAY_CONFIG)", DefaultConfig),
            Flags.Text("--spool", "DIR", "the spool whose maildrop takes the message when the relay cannot be reached", "the configuration's spool, else ./var/spool"),
            new Argument<string[]>("RECIPIENT") { Description = "recipients (commas separate several in one argument)", Arity = ArgumentArity.ZeroOrMore },
        };
        // Only reached through a parse of the whole command line; "nativerelay sendmail ..." goes straight to RunAsync.
        command.SetAction((result, _) => RunAsync([.. result.Tokens.SkipWhile(t => t.Value != "sendmail").Skip(1).Select(t => t.Value)]));
        return command;
    }

    private static int PrintHelp()
    {
        if (!InvokedAsSendmail())
            return Entry.Parse(["sendmail", "--help"]).Invoke();
        // Called as "sendmail", the root command is named "sendmail" too: show this verb alone.
        var alone = Build();
        alone.Options.Add(Verbs.WithDetails(new System.CommandLine.Help.HelpOption()));
        return alone.Parse(["--help"]).Invoke();
    }

    private sealed class Options
    {
        public bool ReadHeaderRecipients;
        public bool IgnoreDots;
        public string? Sender;
        public string? FullName;
        public string? Server;
        public string? Config;
        public string? Spool;
        public bool Verbose;
        public bool Help;
        public List<string> Recipients = [];
    }

    public static async Task<int> RunAsync(string[] args)
    {
        Options o;
        try
        {
            o = Parse(args);
        }
        catch (UsageException e)
        {
            Console.Error.WriteLine($"sendmail: {e.Message} (try 'nativerelay sendmail --help')");
            return ExUsage;
        }
        if (o.Help)
            return PrintHelp();

        MailEndpoint server;
        string hostname;
        string spool;
        try
        {
            (server, hostname, spool) = FindRelay(o);
        }
        catch (ConfigException e)
        {
            Console.Error.WriteLine($"sendmail: {e.Message}");
            return ExConfig;
        }

        byte[] input;
        try
        {
            using var stdin = Console.OpenStandardInput();
            using var buffer = new MemoryStream();
            await stdin.CopyToAsync(buffer);
            input = buffer.ToArray();
        }
        catch (IOException e)
        {
            Console.Error.WriteLine($"sendmail: cannot read the message from standard input: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
            return ExIoErr;
        }

        string sender = o.Sender ?? DefaultSender(hostname);
        if (sender == "<>")
            sender = "";
        else if (sender.StartsWith('<') && sender.EndsWith('>'))
            sender = sender[1..^1];
        if (sender.Length > 0)
            sender = SendmailMessage.Qualify(sender, hostname);

        var prepared = SendmailMessage.Prepare(SendmailMessage.NormalizeInput(input, o.IgnoreDots), sender, o.FullName, hostname,
            o.ReadHeaderRecipients, DateTimeOffset.Now);
        var recipients = new List<string>();
        foreach (var r in o.Recipients.Select(r => SendmailMessage.Qualify(r, hostname)).Concat(prepared.HeaderRecipients))
            if (!recipients.Contains(r, StringComparer.OrdinalIgnoreCase))
                recipients.Add(r);
        if (recipients.Count == 0)
        {
            Console.Error.WriteLine(o.ReadHeaderRecipients
                ? "sendmail: no recipients: none on the command line and no To, Cc or Bcc in the message"
                : "sendmail: no recipients given (name them on the command line, or use -t to read them from the message)");
            return ExUsage;
        }

        var body = MessageBuffer.Rent();
        try
        {
            body.Write(prepared.Message);
            var result = await SmtpSubmitClient.SubmitAsync(server, hostname, System.Text.Encoding.UTF8.GetBytes(sender), recipients,
                ReadOnlyMemory<byte>.Empty, body, prepared.EightBit, ConnectTimeout, ReplyTimeout);
            if (result.Queued)
            {
                if (o.Verbose)
                    Console.Error.WriteLine($"sendmail: queued for {recipients.Count} recipient(s) by {server}: {result.Reply}");
                return ExOk;
            }
            if (result.Reply.IsTransient && result.Refused.Count == 0)
                return Maildrop(spool, sender, recipients, prepared, $"{server} said {result.Reply}", o.Verbose);
            foreach (var (recipient, reply) in result.Refused)
                Console.Error.WriteLine($"sendmail: <{recipient}> refused: {reply}");
            Console.Error.WriteLine($"sendmail: the message was not queued: {server} said {result.Reply}");
            return result.Reply.IsTransient ? ExTempFail : ExUnavailable;
        }
        catch (MailProtocolException e)
        {
            return Maildrop(spool, sender, recipients, prepared, $"{server}: {e.Reply.Text ?? e.Reply.ToString()}", o.Verbose);
        }
        finally
        {
            body.Release();
        }
    }

    /// <summary>The relay is not there (or refuses for now): the message waits in the maildrop for it.</summary>
    private static int Maildrop(string spool, string sender, List<string> recipients, SendmailMessage.Prepared prepared, string why, bool verbose)
    {
        try
        {
            string name = MaildropDirectory.Submit(spool, MaildropFile.Encode(sender, recipients, prepared.EightBit, prepared.Message));
            if (verbose)
                Console.Error.WriteLine($"sendmail: the relay did not take the message ({why}); left in {MaildropDirectory.PathOf(spool)} as {name} for it to pick up");
            return ExOk;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Console.Error.WriteLine($"sendmail: the message was not queued: {why}, and the maildrop {MaildropDirectory.PathOf(spool)} cannot be written: {e.Message} (is the relay running? use --server HOST:PORT or --spool DIR)");
            return ExTempFail;
        }
    }

    private sealed class UsageException(string message) : Exception(message);

    // getopt-style, as sendmail: "-ti", "-f sender" or "-fsender", "-oi", "--" ends the options.
    private static Options Parse(string[] args)
    {
        var o = new Options();
        // -h alone is help; -h N is sendmail's hop count (accepted, ignored).
        if (args is ["-h"])
        {
            o.Help = true;
            return o;
        }
        int i = 0;
        for (; i < args.Length; i++)
        {
            var a = args[i];
            if (a == "--")
            {
                i++;
                break;
            }
            if (a.StartsWith("--", StringComparison.Ordinal))
            {
                int eq = a.IndexOf('=');
                string name = eq > 0 ? a[..eq] : a;
                string Value() => eq > 0 ? a[(eq + 1)..] : ++i < args.Length ? args[i] : throw new UsageException($"{name} needs a value");
                switch (name)
                {
                    case "--server": o.Server = Value(); break;
                    case "--config": o.Config = Value(); break;
                    case "--spool": o.Spool = Value(); break;
                    case "--help": o.Help = true; break;
                    default: throw new UsageException($"unknown option {name}");
                }
                continue;
            }
            if (a.Length < 2 || a[0] != '-')
                break; // the first recipient
            for (int k = 1; k < a.Length; k++)
            {
                char flag = a[k];
                string TakeValue()
                {
                    string v = k + 1 < a.Length ? a[(k + 1)..] : ++i < args.Length ? args[i] : throw new UsageException($"-{flag} needs a value");
                    k = a.Length;
                    return v;
                }
                switch (flag)
                {
                    case 't': o.ReadHeaderRecipients = true; break;
                    case 'i': o.IgnoreDots = true; break;
                    case 'v': o.Verbose = true; break;
                    case 'f':
                    case 'r': o.Sender = TakeValue(); break;
                    case 'F': o.FullName = TakeValue(); break;
                    case 'C': o.Config = TakeValue(); break;
                    case 'o':
                        {
                            // -oi: ignore dots; the other -oX options (-oem, -odb, -oee, ...) change nothing here.
                            var v = TakeValue();
                            if (v == "i")
                                o.IgnoreDots = true;
                            break;
                        }
                    case 'b':
                        {
                            var mode = TakeValue();
                            if (mode != "m")
                                throw new UsageException($"-b{mode} is not supported (only -bm, deliver mail, the default)");
                            break;
                        }
                    // Accepted for compatibility; their meaning does not apply to a hand-off to a relay.
                    case 'B': case 'N': case 'R': case 'V': case 'L': case 'h': case 'O': case 'X': TakeValue(); break;
                    case 'n': case 'm': case 'U': case 'G': case 'e': break;
                    default: throw new UsageException($"unknown option -{flag}");
                }
            }
        }
        for (; i < args.Length; i++)
            foreach (var r in args[i].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                o.Recipients.Add(r.StartsWith('<') && r.EndsWith('>') ? r[1..^1] : r);
        return o;
    }

    /// <summary>
    /// --server, else the first SMTP listener of the configuration (--config, $NATIVERELAY_CONFIG,
    /// /etc/nativerelay/nativerelay.json), else 127.0.0.1:2525; and the spool (for its maildrop):
    /// --spool, else the configuration's, else the default, as <c>queue</c> finds it.
    /// </summary>
    private static (MailEndpoint Server, string Hostname, string Spool) FindRelay(Options o)
    {
        string? configPath = o.Config ?? Environment.GetEnvironmentVariable("NATIVERELAY_CONFIG");
        if (configPath is null && File.Exists(DefaultConfig))
            configPath = DefaultConfig;
        RelaySettings? settings = null;
        if (configPath is not null)
            settings = RelaySettings.Validate(RelaySettings.LoadFile(configPath));
        string hostname = settings?.Hostname ?? LocalHostname();
        string spool = Path.GetFullPath(o.Spool ?? settings?.SpoolDirectory ?? new RelayOptions().Spool);

        if (o.Server is not null)
        {
            var hop = NextHop.Parse(o.Server, "--server");
            return (new MailEndpoint(hop.Host, hop.Port, null), hostname, spool);
        }
        if (settings is not null)
        {
            IPEndPoint? listen = settings.Listeners.FirstOrDefault(l => l.Kind == ListenerKind.Smtp)?.EndPoint
                                 ?? settings.Listen.FirstOrDefault();
            if (listen is null)
                throw new ConfigException($"{configPath}: no plain SMTP listener to hand mail to (use --server HOST:PORT)");
            var address = listen.Address.Equals(IPAddress.Any) ? IPAddress.Loopback
                : listen.Address.Equals(IPAddress.IPv6Any) ? IPAddress.IPv6Loopback : listen.Address;
            return (new MailEndpoint(address.ToString(), listen.Port, null), hostname, spool);
        }
        return (new MailEndpoint("127.0.0.1", 2525, null), hostname, spool);
    }

    private static string DefaultSender(string hostname)
    {
        string user = Environment.UserName;
        if (string.IsNullOrWhiteSpace(user) || user.Any(c => char.IsWhiteSpace(c) || c is '@' or '<' or '>'))
            user = "nobody";
        return user + "@" + hostname;
    }

    private static string LocalHostname()
    {
        try
        {
            var name = Dns.GetHostName();
            return name.Length > 0 && name.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-') ? name : "localhost";
        }
        catch (System.Net.Sockets.SocketException)
        {
            return "localhost";
        }
    }
}
