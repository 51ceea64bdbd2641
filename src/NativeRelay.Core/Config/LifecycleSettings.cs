using NativeRelay.Telemetry;

namespace NativeRelay.Config;

/// <summary>
/// The validated lifecycle options: the log's level and format, the SIGTERM drain time, and the
/// unprivileged user to run as after the ports are bound.
/// </summary>
public sealed record LifecycleSettings(LogLevel LogLevel, LogFormat LogFormat, int DrainSeconds, string? User)
{
    public static LifecycleSettings Default { get; } = new(LogLevel.Info, LogFormat.Text, 30, null);

    public static LifecycleSettings Validate(RelayOptions o)
    {
        if (!TryParseLevel(o.Log.Level, out var level))
            throw new ConfigException($"log.level: '{o.Log.Level}' is not one of debug, info, warn, error");
        if (!TryParseFormat(o.Log.Format, out var format))
            throw new ConfigException($"log.format: '{o.Log.Format}' is not one of text, json");
        if (o.Shutdown.DrainSeconds is < 0 or > 3600)
            throw new ConfigException($"shutdown.drainSeconds: 0 to 3600 (got {o.Shutdown.DrainSeconds})");
        string? user = null;
        if (o.User is not null)
        {
            user = o.User.Trim();
            if (user.Length == 0 || user.Length > 64 || user.Any(c => c is ':' or '/' || char.IsWhiteSpace(c) || char.IsControl(c)))
                throw new ConfigException($"user: '{o.User}' is not a user name");
        }
        return new LifecycleSettings(level, format, o.Shutdown.DrainSeconds, user);
    }

    public static bool TryParseLevel(string? text, out LogLevel level)
    {
        switch (text?.Trim().ToLowerInvariant())
        {
            case "debug": level = LogLevel.Debug; return true;
            case "info": level = LogLevel.Info; return true;
            case "warn" or "warning": level = LogLevel.Warn; return true;
            case "error": level = LogLevel.Error; return true;
            default: level = LogLevel.Info; return false;
        }
    }

    public static bool TryParseFormat(string? text, out LogFormat format)
    {
        switch (text?.Trim().ToLowerInvariant())
        {
            case "text": format = LogFormat.Text; return true;
            case "json": format = LogFormat.Json; return true;
            default: format = LogFormat.Text; return false;
        }
    }
}
