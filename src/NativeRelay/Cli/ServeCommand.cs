using System.Runtime.InteropServices;
using NativeRelay.Config;
using NativeRelay.Hosting;
using NativeRelay.Telemetry;

namespace NativeRelay.Cli;

/// <summary><c>nativerelay serve</c>: runs the relay until SIGTERM or SIGINT.</summary>
internal static class ServeCommand
{
    // Long enough for a slow client to finish a DATA in progress, short enough for systemd.
    private static readonly TimeSpan DrainDeadline = TimeSpan.FromSeconds(30);

    public static async Task<int> RunAsync(string[] args)
    {
        var settings = BuildSettings(args);
        using var log = new Log(Console.Out);
        await using var metrics = MetricsServer.StartConfigured(settings, log);
        var host = new RelayHost(settings, log);
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
        log.Info("stopping: no new connections, finishing transactions in progress");
        await host.StopAsync(DrainDeadline);
        log.Flush();
        return 0;
    }

    /// <summary>Defaults, then the config file, then flags (flags win).</summary>
    internal static RelaySettings BuildSettings(string[] args)
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
                default:
                    throw new ConfigException($"unknown flag '{flag}' for serve (try --help)");
            }
        }
        if (listen is not null)
            options.Listen = listen;
        if (dns is not null)
            options.Routing.Dns = dns;
        NativeRelay.Local.LocalDeliverySettings.ApplyFlags(options, localDomains, maildirRoot);
        return RelaySettings.Validate(options);
    }
}
