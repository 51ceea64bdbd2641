using NativeRelay.Net;

namespace NativeRelay.Tests.Unit;

public sealed class SocketEngineTuningTests
{
    // The choice only: Apply itself is not called here, since setting the variable in the test
    // process could switch its socket engine (starting at that moment in a parallel test) to
    // inline completions. The end-to-end test counts the published binary's socket threads.
    [Theory]
    [InlineData(null, "1")]
    [InlineData("0", "0")]
    [InlineData("1", "1")]
    [InlineData("false", "false")]
    public void Turns_inline_completions_on_only_when_the_operator_did_not_choose(string? environment, string expected)
    {
        Assert.Equal(expected, SocketEngineTuning.InlineCompletionsSetting(environment));
    }
}
