using NativeRelay.Config;

namespace NativeRelay.Tools;

/// <summary>What <c>nativerelay blast</c> sends, how hard, and how it reports.</summary>
public sealed class BlastOptions
{
    public const string Usage =
        """
        usage: nativerelay blast --to HOST:PORT [options]

        Sends N messages over S concurrent SMTP sessions and reports messages/s, MB/s, errors by
        reply code, and connect and accept latency percentiles. Uses PIPELINING when the server
        offers it (MAIL, every RCPT and DATA in one write) and reuses connections.

          --to HOST:PORT         server to send to (default 127.0.0.1:2525)
          --messages N           messages to send in all (default 1000)
          --sessions S           concurrent SMTP sessions (default 10)
          --size BYTES           size of each message, headers included (default 1024; 100k, 1m work)
          --per-connection M     messages per connection, then QUIT and reconnect (default: no limit)
          --recipients R         recipients per message (default 1)
          --from ADDRESS         envelope sender and From: (default blast@example.org)
          --rcpt ADDRESS         recipient; with R > 1 it gets a number in front: 1rcpt@..., 2rcpt@...
                                 (default sink@example.com)
          --rate MSGS_PER_S      start at most this many messages per second (default: as fast as possible)
          --timeout SECONDS      stop after this long and report what was done (default 600)
          --tls                  STARTTLS before sending (the server's certificate is not verified)
          --helo NAME            EHLO name (default blast.example.org)
          --json                 print the summary as one JSON object
          --quiet                no progress display

        Progress goes to standard error (a bar on a terminal, a line a second otherwise); the
        summary goes to standard output. Exit code 0 when every message was accepted, 1 when any
        failed or the timeout hit, 2 for a usage error.

        Connect latency is from connect() to the 220 greeting; accept latency is from the end of
        the data (the final "." sent) to the server's reply.
        """;

    public string Host { get; set; } = "127.0.0.1";
    public int Port { get; set; } = 2525;
    public long Messages { get; set; } = 1000;
    public int Sessions { get; set; } = 10;
    public int Size { get; set; } = 1024;
    /// <summary>0: no limit (one connection per session for the whole run).</summary>
    public long PerConnection { get; set; }
    public int Recipients { get; set; } = 1;
    public string From { get; set; } = "blast@example.org";
    public string Rcpt { get; set; } = "sink@example.com";
    /// <summary>Messages started per second over all sessions; 0: no limit.</summary>
    public double Rate { get; set; }
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(600);
    public bool Tls { get; set; }
    public string Helo { get; set; } = "blast.example.org";
    public bool Json { get; set; }
    public bool Quiet { get; set; }

    public string Target => Host.Contains(':') ? $"[{Host}]:{Port}" : $"{Host}:{Port}";

    public static BlastOptions Parse(string[] args)
    {
        var o = new BlastOptions();
        var a = new ToolArgs(args, "blast");
        while (a.TryNextFlag(out var flag))
        {
            switch (flag)
            {
                case "--to":
                    (o.Host, o.Port) = a.HostPort(flag);
                    break;
                case "--messages":
                    o.Messages = a.Long(flag, 1, 1_000_000_000_000);
                    break;
                case "--sessions":
                    o.Sessions = a.Int(flag, 1, 10_000);
                    break;
                case "--size":
                    o.Size = (int)a.Size(flag, 1, 1L << 30);
                    break;
                case "--per-connection":
                    o.PerConnection = a.Long(flag, 0, long.MaxValue);
                    break;
                case "--recipients":
                    o.Recipients = a.Int(flag, 1, 10_000);
                    break;
                case "--from":
                    o.From = a.Address(flag);
                    break;
                case "--rcpt":
                    o.Rcpt = a.Address(flag);
                    break;
                case "--rate":
                    o.Rate = a.Double(flag, 10_000_000);
                    break;
                case "--timeout":
                    o.Timeout = TimeSpan.FromSeconds(a.Double(flag, 30 * 24 * 3600));
                    if (o.Timeout <= TimeSpan.Zero)
                        throw new ConfigException("blast: --timeout must be positive");
                    break;
                case "--tls":
                    a.NoValue(flag);
                    o.Tls = true;
                    break;
                case "--helo":
                    o.Helo = a.Value(flag);
                    if (!RelaySettings.IsValidHostname(o.Helo))
                        throw new ConfigException($"blast: --helo must be a host name (got '{o.Helo}')");
                    break;
                case "--json":
                    a.NoValue(flag);
                    o.Json = true;
                    break;
                case "--quiet":
                    a.NoValue(flag);
                    o.Quiet = true;
                    break;
                default:
                    throw a.Unknown(flag);
            }
        }
        int minimum = BlastMessage.MinimumSize(o.From, o.Rcpt);
        if (o.Size < minimum)
            throw new ConfigException($"blast: --size must be at least {minimum} bytes (the message's header section)");
        return o;
    }
}
