using NativeRelay.Config;

namespace NativeRelay.Tools;

/// <summary>How big a load <c>nativerelay bench</c> runs.</summary>
public sealed class BenchOptions
{
    public const string Usage =
        """
        usage: nativerelay bench [options]

        The 30-second proof: starts a sink, a relay with a temporary spool (durable: every 250 is
        sent after the group commit that covers the message) relaying to that sink, and a blaster,
        all in this process on loopback ports it picks; sends a bounded load; prints the accept
        and end-to-end rates and latency percentiles; removes the temporary spool.

          --messages N           messages to send (default 20000)
          --sessions S           concurrent sending sessions (default 20)
          --size BYTES           message size (default 1024; 100k works)
          --per-connection M     messages per sending connection (default: no limit)
          --timeout SECONDS      give up after this long (default 120)
          --temp-dir DIR         where the temporary spool goes (default: the system's temp dir)
          --json                 print the result as one JSON object
          --quiet                no progress display

        The three parts share this process and its cores, so the figures are lower than those
        of a relay measured alone (see perf/compare.sh for that).
        """;

    public long Messages { get; set; } = 20_000;
    public int Sessions { get; set; } = 20;
    public int Size { get; set; } = 1024;
    public long PerConnection { get; set; }
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(120);
    public string? TempDirectory { get; set; }
    public bool Json { get; set; }
    public bool Quiet { get; set; }

    public static BenchOptions Parse(string[] args)
    {
        var o = new BenchOptions();
        var a = new ToolArgs(args, "bench");
        while (a.TryNextFlag(out var flag))
        {
            switch (flag)
            {
                case "--messages":
                    o.Messages = a.Long(flag, 1, 100_000_000);
                    break;
                case "--sessions":
                    o.Sessions = a.Int(flag, 1, 1000);
                    break;
                case "--size":
                    o.Size = (int)a.Size(flag, 1, 16 * 1024 * 1024);
                    break;
                case "--per-connection":
                    o.PerConnection = a.Long(flag, 0, long.MaxValue);
                    break;
                case "--timeout":
                    o.Timeout = TimeSpan.FromSeconds(a.Double(flag, 24 * 3600));
                    if (o.Timeout <= TimeSpan.Zero)
                        throw new ConfigException("bench: --timeout must be positive");
                    break;
                case "--temp-dir":
                    o.TempDirectory = a.Value(flag);
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
        var blast = new BlastOptions();
        int minimum = BlastMessage.MinimumSize(blast.From, blast.Rcpt);
        if (o.Size < minimum)
            throw new ConfigException($"bench: --size must be at least {minimum} bytes (the message's header section)");
        return o;
    }
}
