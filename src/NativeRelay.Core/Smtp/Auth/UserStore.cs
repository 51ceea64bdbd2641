using System.Security.Cryptography;
using System.Text;
using NativeRelay.Config;
using NativeRelay.Policy;

namespace NativeRelay.Smtp.Auth;

/// <summary>
/// The users of AUTH, read from the password file: one <c>NAME:$pbkdf2-sha256$N$SALT$HASH</c>
/// line per user (written by <c>nativerelay passwd</c>), <c>#</c> comments and blank lines
/// ignored. Names are matched case-insensitively; passwords exactly.
/// </summary>
/// <remarks>
/// <para>Checking a password costs one PBKDF2 run (about 0.1 s), done on the thread pool with at
/// most one check per core at a time so a flood of AUTH attempts cannot starve the sessions. A
/// name that is not in the file costs the same as a wrong password (a dummy hash is checked), so
/// timing does not tell which users exist.</para>
/// <para>After a successful check the user's entry remembers an HMAC of the password under a key
/// that lives only in this process; the next login of that user with the same password is then
/// one HMAC instead of a PBKDF2 run (a bulk sender that authenticates per connection stays
/// cheap). A failed check always pays the full PBKDF2.</para>
/// <para>The file is re-read on SIGHUP and when it changes; a file with errors keeps the previous
/// users and logs why.</para>
/// </remarks>
public sealed class UserStore
{
    private static readonly byte[] CacheKey = RandomNumberGenerator.GetBytes(32);

    private readonly string _path;
    private readonly SemaphoreSlim _cpu = new(Math.Max(1, Environment.ProcessorCount));
    private volatile Snapshot _users;
    private FileStamp _stamp;

    private UserStore(string path, Snapshot users, FileStamp stamp)
    {
        _path = path;
        _users = users;
        _stamp = stamp;
    }

    public string Path => _path;

    public int Count => _users.Entries.Count;

    /// <summary>Reads the file; any problem is a one-line <see cref="ConfigException"/>.</summary>
    public static UserStore Load(string path)
    {
        var users = Read(path, out var stamp);
        return new UserStore(path, users, stamp);
    }

    /// <summary>An in-memory store (tests).</summary>
    public static UserStore FromLines(IEnumerable<string> lines) =>
        new("(memory)", Parse(lines, "(memory)"), default);

    /// <summary>Re-reads the file if it changed (or when forced). Returns a line for the log, or null.</summary>
    public string? Reload(bool force)
    {
        var stamp = FileStamp.Of(_path);
        if (!force && stamp == _stamp)
            return null;
        try
        {
            _users = Read(_path, out var read);
            _stamp = read;
            return $"reloaded users from {_path}: {Count} user(s)";
        }
        catch (ConfigException e)
        {
            _stamp = stamp;
            return $"keeping the previous users: {e.Message}";
        }
    }

    /// <summary>
    /// Checks a name and password. Returns the user's name as written in the file, or null.
    /// </summary>
    public async ValueTask<string?> VerifyAsync(byte[] user, byte[] password)
    {
        var users = _users;
        string name;
        try
        {
            name = new UTF8Encoding(false, true).GetString(user);
        }
        catch (DecoderFallbackException)
        {
            name = "";
        }
        users.Entries.TryGetValue(name, out var entry);

        if (entry?.CachedMac is { } cached)
        {
            Span<byte> mac = stackalloc byte[32];
            HMACSHA256.HashData(CacheKey, password, mac);
            if (CryptographicOperations.FixedTimeEquals(mac, cached))
                return entry.Name;
        }

        await _cpu.WaitAsync().ConfigureAwait(false);
        bool ok;
        try
        {
            var hash = entry?.Hash ?? users.Dummy;
            ok = await Task.Run(() => hash.Verify(password)).ConfigureAwait(false);
        }
        finally
        {
            _cpu.Release();
        }
        if (!ok || entry is null)
            return null;
        var remember = new byte[32];
        HMACSHA256.HashData(CacheKey, password, remember);
        entry.CachedMac = remember;
        return entry.Name;
    }

    private sealed class Entry(string name, PasswordHash.Parsed hash)
    {
        public string Name { get; } = name;
        public PasswordHash.Parsed Hash { get; } = hash;
        public volatile byte[]? CachedMac;
    }

    private sealed class Snapshot(Dictionary<string, Entry> entries, PasswordHash.Parsed dummy)
    {
        public Dictionary<string, Entry> Entries { get; } = entries;
        /// <summary>Checked for unknown names, with the iterations of a real entry so both cost the same.</summary>
        public PasswordHash.Parsed Dummy { get; } = dummy;
    }

    private static Snapshot Read(string path, out FileStamp stamp)
    {
        string[] lines;
        try
        {
            stamp = FileStamp.Of(path);
            lines = File.ReadAllLines(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"cannot read the users file {path}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
        return Parse(lines, path);
    }

    private static Snapshot Parse(IEnumerable<string> lines, string path)
    {
        var entries = new Dictionary<string, Entry>(StringComparer.OrdinalIgnoreCase);
        int number = 0;
        int iterations = PasswordHash.DefaultIterations;
        foreach (var raw in lines)
        {
            number++;
            var line = raw.Trim();
            if (line.Length == 0 || line[0] == '#')
                continue;
            int colon = line.IndexOf(':');
            if (colon <= 0)
                throw new ConfigException($"{path} line {number}: expected NAME:HASH (make one with `nativerelay passwd NAME`)");
            var name = line[..colon];
            if (!IsValidName(name))
                throw new ConfigException($"{path} line {number}: user name '{name}' has white space or control characters");
            if (!PasswordHash.TryParse(line[(colon + 1)..], out var hash, out var error))
                throw new ConfigException($"{path} line {number} (user {name}): {error}");
            if (!entries.TryAdd(name, new Entry(name, hash!)))
                throw new ConfigException($"{path} line {number}: user {name} is listed twice");
            if (entries.Count == 1)
                iterations = hash!.Iterations;
        }
        PasswordHash.TryParse(PasswordHash.Create(RandomNumberGenerator.GetBytes(16), iterations), out var dummy, out _);
        return new Snapshot(entries, dummy!);
    }

    /// <summary>A user name may hold anything but ':', white space and control characters.</summary>
    public static bool IsValidName(string name) =>
        name.Length is > 0 and <= 256 && !name.Any(c => c == ':' || char.IsWhiteSpace(c) || char.IsControl(c));
}
