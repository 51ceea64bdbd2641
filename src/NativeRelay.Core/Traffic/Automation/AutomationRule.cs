using System.Globalization;
using System.Text.RegularExpressions;
using NativeRelay.Config;
using NativeRelay.Smtp;
using NativeRelay.Traffic.Shaping;
using NativeRelay.Traffic.Sites;

namespace NativeRelay.Traffic.Automation;

/// <summary>What an automation rule does to the (source, site) path a matching reply came from.</summary>
public enum TrafficActionKind : byte
{
    /// <summary>Lower the path's limits to the rule's values (connections, rates, deliveries per connection).</summary>
    Throttle,
    /// <summary>Send nothing on the path: its mail moves to another source of its pool, or waits (deferred).</summary>
    Suspend,
    /// <summary>Return the path's queued mail to its senders (a DSN), and mail that comes for it meanwhile.</summary>
    Bounce,
}

/// <summary>
/// A rule that watches the replies of remote servers: when one from a site it covers matches
/// (code, enhanced status code prefix, text pattern: all given must hold), it acts on that
/// (source, site) for a while (<see cref="ActionTable"/>). Only replies the remote server gave
/// are watched; failures made up locally (connect timeouts, lost connections) never match.
/// </summary>
public sealed class AutomationRule
{
    public required string Name { get; init; }
    public int? Code { get; init; }
    public string? Enhanced { get; init; }
    private Lazy<Regex>? _text;

    /// <summary>
    /// The reply-text pattern. An operator's is built when the rule is checked (so check-config and
    /// SIGHUP report a bad one); the shipped defaults' are built on first use, because building a
    /// NonBacktracking regex costs milliseconds and every start would pay it for rules that most
    /// runs never reach.
    /// </summary>
    public Regex? Text
    {
        get => _text?.Value;
        init => _text = value is null ? null : new Lazy<Regex>(() => value);
    }
    public string? TextPattern { get; init; }
    public string? Domain { get; init; }
    public string? Site { get; init; }
    public string? MxSuffix { get; init; }
    public string? Source { get; init; }
    public required TrafficActionKind Action { get; init; }
    public required TimeSpan Duration { get; init; }
    /// <summary>The lowered limits of a throttle (empty for the other actions).</summary>
    public ShapingLimits Limits { get; init; } = ShapingLimits.None;

    /// <summary>Whether this rule covers the path (its site and source scope).</summary>
    public bool Covers(EgressPath path) => new SiteScope(Domain, Site, MxSuffix, Source).Covers(path.Site, path.Source);

    /// <summary>Whether the reply matches (code, enhanced code, text).</summary>
    public bool Matches(in SmtpReply reply)
    {
        if (Code is { } code && reply.Code != code)
            return false;
        var text = reply.Text ?? "";
        if (Enhanced is not null && !EnhancedStartsWith(text, Enhanced))
            return false;
        if (Text is not null && !Text.IsMatch(text))
            return false;
        return true;
    }

    /// <summary>"4.7.28 Our system ..." starts with "4.7.28" and with "4.7", not with "4.7.2".</summary>
    internal static bool EnhancedStartsWith(string text, string prefix)
    {
        if (!text.StartsWith(prefix, StringComparison.Ordinal))
            return false;
        return text.Length == prefix.Length || text[prefix.Length] is ' ' or '.' or '-' or '\t';
    }

    public string Describe()
    {
        var when = new List<string>();
        if (Code is { } c) when.Add(c.ToString(CultureInfo.InvariantCulture));
        if (Enhanced is not null) when.Add(Enhanced);
        if (TextPattern is not null) when.Add($"/{TextPattern}/");
        var scope = new List<string>();
        if (Domain is not null) scope.Add($"domain {Domain}");
        if (Site is not null) scope.Add($"site {Site}");
        if (MxSuffix is not null) scope.Add($"mx *{MxSuffix}");
        if (Source is not null) scope.Add($"source {Source}");
        string action = Action switch
        {
            TrafficActionKind.Suspend => "suspend",
            TrafficActionKind.Bounce => "bounce",
            _ => $"throttle to {Limits.Describe()}",
        };
        return $"{Name}: {string.Join(" ", when)}{(scope.Count == 0 ? "" : " from " + string.Join(", ", scope))} -> {action} for {DescribeDuration(Duration)}";
    }

