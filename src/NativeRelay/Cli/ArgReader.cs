using NativeRelay.Config;

namespace NativeRelay.Cli;

/// <summary>Walks "--flag value" pairs; every mistake is a one-line <see cref="ConfigException"/>.</summary>
internal sealed class ArgReader(string[] args)
{
    private int _next;

    public bool TryNextFlag(out string flag)
    {
        if (_next >= args.Length)
        {
            flag = "";
            return false;
        }
        flag = args[_next++];
        if (!flag.StartsWith("--", StringComparison.Ordinal))
            throw new ConfigException($"unexpected argument '{flag}'");
        // Accept --flag=value as well as --flag value.
        int eq = flag.IndexOf('=');
        if (eq > 0)
        {
            _pendingValue = flag[(eq + 1)..];
            flag = flag[..eq];
        }
        return true;
    }

    private string? _pendingValue;

    public string Value(string flag)
    {
        if (_pendingValue is not null)
        {
            var v = _pendingValue;
            _pendingValue = null;
            return v;
        }
        if (_next >= args.Length || args[_next].StartsWith("--", StringComparison.Ordinal))
            throw new ConfigException($"{flag} needs a value");
        return args[_next++];
    }

    public void NoValue(string flag)
    {
        if (_pendingValue is not null)
            throw new ConfigException($"{flag} takes no value");
    }
}
