namespace NativeRelay.Spool;

/// <summary>
/// The spool cannot take a new message because the disk it lives on is (nearly) full. A receiving
/// session answers <c>452 4.3.1</c>; nothing was acknowledged, so the client keeps the message.
/// </summary>
public sealed class SpoolFullException(string message) : IOException(message);

/// <summary>
/// The spool cannot write right now for another reason (a device error; the log is being
/// reopened). A receiving session answers <c>451</c>; a delivery retries later.
/// </summary>
public sealed class SpoolUnavailableException(string message, Exception? inner = null) : IOException(message, inner);
