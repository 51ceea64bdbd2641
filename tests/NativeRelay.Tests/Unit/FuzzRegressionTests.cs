using NativeRelay.Fuzz;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// Replays every committed fuzz input through its target (tests/NativeRelay.Fuzz/Targets.cs):
/// the seed corpora, and each past finding (findings/TARGET/), which once crashed, hung or let an
/// undocumented exception escape a parser. A target returns normally on every input it accepts or
/// refuses; anything thrown fails here.
/// </summary>
public class FuzzRegressionTests
{
    private static readonly string Root = Path.Combine(AppContext.BaseDirectory, "FuzzInputs");

    public static TheoryData<string, string> Inputs()
    {
        var data = new TheoryData<string, string>();
        foreach (var kind in new[] { "corpus", "findings" })
        {
            var dir = Path.Combine(Root, kind);
            if (!Directory.Exists(dir))
                continue;
            foreach (var targetDir in Directory.GetDirectories(dir).Order(StringComparer.Ordinal))
                foreach (var file in Directory.GetFiles(targetDir).Order(StringComparer.Ordinal))
                    data.Add(Path.GetFileName(targetDir), Path.GetRelativePath(Root, file));
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Inputs))]
    public async Task Input_is_handled_without_an_escaping_exception(string target, string file)
    {
        Assert.True(Targets.All.TryGetValue(target, out var run), $"no fuzz target '{target}' for {file}");
        var input = File.ReadAllBytes(Path.Combine(Root, file));
        // A hang is a finding too: no single input may take seconds.
        await Task.Run(() => run!(input)).WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public void Every_target_has_a_seed_corpus()
    {
        foreach (var target in Targets.All.Keys)
            Assert.True(Directory.Exists(Path.Combine(Root, "corpus", target)) &&
                        Directory.GetFiles(Path.Combine(Root, "corpus", target)).Length > 0, $"{target} has no seeds");
    }
}
