using System.Globalization;
using System.Runtime.InteropServices;
using NativeRelay.Telemetry;
using NativeRelay.Tools;

namespace NativeRelay.Cli;

/// <summary><c>nativerelay sink</c>: the counting SMTP server (see <see cref="SmtpSink"/>).</summary>
internal static class SinkCommand
{
    public static async Task<int> RunAsync(string[] args)
    {
        if (args.Any(a => a is "--help" or "-h"))
        {
            Console.Out.Write(SinkOptions.Usage);
            return 0;
        }
        var options = SinkOptions.Parse(args);
        using var log = new Log(Console.Error, LogLevel.Warn);
        var stop = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; stop.TrySetResult(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stop.TrySetResult(); });

        var sink = new SmtpSink(options, log);
        sink.Start();
        if (!options.Quiet)
        {
            Console.Out.WriteLine($"sink listening on {sink.EndPoint}");
            Console.Out.Flush();
        }

        var progress = options.Quiet || !ProgressDisplay.ErrorIsTerminal ? null
            : new ProgressDisplay(Console.Error, terminal: true, RunningCount(sink));
        try
        {
            var waits = new List<Task> { stop.Task, sink.ExitAfterReached };
            if (options.Timeout is { } timeout)
                waits.Add(Task.Delay(timeout));
            await Task.WhenAny(waits);
        }
        finally
        {
            if (progress is not null)
                await progress.DisposeAsync();
            await sink.StopAsync(TimeSpan.FromSeconds(2));
        }

        var summary = sink.Summarize();
        if (options.Json)
            summary.WriteJson(Console.OpenStandardOutput());
        else
            summary.WriteText(Console.Out);
        await sink.DisposeAsync();
        return 0;
    }

    // Rate over the last interval, so the line shows what is happening now.
    private static Func<bool, string> RunningCount(SmtpSink sink)
    {
        long lastCount = 0;
        var lastTime = DateTime.UtcNow;
        return _ =>
        {
            long count = sink.Messages;
            var now = DateTime.UtcNow;
            double rate = (count - lastCount) / Math.Max(0.001, (now - lastTime).TotalSeconds);
            lastCount = count;
            lastTime = now;
            return string.Create(CultureInfo.InvariantCulture,
                $"sink {sink.EndPoint}: {count} message(s), {sink.Bytes / 1e6:0.0} MB, {rate:0} msg/s now, {sink.ActiveConnections} connection(s)");
        };
    }
}