    public static string DescribeDuration(TimeSpan d) =>
        d.TotalSeconds < 120 ? $"{d.TotalSeconds:0}s" : d.TotalMinutes < 120 ? $"{d.TotalMinutes:0}m" : d.TotalHours < 48 ? $"{d.TotalHours:0.#}h" : $"{d.TotalDays:0.#}d";

    public static string ActionName(TrafficActionKind kind) => kind switch
    {
        TrafficActionKind.Suspend => "suspend",
        TrafficActionKind.Bounce => "bounce",
        _ => "throttle",
    };

    private const RegexOptions TextOptions = RegexOptions.IgnoreCase | RegexOptions.CultureInvariant | RegexOptions.NonBacktracking;

    /// <summary>Checks one rule of a shaping file; <paramref name="what"/> names it in errors.</summary>
    public static AutomationRule From(AutomationRuleOptions o, string what) => From(o, what, buildPatternNow: true);

    private static AutomationRule From(AutomationRuleOptions o, string what, bool buildPatternNow)
    {
        if (string.IsNullOrWhiteSpace(o.Name))
            throw new ConfigException($"{what}: name is needed");
        what = $"{what} ({o.Name})";
        if (o.Code is null && o.Enhanced is null && o.Text is null)
            throw new ConfigException($"{what}: a rule needs code, enhanced or text to match");
        if (o.Code is { } code && code is < 200 or > 599)
            throw new ConfigException($"{what}.code: 200 to 599 (got {code})");
        if (o.Enhanced is { } enhanced && !IsEnhancedPrefix(enhanced))
            throw new ConfigException($"{what}.enhanced: '{enhanced}' is not an enhanced status code or its start (4.7.28, 4.7)");
        Regex? regex = null;
        if (o.Text is { } text && buildPatternNow)
        {
            try
            {
                // NonBacktracking: a rule's pattern runs on text from the network (at most 2 KiB of a
                // reply); linear time, never a runaway, so no timeout (a wall-clock timeout on a
                // loaded host would make a match fail at random).
                regex = new Regex(text, TextOptions);
            }
            catch (Exception e) when (e is ArgumentException or NotSupportedException)
            {
                throw new ConfigException($"{what}.text: '{text}' is not a regular expression this relay can run: {e.Message}");
            }
        }
        var action = o.Action?.Trim().ToLowerInvariant() switch
        {
            "suspend" => TrafficActionKind.Suspend,
            "throttle" => TrafficActionKind.Throttle,
            "bounce" => TrafficActionKind.Bounce,
            _ => throw new ConfigException($"{what}.action: '{o.Action}' is not one of suspend, throttle, bounce"),
        };
        var duration = ParseDuration(o.Duration, $"{what}.duration");
        var limits = ShapingLimits.From(o, what);
        if (action == TrafficActionKind.Throttle && (limits.IsEmpty || limits.Tls is not null || limits.IdleSeconds is not null))
            throw new ConfigException($"{what}: a throttle needs the limits to lower (maxConnections, connectionsPerMinute, messagesPer..., recipientsPerTransaction); tls and idleSeconds are not lowered");
        if (action != TrafficActionKind.Throttle && !limits.IsEmpty)
            throw new ConfigException($"{what}: limits only go with the throttle action");
        var rule = new AutomationRule
        {
            Name = o.Name.Trim(),
            Code = o.Code,
            Enhanced = o.Enhanced,
            Text = regex,
            TextPattern = o.Text,
            Domain = o.Domain?.Trim().TrimEnd('.').ToLowerInvariant(),
            Site = o.Site,
            MxSuffix = o.MxSuffix?.Trim().TrimStart('.').ToLowerInvariant(),
            Source = o.Source,
            Action = action,
            Duration = duration,
            Limits = limits,
        };
        if (regex is null && o.Text is { } pattern)
            rule._text = new Lazy<Regex>(() => new Regex(pattern, TextOptions)); // a shipped pattern: known good
        return rule;
    }

