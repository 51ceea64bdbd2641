using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using NativeRelay.Config;
using NativeRelay.Control;

namespace NativeRelay.Cli;

/// <summary>
/// <c>nativerelay queue ...</c>: looks at and acts on the queue of the relay running on a spool,
/// through its control socket (found with <c>--spool DIR</c> or <c>--config FILE</c>, as
/// <c>serve</c> finds its spool). Exit codes: 0 done, 1 nothing matched or not confirmed,
/// 2 usage or configuration error, 3 no relay running on that spool.
/// </summary>
internal static class QueueCommand
{
    public const int ExitOk = 0;
    public const int ExitFailed = 1;
    public const int ExitUsage = 2;
    public const int ExitNoRelay = 3;

    private static readonly TimeSpan Timeout = TimeSpan.FromMinutes(5);

    private sealed class Options
    {
        public string Command = "";
        public string? Id;
        public string? Domain;
        public long? OlderThanSeconds;
        public bool Yes;
        public bool Json;
        public bool Cluster;
        public string? Spool;
        public string? Config;
    }

    // On queue itself and every subcommand (before or after the subcommand's name).
    private static readonly Option<bool> Json = Recursive(Flags.Switch("--json", "print JSON (one object per line) instead of text"));
    private static readonly Option<string> SpoolFlag = Recursive(Flags.Text("--spool", "DIR", "the spool of the relay to ask",
        $"the configuration's, else {new RelayOptions().Spool}"));
    private static readonly Option<string> Config = Recursive(Flags.Text("--config", "FILE", "find the spool in this configuration file, as serve does"));

    private static readonly Option<string> Domain = Flags.Text("--domain", "D", "only the messages with a recipient in domain D");
    private static readonly Option<long> OlderThan = Flags.Value("--older-than", "AGE",
        "only the messages older than AGE: seconds, or 90s, 30m, 2h, 3d", static (_, text) => ParseAge(text));
    private static readonly Option<bool> Yes = Flags.Switch("--yes", "do not ask for confirmation", "-y");
    private static readonly Option<bool> ClusterFlag = Flags.Switch("--cluster",
        "the fleet's figures: the queue sizes of its live nodes (from their heartbeats), summed and per node");

    private const string Details =
        "Exit codes: 0 done, 1 nothing matched or not confirmed, 2 usage or configuration error, 3 no relay running on that spool.";

    private const string IdDescription = "the queue id (16 hex digits, as in \"queued as ...\")";

    public static Command Build()
    {
        var queue = new VerbCommand("queue", "Look at and act on the queue of a running relay.",
            """
            Looks at and acts on the queue of the relay running on a spool, through its control socket (found
            with --spool DIR or --config FILE, as serve finds its spool). Exit codes: 0 done, 1 nothing matched
            or not confirmed, 2 usage or configuration error, 3 no relay running on that spool.
            """)
        {
            Json, SpoolFlag, Config,
            Subcommand("list", "List the messages in the queue.", id: IdUse.None, Domain, OlderThan),
            Subcommand("show", "Show one message: envelope, attempts, next attempt, last error.", id: IdUse.Required),
            Subcommand("flush", "Retry now: one message, a domain's, or (with neither) every message.", id: IdUse.Optional, Domain),
            Subcommand("delete", "Remove messages without notifying their senders (asks first unless --yes).", id: IdUse.OrDomain, Domain, Yes),
            Subcommand("bounce", "Return messages to their senders with a DSN and remove them.", id: IdUse.OrDomain, Domain),
            Subcommand("hold", "Keep messages from delivery until released (survives restarts).", id: IdUse.OrDomain, Domain),
            Subcommand("release", "Let held messages be delivered again.", id: IdUse.OrDomain, Domain),
            Subcommand("stats", "Counts: active, deferred, held, by destination; the spool's size and free space (--cluster: the fleet's).", id: IdUse.None, ClusterFlag),
        };
        return queue;
    }

    private static Option<T> Recursive<T>(Option<T> option)
    {
        option.Recursive = true;
        return option;
    }

    private enum IdUse { None, Required, Optional, OrDomain }

