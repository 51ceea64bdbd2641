using System.Runtime.InteropServices;
using NativeRelay.Tools;

namespace NativeRelay.Cli;

/// <summary><c>nativerelay bench</c>: blaster, relay and sink in one process (see <see cref="BenchRunner"/>).</summary>
internal static class BenchCommand
{
    public static async Task<int> RunAsync(string[] args)
    {
        if (args.Any(a => a is "--help" or "-h"))
        {
            Console.Out.Write(BenchOptions.Usage);
            return 0;
        }
        var options = BenchOptions.Parse(args);
        using var interrupt = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; interrupt.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; interrupt.Cancel(); });

        var result = await BenchRunner.RunAsync(options, Console.Error, ProgressDisplay.ErrorIsTerminal, interrupt.Token);
        if (options.Json)
            result.WriteJson(Console.OpenStandardOutput());
        else
            result.WriteText(Console.Out);
        return result.Success ? 0 : 1;
    }
}
