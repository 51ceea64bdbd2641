using NativeRelay.Net;

namespace NativeRelay.Tests.Unit;

public sealed class SocketEngineTuningTests
{
    [Fact]
    public void Turns_inline_completions_on_only_when_the_operator_did_not_choose()
    {
        string? before = Environment.GetEnvironmentVariable(SocketEngineTuning.InlineCompletionsVariable);
        try
        {
            Environment.SetEnvironmentVariable(SocketEngineTuning.InlineCompletionsVariable, null);
            SocketEngineTuning.Apply();
            Assert.Equal("1", Environment.GetEnvironmentVariable(SocketEngineTuning.InlineCompletionsVariable));

            Environment.SetEnvironmentVariable(SocketEngineTuning.InlineCompletionsVariable, "0");
            SocketEngineTuning.Apply();
            Assert.Equal("0", Environment.GetEnvironmentVariable(SocketEngineTuning.InlineCompletionsVariable));
        }
        finally
        {
            Environment.SetEnvironmentVariable(SocketEngineTuning.InlineCompletionsVariable, before);
        }
    }
}