    private static Command Subcommand(string name, string description, IdUse id, params Option[] options)
    {
        var command = new VerbCommand(name, description, Details);
        if (id != IdUse.None)
        {
            // One Argument instance per subcommand: its arity differs (show needs one).
            var arg = Flags.Argument<string?>("ID", IdDescription, IdParser, optional: id != IdUse.Required);
            command.Arguments.Add(arg);
            command.Validators.Add(result =>
            {
                bool hasId = result.GetResult(arg) is { Tokens.Count: > 0 };
                bool hasDomain = result.GetResult(Domain) is { Implicit: false };
                if (id == IdUse.OrDomain && hasId == hasDomain)
                    result.AddError("needs a queue id or --domain D (one of them)");
                else if (id == IdUse.Optional && hasId && hasDomain)
                    result.AddError("takes a queue id or --domain D, not both");
            });
            command.SetAction((result, _) => RunAsync(Bind(result, name, result.GetValue(arg))));
        }
        else
        {
            command.SetAction((result, _) => RunAsync(Bind(result, name, null)));
        }
        foreach (var option in options)
            command.Options.Add(option);
        return command;
    }

    private static string? IdParser(string flag, string text) =>
        Spool.QueueIdGenerator.TryParse(text, out _) ? text.ToUpperInvariant()
            : throw new ConfigException($"'{text}' is not a queue id (16 hex digits, as in \"queued as ...\")");

    private static Options Bind(ParseResult result, string command, string? id) => new()
    {
        Command = command,
        Id = id,
        Domain = result.ValueOrNull(Domain),
        OlderThanSeconds = result.GetResult(OlderThan) is { Implicit: false } ? result.GetValue(OlderThan) : null,
        Yes = result.GetValue(Yes),
        Cluster = result.GetValue(ClusterFlag),
        Json = result.GetValue(Json),
        Spool = result.ValueOrNull(SpoolFlag),
        Config = result.ValueOrNull(Config),
    };

    private static Task<int> RunAsync(Options o)
    {
        string spool = SpoolDirectory(o);
        return ControlVerb.RunAsync("queue", () => o.Command switch
        {
            "list" => ListAsync(o, spool),
            "show" => ShowAsync(o, spool),
            "stats" => o.Cluster ? ClusterStatsAsync(o, spool) : StatsAsync(o, spool),
            "delete" => DeleteAsync(o, spool),
            _ => ActAsync(o, spool),
        });
    }

