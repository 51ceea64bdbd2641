using System.Runtime.InteropServices;
using NativeRelay.Config;
using NativeRelay.Hosting;
using NativeRelay.Telemetry;

namespace NativeRelay.Cli;

/// <summary><c>nativerelay serve</c>: runs the relay until SIGTERM or SIGINT.</summary>
internal static class ServeCommand
{
    public static async Task<int> RunAsync(string[] args)
    {
        var settings = BuildSettings(args);
        using var log = new Log(Console.OpenStandardOutput(), settings.Lifecycle.LogLevel, settings.Lifecycle.LogFormat);
        await using var metrics = MetricsServer.StartConfigured(settings, log);
        // SIGHUP reads the file and applies the flags again, exactly as at start (and as check-config does).
        var host = new RelayHost(settings, log, reloadSource: () => BuildSettings(args, checkFiles: true));
        var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.TrySetResult(); });
        using var interrupt = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.TrySetResult(); });

        try
        {
            await host.StartAsync();
        }
        catch (ConfigException)
        {
            await host.DisposeAsync();
            throw;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            log.Dispose();
            await host.DisposeAsync();
            throw new ConfigException($"cannot open the spool {settings.SpoolDirectory}: {e.Message}");
        }
        log.Flush();

        await stop.Task;
        // shutdown.drainSeconds of the configuration in force (a reload may have changed it).
        var drain = TimeSpan.FromSeconds(host.Settings.Lifecycle.DrainSeconds);
        log.Info($"stopping: no new connections, finishing transactions in progress (up to {drain.TotalSeconds:0} s)");
        await host.StopAsync(drain);
        log.Flush();
        return 0;
    }

    /// <summary>Defaults, then the config file, then flags (flags win).</summary>
    /// <param name="checkFiles">Also check that the files the configuration names exist, as check-config does (the reload path).</param>
    internal static RelaySettings BuildSettings(string[] args, bool checkFiles = false)
    {
        string? configFile = null;
        // First pass: find --config so the file is the base the other flags override.
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--config" && i + 1 < args.Length)
                configFile = args[i + 1];
            else if (args[i].StartsWith("--config=", StringComparison.Ordinal))
                configFile = args[i]["--config=".Length..];
        }
        var options = configFile is null ? new RelayOptions() : RelaySettings.LoadFile(configFile);

        List<string>? listen = null;
        List<string>? dns = null;
        List<string>? localDomains = null;
        string? maildirRoot = null;
        var reader = new ArgReader(args);
        while (reader.TryNextFlag(out var flag))
        {
            switch (flag)
            {
                case "--config":
                    reader.Value(flag);
                    break;
                case "--listen":
                    (listen ??= new()).Add(reader.Value(flag));
                    break;
                case "--spool":
                    options.Spool = reader.Value(flag);
                    break;
                case "--hostname":
                    options.Hostname = reader.Value(flag);
                    break;
                case "--relay-to":
                    options.RelayTo = reader.Value(flag);
                    break;
                case "--dns":
                    (dns ??= new()).Add(reader.Value(flag));
                    break;
                case "--remote-port":
                    var portText = reader.Value(flag);
                    if (!int.TryParse(portText, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int remotePort))
                        throw new ConfigException($"--remote-port: '{portText}' is not a port number");
                    options.Routing.RemotePort = remotePort;
                    break;
                case "--tls-cert":
                    options.Tls.Certificate = reader.Value(flag);
                    break;
                case "--tls-key":
                    options.Tls.Key = reader.Value(flag);
                    break;
                case "--listen-tls":
                    options.Listeners.Add(new ListenerOptions { Address = reader.Value(flag), Kind = "implicit-tls" });
                    break;
                case "--submission":
                    options.Listeners.Add(new ListenerOptions { Address = reader.Value(flag), Kind = "submission" });
                    break;
                case "--users":
                    options.UsersFile = reader.Value(flag);
                    break;
                case "--local-domain":
                    (localDomains ??= new()).Add(reader.Value(flag));
                    break;
                case "--maildir-root":
                    maildirRoot = reader.Value(flag);
                    break;
                case "--metrics":
                    options.Metrics.Listen = reader.Value(flag);
                    break;
                case "--log-format":
                    options.Log.Format = reader.Value(flag);
                    break;
                case "--log-level":
                    options.Log.Level = reader.Value(flag);
                    break;
                case "--drain-seconds":
                    var drainText = reader.Value(flag);
                    if (!int.TryParse(drainText, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int drain))
                        throw new ConfigException($"--drain-seconds: '{drainText}' is not a number of seconds");
                    options.Shutdown.DrainSeconds = drain;
                    break;
                case "--user":
                    options.User = reader.Value(flag);
                    break;
                case "--dkim":
                    options.Dkim.Keys.Add(DkimCommand.ParseKeyFlag(reader.Value(flag)));
                    break;
                default:
                    throw new ConfigException($"unknown flag '{flag}' for serve (try --help)");
            }
        }
        if (listen is not null)
            options.Listen = listen;
        if (dns is not null)
            options.Routing.Dns = dns;
        NativeRelay.Local.LocalDeliverySettings.ApplyFlags(options, localDomains, maildirRoot);
        var settings = RelaySettings.Validate(options);
        if (checkFiles)
            CheckConfigCommand.CheckFiles(settings);
        return settings;
    }
}
