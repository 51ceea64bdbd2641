using NativeRelay.Fuzz;
using SharpFuzz;

// Usage: NativeRelay.Fuzz TARGET            run under afl-fuzz (perf/fuzz.sh starts it so)
//        NativeRelay.Fuzz TARGET FILE...    run each file once, outside AFL (to reproduce a finding;
//                                           an uninstrumented build: dotnet run -c Release -- TARGET FILE)
//        NativeRelay.Fuzz --list            the target names
if (args.Length == 0 || args[0] == "--list")
{
    foreach (var name in Targets.All.Keys)
        Console.WriteLine(name);
    return args.Length == 0 ? 2 : 0;
}
if (!Targets.All.TryGetValue(args[0], out var target))
{
    Console.Error.WriteLine($"unknown target '{args[0]}'; --list shows them");
    return 2;
}
if (args.Length > 1)
{
    foreach (var file in args[1..])
    {
        target(File.ReadAllBytes(file));
        Console.WriteLine($"{file}: ok");
    }
    return 0;
}
Fuzzer.OutOfProcess.Run((Stream input) =>
{
    using var copy = new MemoryStream();
    input.CopyTo(copy);
    target(copy.ToArray());
});
return 0;
