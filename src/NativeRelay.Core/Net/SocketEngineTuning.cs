namespace NativeRelay.Net;

/// <summary>
/// How .NET's socket engine hands us completed socket operations, chosen once per process.
///
/// By default the runtime's epoll thread queues every completion to the thread pool, and a pool
/// thread then runs the continuation. For SMTP that is a thread hop per command: a message from
/// smtp-source is four round trips in and two out, and on a small (often paravirtualised) machine
/// the wake-ups cost more than the protocol work. With inline completions the runtime runs one
/// epoll thread per core and runs our continuations on it: a command is read, parsed and answered
/// on the thread that saw the socket become readable (run to completion, as in Garnet or
/// Kestrel's inline mode). Measured on the 2-core machine, together with the thread pool's spin
/// limit of 0: 308-386 -> 225-240 µs of relay CPU per relayed 1 KiB message, 2,800-3,300 ->
/// 4,100-4,400 messages per second end to end (perf/RESULTS.md).
///
/// The price is that a continuation must never block: one that did would stall every socket of
/// its epoll thread. Protocol code here only awaits (no sync socket calls, no .Result on I/O);
/// disk commits complete on the pool and delivery loops keep their own threads.
/// </summary>
public static class SocketEngineTuning
{
    /// <summary>The runtime's switch; an operator may set it to 0 to get the thread-pool dispatch back.</summary>
    public const string InlineCompletionsVariable = "DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS";

    /// <summary>
    /// Turns inline completions on unless the environment already says otherwise. Must run before
    /// the process creates its first socket: the runtime reads the variable once, when its socket
    /// engine starts.
    /// </summary>
    public static void Apply()
    {
        string? chosen = Environment.GetEnvironmentVariable(InlineCompletionsVariable);
        string wanted = InlineCompletionsSetting(chosen);
        if (chosen != wanted)
            Environment.SetEnvironmentVariable(InlineCompletionsVariable, wanted);
    }

    /// <summary>
    /// The value the switch should have, given what the environment says: the operator's choice
    /// if there is one, otherwise on. (Kept apart from <see cref="Apply"/> so tests need not touch
    /// their own process's environment, where a socket engine starting at that moment would
    /// pick the switch up.)
    /// </summary>
    internal static string InlineCompletionsSetting(string? environment) => environment ?? "1";
}
