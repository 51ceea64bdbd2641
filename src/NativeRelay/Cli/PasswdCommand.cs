using System.Text;
using NativeRelay.Config;
using NativeRelay.Smtp.Auth;

namespace NativeRelay.Cli;

/// <summary>
/// <c>nativerelay passwd USER [--file FILE] [--iterations N] [--delete]</c>: makes the line of the
/// users file for one user, <c>USER:$pbkdf2-sha256$ITERATIONS$SALT$HASH</c>. The password is read
/// from standard input: typed twice without echo on a terminal, or the first line of a pipe.
/// Without --file the line is printed; with --file the user's line is added or replaced (or, with
/// --delete, removed) and the file rewritten atomically with mode 0600. A running relay picks the
/// change up on SIGHUP or within reloadCheckSeconds.
/// </summary>
internal static class PasswdCommand
{
    public static Task<int> RunAsync(string[] args)
    {
        string? user = null;
        string? file = null;
        int iterations = PasswordHash.DefaultIterations;
        bool delete = false;
        for (int i = 0; i < args.Length; i++)
        {
            string arg = args[i];
            string? inline = null;
            if (arg.StartsWith("--", StringComparison.Ordinal) && arg.IndexOf('=') is int eq and > 0)
            {
                inline = arg[(eq + 1)..];
                arg = arg[..eq];
            }
            switch (arg)
            {
                case "--file":
                    file = inline ?? Next(args, ref i, arg);
                    break;
                case "--iterations":
                    var text = inline ?? Next(args, ref i, arg);
                    if (!int.TryParse(text, out iterations) || iterations < PasswordHash.MinIterations || iterations > PasswordHash.MaxIterations)
                        throw new ConfigException($"--iterations: a number from {PasswordHash.MinIterations} to {PasswordHash.MaxIterations}");
                    break;
                case "--delete":
                    delete = true;
                    break;
                case "--help":
                case "-h":
                    Console.Out.WriteLine("usage: nativerelay passwd USER [--file FILE] [--iterations N] [--delete]");
                    Console.Out.WriteLine("Reads the password from standard input and writes USER:HASH (PBKDF2-HMAC-SHA256, salted).");
                    Console.Out.WriteLine("With --file, adds or replaces the user's line in FILE (mode 0600); --delete removes it.");
                    return Task.FromResult(0);
                default:
                    if (arg.StartsWith("--", StringComparison.Ordinal))
                        throw new ConfigException($"unknown flag '{arg}' for passwd (try passwd --help)");
                    if (user is not null)
                        throw new ConfigException($"unexpected argument '{arg}': one user at a time");
                    user = arg;
                    break;
            }
        }
        if (user is null)
            throw new ConfigException("passwd needs a user name: nativerelay passwd USER [--file FILE]");
        if (!UserStore.IsValidName(user))
            throw new ConfigException($"user name '{user}' may not contain ':', white space or control characters");

        if (delete)
        {
            if (file is null)
                throw new ConfigException("--delete needs --file");
            if (!Rewrite(file, user, newLine: null))
                throw new ConfigException($"user {user} is not in {file}");
            Console.Error.WriteLine($"nativerelay: removed user {user} from {file}");
            return Task.FromResult(0);
        }

        var password = ReadPassword();
        var line = $"{user}:{PasswordHash.Create(password, iterations)}";
        if (file is null)
        {
            Console.Out.WriteLine(line);
            return Task.FromResult(0);
        }
        bool replaced = Rewrite(file, user, line);
        Console.Error.WriteLine($"nativerelay: {(replaced ? "changed the password of" : "added")} user {user} in {file}");
        return Task.FromResult(0);
    }

    private static string Next(string[] args, ref int i, string flag)
    {
        if (i + 1 >= args.Length)
            throw new ConfigException($"{flag} needs a value");
        return args[++i];
    }

    private static string ReadPassword()
    {
        string? password;
        if (Console.IsInputRedirected)
        {
            password = Console.In.ReadLine()?.TrimEnd('\r');
        }
        else
        {
            password = ReadHidden("Password: ");
            var again = ReadHidden("Again: ");
            if (password != again)
                throw new ConfigException("the two passwords differ");
        }
        if (string.IsNullOrEmpty(password))
            throw new ConfigException("the password is empty");
        return password;
    }

    private static string ReadHidden(string prompt)
    {
        Console.Error.Write(prompt);
        var text = new StringBuilder();
        while (true)
        {
            var key = Console.ReadKey(intercept: true);
            if (key.Key == ConsoleKey.Enter)
                break;
            if (key.Key == ConsoleKey.Backspace)
            {
                if (text.Length > 0)
                    text.Length--;
                continue;
            }
            if (!char.IsControl(key.KeyChar))
                text.Append(key.KeyChar);
        }
        Console.Error.WriteLine();
        return text.ToString();
    }

    /// <summary>Replaces (or with a null line removes) the user's line, or appends it; true if the user was there.</summary>
    private static bool Rewrite(string path, string user, string? newLine)
    {
        var lines = new List<string>();
        bool found = false;
        try
        {
            if (File.Exists(path))
            {
                foreach (var line in File.ReadAllLines(path))
                {
                    var trimmed = line.TrimStart();
                    int colon = trimmed.IndexOf(':');
                    bool isUser = !trimmed.StartsWith('#') && colon > 0
                                  && string.Equals(trimmed[..colon], user, StringComparison.OrdinalIgnoreCase);
                    if (!isUser)
                    {
                        lines.Add(line);
                        continue;
                    }
                    if (!found && newLine is not null)
                        lines.Add(newLine);
                    found = true;
                }
            }
            if (!found && newLine is not null)
                lines.Add(newLine);
            if (newLine is null && !found)
                return false;

            var full = Path.GetFullPath(path);
            var temp = Path.Combine(Path.GetDirectoryName(full)!, $".{Path.GetFileName(full)}.{Environment.ProcessId}.tmp");
            var options = new FileStreamOptions { Mode = FileMode.Create, Access = FileAccess.Write };
            if (!OperatingSystem.IsWindows())
                options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
            File.Delete(temp);
            using (var stream = new FileStream(temp, options))
            using (var writer = new StreamWriter(stream, new UTF8Encoding(false)))
            {
                foreach (var line in lines)
                    writer.Write(line + "\n");
                writer.Flush();
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, full, overwrite: true);
            return found;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"cannot write {path}: {e.Message}");
        }
    }
}
