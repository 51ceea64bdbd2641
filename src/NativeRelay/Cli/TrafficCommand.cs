using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using NativeRelay.Config;
using NativeRelay.Control;

namespace NativeRelay.Cli;

/// <summary>
/// <c>nativerelay traffic status|resume</c>: the traffic control of the relay running on a spool,
/// through its control socket (found with <c>--spool DIR</c> or <c>--config FILE</c>, as
/// <c>queue</c> finds it). Exit codes as queue's: 0 done, 1 refused or nothing lifted, 2 usage or
/// configuration error, 3 no relay running on that spool.
/// </summary>
internal static class TrafficCommand
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(30);

    private static readonly Option<bool> Json = Recursive(Flags.Switch("--json", "print the relay's answer as JSON"));
    private static readonly Option<string> SpoolFlag = Recursive(Flags.Text("--spool", "DIR", "the spool of the relay to ask",
        $"the configuration's, else {new RelayOptions().Spool}"));
    private static readonly Option<string> Config = Recursive(Flags.Text("--config", "FILE", "find the spool in this configuration file, as serve does"));

    private static readonly Option<string> Site = Flags.Text("--site", "S", "the site whose actions to lift (its name or label, as traffic status shows it)");
    private static readonly Option<string> Source = Flags.Text("--source", "X", "only the actions on source X's path to the site", "every source");

    private const string Details =
        "Exit codes: 0 done, 1 refused or nothing to lift, 2 usage or configuration error, 3 no relay running on that spool.";

    public static Command Build()
    {
        var status = new VerbCommand("status", "Show the automation's actions in force, the busy (source, site) paths, the sources and pools.", Details);
        status.SetAction((result, _) => RunAsync(result, "status"));
        var resume = new VerbCommand("resume", "Lift the actions (suspend, throttle, bounce) on a site, from every source or one.", Details)
        {
            Site, Source,
        };
        Site.Required = true;
        resume.SetAction((result, _) => RunAsync(result, "resume"));
        return new VerbCommand("traffic", "Look at and lift the traffic control of a running relay.",
            """
            Talks to the relay running on a spool through its control socket (found with --spool DIR or --config
            FILE, as queue finds it): 'status' lists the automation's actions in force (what, on which source and
            site, until when, after which reply), the (source, site) paths with connections or queued mail and
            their limits, the sources and the pools; 'resume --site S [--source X]' lifts actions before they
            lapse. Exit codes: 0 done, 1 refused or nothing to lift, 2 usage or configuration error, 3 no relay
            running on that spool.
            """)
        {
            Json, SpoolFlag, Config, status, resume,
        };
    }

    private static Option<T> Recursive<T>(Option<T> option)
    {
        option.Recursive = true;
        return option;
    }

    private static async Task<int> RunAsync(ParseResult result, string command)
    {
        string spool = ControlVerb.SpoolDirectory(result.ValueOrNull(SpoolFlag), result.ValueOrNull(Config));
        bool json = result.GetValue(Json);
        return await ControlVerb.RunAsync("traffic", async () =>
        {
            var request = command == "status"
                ? new ControlRequest { Command = ControlProtocol.Commands.TrafficStatus }
                : new ControlRequest { Command = ControlProtocol.Commands.TrafficResume, Site = result.GetValue(Site), Source = result.ValueOrNull(Source) };
            var (_, final) = await ControlClient.SendAsync(spool, request, Timeout);
            if (json)
            {
                Console.WriteLine(JsonSerializer.Serialize(final, ControlJsonContext.Default.ControlResponse));
                return final.Ok ? QueueCommand.ExitOk : QueueCommand.ExitFailed;
            }
            if (!final.Ok)
            {
                Console.Error.WriteLine($"nativerelay traffic: {final.Error ?? "the relay refused the request"}");
                return QueueCommand.ExitFailed;
            }
            if (command == "resume")
            {
                int lifted = final.Count ?? 0;
                Console.WriteLine($"{lifted} action(s) lifted on site {request.Site}{(request.Source is null ? "" : $" from source {request.Source}")}");
                return lifted > 0 ? QueueCommand.ExitOk : QueueCommand.ExitFailed;
            }
            Print(final.Traffic ?? new ControlTraffic());
            return QueueCommand.ExitOk;
        });
    }

    private static void Print(ControlTraffic t)
    {
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        if (t.Actions.Count == 0)
            Console.WriteLine("actions in force: none");
        else
        {
            Console.WriteLine("actions in force:");
            Console.WriteLine($"  {"ACTION",-9} {"SOURCE",-12} {"SITE",-30} {"LEFT",8}  RULE / REPLY");
            foreach (var a in t.Actions)
            {
                string what = a.Limits is null ? a.Action : $"{a.Action}";
                Console.WriteLine($"  {what,-9} {a.Source,-12} {a.Site,-30} {QueueCommand.Duration(a.UntilUnixMs - now),8}  {a.Rule}: {a.Reply}");
                if (a.Limits is not null)
                    Console.WriteLine($"  {"",-9} limits: {a.Limits}");
            }
        }
        if (t.Paths.Count > 0)
        {
            Console.WriteLine("busy paths:");
            Console.WriteLine($"  {"SOURCE",-12} {"SITE",-30} {"CONN",5} {"QUEUED",7}  LIMITS");
            foreach (var p in t.Paths)
                Console.WriteLine($"  {p.Source,-12} {p.Site,-30} {p.Connections,5} {(p.Queued < 0 ? "?" : p.Queued.ToString(CultureInfo.InvariantCulture)),7}  {p.Limits}");
        }
        foreach (var s in t.Sources)
            Console.WriteLine($"source   {s}");
        foreach (var p in t.Pools)
            Console.WriteLine($"pool     {p}");
    }
}