    /// <summary>Seconds from "90", "90s", "30m", "2h" or "3d".</summary>
    internal static long ParseAge(string text)
    {
        text = text.Trim();
        long unit = 1;
        if (text.Length > 0 && char.IsLetter(text[^1]))
        {
            unit = char.ToLowerInvariant(text[^1]) switch
            {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                _ => throw new ConfigException($"--older-than: '{text}' is not an age (90s, 30m, 2h, 3d)"),
            };
            text = text[..^1];
        }
        if (!long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out long n))
            throw new ConfigException($"--older-than: '{text}' is not an age (90s, 30m, 2h, 3d)");
        return n * unit;
    }

    /// <summary>The spool as serve would find it: --spool, else the config file's "spool", else the default.</summary>
    private static string SpoolDirectory(Options o) => ControlVerb.SpoolDirectory(o.Spool, o.Config);

    private static Task<(List<ControlEntry> Entries, ControlResponse Final)> SendAsync(string spool, Options o, string command) =>
        ControlClient.SendAsync(spool, new ControlRequest
        {
            Command = command,
            Id = o.Id,
            Domain = o.Domain,
            OlderThanSeconds = o.OlderThanSeconds,
        }, Timeout);

    private static int Refused(ControlResponse final)
    {
        Console.Error.WriteLine($"nativerelay queue: {final.Error ?? "the relay refused the request"}");
        return ExitFailed;
    }

    private static async Task<int> ListAsync(Options o, string spool)
    {
        var (entries, final) = await SendAsync(spool, o, "list");
        if (!final.Ok)
            return Refused(final);
        if (o.Json)
        {
            foreach (var e in entries)
                Console.WriteLine(JsonSerializer.Serialize(new ControlResponse { Entry = e }, ControlJsonContext.Default.ControlResponse));
            return ExitOk;
        }
        if (entries.Count == 0)
        {
            Console.WriteLine("the queue is empty" + (o.Domain is null && o.OlderThanSeconds is null ? "" : " (for this filter)"));
            return ExitOk;
        }
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var w = new StringBuilder();
        w.AppendLine($"{"ID",-16}  {"AGE",6}  {"SIZE",7}  {"TRIES",5}  {"NEXT",-8}  SENDER");
        foreach (var e in entries)
        {
            w.AppendLine($"{e.Id,-16}  {Duration(now - e.ArrivalUnixMs),6}  {Size(e.Size),7}  {e.Attempts,5}  {Next(e, now),-8}  {(e.Sender.Length == 0 ? "<>" : e.Sender)}");
            foreach (var r in e.Recipients)
                w.AppendLine($"  -> {r}");
            if (e.LastError is not null)
                w.AppendLine($"  (last error: {e.LastError})");
        }
        w.Append($"-- {entries.Count} message(s), {Size(entries.Sum(e => e.Size))}");
        Console.WriteLine(w.ToString());
        return ExitOk;
    }

    private static async Task<int> ShowAsync(Options o, string spool)
    {
        var (entries, final) = await SendAsync(spool, o, "show");
        if (!final.Ok || entries.Count == 0)
            return Refused(final);
        var e = entries[0];
        if (o.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new ControlResponse { Entry = e }, ControlJsonContext.Default.ControlResponse));
            return ExitOk;
        }
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        Console.WriteLine($"id:           {e.Id}");
        Console.WriteLine($"arrived:      {DateTimeOffset.FromUnixTimeMilliseconds(e.ArrivalUnixMs):u} ({Duration(now - e.ArrivalUnixMs)} ago)");
        Console.WriteLine($"size:         {e.Size} bytes");
        Console.WriteLine($"sender:       {(e.Sender.Length == 0 ? "<>" : e.Sender)}");
        foreach (var r in e.Recipients)
            Console.WriteLine($"recipient:    {r}");
        Console.WriteLine($"attempts:     {e.Attempts}");
        Console.WriteLine($"next attempt: {Next(e, now)}");
        Console.WriteLine($"last error:   {e.LastError ?? "-"}");
        return ExitOk;
    }

    private static async Task<int> StatsAsync(Options o, string spool)
    {
        var (_, final) = await SendAsync(spool, o, "stats");
        if (o.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(final, ControlJsonContext.Default.ControlResponse));
            return final.Ok ? ExitOk : ExitFailed;
        }
        if (final.Stats is { } s)
        {
            Console.WriteLine($"active:   {s.Active}");
            Console.WriteLine($"deferred: {s.Deferred}");
            Console.WriteLine($"held:     {s.Held}");
            if (s.ByDestination.Count > 0)
            {
                Console.WriteLine("by destination:");
                foreach (var (destination, count) in s.ByDestination.OrderByDescending(p => p.Value))
                    Console.WriteLine($"  {count,8}  {destination}");
            }
        }
        else if (final.Error is not null)
        {
            Console.WriteLine($"queue counts unavailable: {final.Error}");
        }
        if (final.Spool is { } p)
        {
            Console.WriteLine($"spool:    {p.LiveMessages} live message(s), log {Size(p.LogBytes)} ({Size(p.SizeOnDisk)} of segment files), {Size(p.FreeBytes)} free on its disk"
                              + (p.RefusingMail ? $"; REFUSING NEW MAIL: {p.Problem}" : ""));
        }
        return final.Ok ? ExitOk : ExitFailed;
    }

    /// <summary>
    /// queue stats --cluster: the live nodes' queue sizes from their last heartbeats (at most a
    /// heartbeat old), summed and per node. JSON: "stats" holds the sums as queue stats --json
    /// has this node's, "cluster" the nodes.
    /// </summary>
    private static async Task<int> ClusterStatsAsync(Options o, string spool)
    {
        var final = await ClusterCommand.AskAsync(spool);
        if (!final.Ok || final.Cluster is not { } c)
        {
            if (o.Json)
                Console.WriteLine(JsonSerializer.Serialize(final, ControlJsonContext.Default.ControlResponse));
            else
                Console.Error.WriteLine($"nativerelay queue: {final.Error ?? "the relay refused the request"}");
            return ExitFailed;
        }
        var live = c.Nodes.Where(n => n.Live).ToList();
        var sum = new ControlStats
        {
            Active = (int)live.Sum(n => n.Active),
            Deferred = (int)live.Sum(n => n.Deferred),
            Held = (int)live.Sum(n => n.Held),
        };
        if (o.Json)
        {
            Console.WriteLine(JsonSerializer.Serialize(new ControlResponse { Done = true, Ok = true, Stats = sum, Cluster = c, Error = c.NodesError },
                ControlJsonContext.Default.ControlResponse));
            return ExitOk;
        }
        if (c.NodesError is not null)
            Console.WriteLine(c.NodesFromUnixMs is long at
                ? $"(Redis is unreachable from {c.Node}: figures as read {Duration(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() - at)} ago)"
                : $"fleet figures unavailable: {c.NodesError}");
        Console.WriteLine($"fleet:    {live.Count} live node(s) of {c.Nodes.Count}");
        Console.WriteLine($"active:   {sum.Active}");
        Console.WriteLine($"deferred: {sum.Deferred}");
        Console.WriteLine($"held:     {sum.Held}");
        if (live.Count > 0)
        {
            Console.WriteLine("by node:");
            Console.WriteLine($"  {"NODE",-20} {"ACTIVE",8} {"DEFERRED",8} {"HELD",8}");
            foreach (var n in live)
                Console.WriteLine($"  {n.Name,-20} {n.Active,8} {n.Deferred,8} {n.Held,8}");
        }
        return ExitOk;
    }

    private static async Task<int> DeleteAsync(Options o, string spool)
    {
        if (!o.Yes)
        {
            var preview = o.Id is not null ? await SendAsync(spool, o, "show") : await SendAsync(spool, o, "list");
            if (preview.Entries.Count == 0)
            {
                Console.Error.WriteLine($"nativerelay queue: {preview.Final.Error ?? "no message matches"}; nothing deleted");
                return ExitFailed;
            }
            var ids = preview.Entries.Select(e => e.Id).ToList();
            Console.Error.Write($"Delete {ids.Count} message(s) ({string.Join(", ", ids.Take(5))}{(ids.Count > 5 ? ", ..." : "")}) without notifying their senders? [y/N] ");
            string? answer = Console.In.ReadLine()?.Trim();
            if (!string.Equals(answer, "y", StringComparison.OrdinalIgnoreCase) && !string.Equals(answer, "yes", StringComparison.OrdinalIgnoreCase))
            {
                Console.Error.WriteLine("not deleted");
                return ExitFailed;
            }
        }
        return await ActAsync(o, spool);
    }

    /// <summary>flush, delete, bounce, hold, release: one request, a count back.</summary>
    private static async Task<int> ActAsync(Options o, string spool)
    {
        var (_, final) = await SendAsync(spool, o, o.Command);
        if (!final.Ok)
            return Refused(final);
        int count = final.Count ?? 0;
        string done = o.Command switch
        {
            "flush" => "scheduled for immediate delivery",
            "delete" => "deleted",
            "bounce" => "returned to sender",
            "hold" => "held",
            _ => "released",
        };
        if (o.Json)
            Console.WriteLine(JsonSerializer.Serialize(final, ControlJsonContext.Default.ControlResponse));
        else
            Console.WriteLine($"{count} message(s) {done}");
        if (count == 0 && o.Id is not null)
        {
            Console.Error.WriteLine($"nativerelay queue: no message {o.Id} in the queue");
            return ExitFailed;
        }
        return ExitOk;
    }

    private static string Next(ControlEntry e, long now) =>
        e.Held ? "held" : e.NextAttemptUnixMs is not long next || next <= now ? "now" : "in " + Duration(next - now);

    internal static string Duration(long ms)
    {
        long s = Math.Max(0, ms / 1000);
        if (s < 60)
            return $"{s}s";
        if (s < 3600)
            return $"{s / 60}m{s % 60:00}s";
        if (s < 86400)
            return $"{s / 3600}h{s % 3600 / 60:00}m";
        return $"{s / 86400}d{s % 86400 / 3600:00}h";
    }

    internal static string Size(long bytes) => bytes switch
    {
        < 1024 => $"{bytes}B",
        < 1024 * 1024 => $"{bytes / 1024.0:0.#}K",
        < 1024L * 1024 * 1024 => $"{bytes / (1024.0 * 1024):0.#}M",
        _ => $"{bytes / (1024.0 * 1024 * 1024):0.##}G",
    };
}
