namespace NativeRelay.Local;

/// <summary>Small helpers for the addresses of local delivery (lower-case "local@domain" strings).</summary>
public static class LocalAddress
{
    /// <summary>Splits at the last '@'. False when there is none.</summary>
    public static bool TrySplit(string address, out string local, out string domain)
    {
        int at = address.LastIndexOf('@');
        if (at < 0)
        {
            local = address;
            domain = "";
            return false;
        }
        local = address[..at];
        domain = address[(at + 1)..];
        return true;
    }

    /// <summary>The envelope bytes as a lower-case address (local parts are treated case-insensitively here).</summary>
    public static string Normalize(ReadOnlySpan<byte> address) =>
        System.Text.Encoding.UTF8.GetString(address).Trim().ToLowerInvariant();

    /// <summary>
    /// Whether a (lower-case) local part can name a mailbox directory: ASCII letters, digits and
    /// . _ - + =, at most 64 characters, not starting with a dot and without "..". Everything
    /// else (slashes, quotes, control characters, non-ASCII) is refused before it nears a path.
    /// </summary>
    public static bool IsSafeMailboxName(string name)
    {
        if (name.Length is 0 or > 64 || name[0] == '.' || name.Contains("..", StringComparison.Ordinal))
            return false;
        foreach (char c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' or '+' or '='))
                return false;
        return true;
    }
}
