using System.Net;
using NativeRelay.Config;

namespace NativeRelay.Tools;

/// <summary>How <c>nativerelay sink</c> listens and answers.</summary>
public sealed class SinkOptions
{
    public const string Usage =
        """
        usage: nativerelay sink [options]

        A fast SMTP server that accepts (or refuses, on request) everything and counts it: the
        next hop for load tests. Offers PIPELINING, SIZE, 8BITMIME, SMTPUTF8, DSN and CHUNKING
        (BDAT). Runs until SIGINT/SIGTERM, --exit-after or --timeout, then prints a summary.

          --listen IP:PORT       address to listen on (default 127.0.0.1:2526; port 0: any free port)
          --reply-code CODE      reply to the end of DATA (or the last BDAT) with CODE (default 250)
          --rcpt-reply CODE      reply to every RCPT with CODE (default 250)
          --delay MS             wait this long before answering the end of the data (a slow destination)
          --save DIR             write each message to DIR as a file, as received (un-dot-stuffed),
                                 and its envelope as a line of DIR/envelopes.log
          --exit-after N         stop after N messages have been received
          --timeout SECONDS      stop after this long
          --hostname NAME        name in the greeting (default sink.nativerelay.test)
          --no-pipelining        do not offer PIPELINING
          --no-chunking          do not offer CHUNKING
          --json                 print the summary as one JSON object
          --quiet                no running count and no "listening" line

        A running count goes to standard error when it is a terminal; "listening on IP:PORT" and
        the summary go to standard output.
        """;

    public IPEndPoint Listen { get; set; } = new(IPAddress.Loopback, 2526);
    public int ReplyCode { get; set; } = 250;
    public int RcptReplyCode { get; set; } = 250;
    public TimeSpan Delay { get; set; } = TimeSpan.Zero;
    public string? SaveDirectory { get; set; }
    public long ExitAfter { get; set; }
    public TimeSpan? Timeout { get; set; }
    public string Hostname { get; set; } = "sink.nativerelay.test";
    public bool Pipelining { get; set; } = true;
    public bool Chunking { get; set; } = true;
    public bool Json { get; set; }
    public bool Quiet { get; set; }

    public static SinkOptions Parse(string[] args)
    {
        var o = new SinkOptions();
        var a = new ToolArgs(args, "sink");
        while (a.TryNextFlag(out var flag))
        {
            switch (flag)
            {
                case "--listen":
                    o.Listen = a.ListenEndPoint(flag);
                    break;
                case "--reply-code":
                    o.ReplyCode = a.ReplyCode(flag);
                    break;
                case "--rcpt-reply":
                    o.RcptReplyCode = a.ReplyCode(flag);
                    break;
                case "--delay":
                    o.Delay = TimeSpan.FromMilliseconds(a.Long(flag, 0, 3_600_000));
                    break;
                case "--save":
                    o.SaveDirectory = a.Value(flag);
                    break;
                case "--exit-after":
                    o.ExitAfter = a.Long(flag, 1, long.MaxValue);
                    break;
                case "--timeout":
                    o.Timeout = TimeSpan.FromSeconds(a.Double(flag, 30 * 24 * 3600));
                    if (o.Timeout <= TimeSpan.Zero)
                        throw new ConfigException("sink: --timeout must be positive");
                    break;
                case "--hostname":
                    o.Hostname = a.Value(flag);
                    if (!RelaySettings.IsValidHostname(o.Hostname))
                        throw new ConfigException($"sink: --hostname must be a host name (got '{o.Hostname}')");
                    break;
                case "--no-pipelining":
                    a.NoValue(flag);
                    o.Pipelining = false;
                    break;
                case "--no-chunking":
                    a.NoValue(flag);
                    o.Chunking = false;
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
        return o;
    }
}