    private static bool IsEnhancedPrefix(string s)
    {
        var parts = s.Split('.');
        if (parts.Length is < 1 or > 3 || parts[0] is not ("2" or "4" or "5"))
            return false;
        foreach (var p in parts)
            if (p.Length is 0 or > 3 || !p.All(char.IsAsciiDigit))
                return false;
        return true;
    }

    /// <summary>Seconds ("90"), or a number with s, m, h or d ("90s", "30m", "2h", "1d"); at least one second, at most 30 days.</summary>
    public static TimeSpan ParseDuration(string? text, string what)
    {
        text = text?.Trim() ?? "";
        double unit = 1;
        if (text.Length > 0 && char.IsAsciiLetter(text[^1]))
        {
            unit = char.ToLowerInvariant(text[^1]) switch
            {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86400,
                _ => 0,
            };
            text = text[..^1];
        }
        if (unit == 0 || !double.TryParse(text, NumberStyles.AllowDecimalPoint, CultureInfo.InvariantCulture, out double n)
            || !(n * unit >= 1) || n * unit > 30 * 86400)
            throw new ConfigException($"{what}: a duration from 1s to 30d (90, 90s, 30m, 2h, 1d) is needed");
        return TimeSpan.FromSeconds(n * unit);
    }

    /// <summary>
    /// The rules in force when a shaping file gives none (or there is no file): well-known
    /// throttling replies of the large providers. A mailbox-full reply (452 4.2.2) is a
    /// recipient's own problem, not a throttle, and matches none of them.
    /// </summary>
    public static IReadOnlyList<AutomationRule> Defaults { get; } = BuildDefaults();

    private static AutomationRule[] BuildDefaults() =>
    [
        // Gmail: "421-4.7.28 ... unusual rate of unsolicited mail ... temporarily rate limited"
        // (https://support.google.com/mail/?p=UnsolicitedRateLimitError). Stop sending from that
        // IP to Gmail for a while rather than retrying into the limit.
        From(new AutomationRuleOptions { Name = "gmail-rate-limited", Code = 421, Enhanced = "4.7.28", Action = "suspend", Duration = "30m" }, "default automation", buildPatternNow: false),
        // "421 4.7.0 ... too many connections" (Postfix's anvil, Orange's OFR004_104 "Trop de
        // connexions", Microsoft's "exceeded the maximum number of connections"): one connection.
        From(new AutomationRuleOptions
        {
            Name = "too-many-connections", Code = 421,
            Text = @"too many (concurrent |simultaneous )?(connections|sessions)|trop de connexions|maximum number of connections|max concurrent connections",
            Action = "throttle", MaxConnections = 1, Duration = "30m",
        }, "default automation", buildPatternNow: false),
        // Yahoo/AOL: "421 4.7.0 [TS01] Messages from x temporarily deferred due to user complaints"
        // (TS01-TS05, TSS04/05, IPTS04/05); Yahoo asks for a retry four hours later
        // (https://help.yahoo.com/kb/SLN3434.html).
        From(new AutomationRuleOptions
        {
            Name = "yahoo-deferred", Code = 421, Text = @"\[(TSS?0[1-5]|IPTS0[45])\]",
            Action = "suspend", Duration = "4h",
        }, "default automation", buildPatternNow: false),
        // "too many messages ... in a short period" (GMX/web.de), "rate limited" (Microsoft, others).
        From(new AutomationRuleOptions
        {
            Name = "rate-limited", Code = 421,
            Text = @"(temporarily )?rate.limited|too many messages|sending rate|reduce the sending rate",
            Action = "throttle", MessagesPerMinute = 10, Duration = "30m",
        }, "default automation", buildPatternNow: false),
        // Microsoft: "451 4.7.500 Server busy. Please try again later from [x]" and 4.7.650-4.7.659.
        From(new AutomationRuleOptions
        {
            Name = "server-busy", Text = @"server busy\. please try again later|4\.7\.65\d",
            Action = "throttle", MessagesPerMinute = 6, MaxConnections = 2, Duration = "15m",
        }, "default automation", buildPatternNow: false),
    ];
}
