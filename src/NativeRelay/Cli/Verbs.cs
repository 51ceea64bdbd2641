namespace NativeRelay.Cli;

/// <summary>A command of the binary: its name, a usage line for --help, and what it runs.</summary>
internal sealed record Verb(string Name, string Usage, Func<string[], Task<int>> Run);

/// <summary>Every verb, in the order --help lists them. Add a verb here and in its own file.</summary>
internal static class Verbs
{
    public static readonly Verb[] All =
    [
        new("serve", "serve [--listen IP:PORT]... [--spool DIR] [--hostname NAME] [--relay-to HOST:PORT] [--dns IP:PORT]... [--remote-port N] [--config FILE] [--tls-cert PEM --tls-key PEM] [--listen-tls IP:PORT]... [--submission IP:PORT]... [--users FILE] [--local-domain DOMAIN]... [--maildir-root DIR] [--metrics IP:PORT] [--log-format text|json] [--log-level LEVEL] [--drain-seconds N] [--user NAME] [--dkim DOMAIN:SELECTOR:KEYFILE]...", ServeCommand.RunAsync),
        new("check-config", "check-config FILE  (validates a configuration and prints what the relay would do)", CheckConfigCommand.RunAsync),
        new("sendmail", "sendmail [-t] [-i] [-f SENDER] [--server HOST:PORT] [--config FILE] [RECIPIENT]...  (message on standard input)", SendmailCommand.RunAsync),
        new("passwd", "passwd USER [--file FILE] [--iterations N] [--delete]  (password from standard input; writes NAME:HASH)", PasswdCommand.RunAsync),
        new("blast", "blast --to HOST:PORT [--messages N] [--sessions S] [--size BYTES] [--rate MSGS_PER_S] [--json] ... (blast --help)", BlastCommand.RunAsync),
        new("sink", "sink [--listen IP:PORT] [--reply-code CODE] [--rcpt-reply CODE] [--delay MS] [--save DIR] ... (sink --help)", SinkCommand.RunAsync),
        new("bench", "bench [--messages N] [--sessions S] [--size BYTES] [--json] (bench --help)", BenchCommand.RunAsync),
        new("queue", QueueCommand.Usage, QueueCommand.RunAsync),
        new("dkim", DkimCommand.Usage, DkimCommand.RunAsync),
    ];
}
