using System.Net.Sockets;
using NativeRelay.Config;

namespace NativeRelay.Telemetry;

/// <summary>
/// How an exception caught by a catch-all appears in a log line. The failures a relay meets in
/// operation (a disk that is full or failing, a peer that went away, a timeout, a bad
/// configuration, damaged spool data) are told by their message: the operator needs what
/// happened, not where. Anything else is a bug or a case nobody foresaw, and its line carries the
/// exception's type and stack (and inner exceptions), once, so it can be found and fixed.
/// </summary>
public static class ExceptionText
{
    public static string Of(Exception e) => IsOperational(e) ? $"{e.GetType().Name}: {e.Message}" : e.ToString();

    /// <summary>
    /// Why a file could not be read or written, in words. The native binary is built with
    /// UseSystemResourceKeys (smaller), so the runtime's own messages are resource keys
    /// ("IO_FileNotFound_FileName, /etc/x"): the common cases are said here instead; messages
    /// that come from the operating system (strerror: "No space left on device") pass through.
    /// </summary>
    public static string Reason(Exception e) => e switch
    {
        FileNotFoundException => "no such file",
        DirectoryNotFoundException => "no such directory",
        UnauthorizedAccessException => "permission denied",
        PathTooLongException => "the path is too long",
        _ => e.Message,
    };

    /// <summary>The failures of the world outside the process, which a message describes fully.</summary>
    public static bool IsOperational(Exception e) => e is IOException or SocketException or TimeoutException
        or UnauthorizedAccessException or ConfigException or InvalidDataException or OperationCanceledException
        or System.Security.Authentication.AuthenticationException;
}
