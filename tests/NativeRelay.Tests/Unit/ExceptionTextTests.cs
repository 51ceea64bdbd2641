using System.Net.Sockets;
using NativeRelay.Telemetry;

namespace NativeRelay.Tests.Unit;

/// <summary>A catch-all's log line: operational failures by their message, anything else with its type and stack.</summary>
public sealed class ExceptionTextTests
{
    private static Exception Thrown(Exception e)
    {
        try
        {
            throw e;
        }
        catch (Exception caught)
        {
            return caught;
        }
    }

    [Fact]
    public void Operational_failures_are_told_by_type_and_message_only()
    {
        var disk = Thrown(new IOException("No space left on device"));
        var peer = Thrown(new SocketException((int)SocketError.ConnectionReset));

        Assert.Equal("IOException: No space left on device", ExceptionText.Of(disk));
        Assert.StartsWith("SocketException: ", ExceptionText.Of(peer));
        Assert.DoesNotContain(" at ", ExceptionText.Of(disk));
    }

    [Fact]
    public void Anything_else_carries_its_type_stack_and_inner_exception()
    {
        var bug = Thrown(new InvalidOperationException("the queue is in a state nobody planned for", new KeyNotFoundException("id 42")));

        string text = ExceptionText.Of(bug);

        Assert.StartsWith("System.InvalidOperationException: the queue is in a state nobody planned for", text);
        Assert.Contains("System.Collections.Generic.KeyNotFoundException: id 42", text);
        Assert.Contains($" at {typeof(ExceptionTextTests).FullName}.{nameof(Thrown)}", text);
    }
}
