namespace NativeRelay.Config;

/// <summary>A configuration or command-line error: its message is one line an operator can act on.</summary>
public sealed class ConfigException(string message) : Exception(message);
