using System.CommandLine;
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
    private static readonly Argument<string> User = Flags.Argument("USER", "the user name (no ':', white space or control characters)", static (_, text) => text);

    private static readonly Option<string> File = Flags.Text("--file", "FILE",
        "add or replace the user's line in FILE (rewritten atomically, mode 0600)", "print the line");

    private static readonly Option<int> Iterations = Flags.Value("--iterations", "N", "PBKDF2 iterations",
        static (flag, text) => FlagValues.Int(flag, text, PasswordHash.MinIterations, PasswordHash.MaxIterations), PasswordHash.DefaultIterations);

    private static readonly Option<bool> Delete = Flags.Switch("--delete", "remove the user's line from --file");

    public static Command Build()
    {
        var command = new VerbCommand("passwd", "Make (or, with --file, add, replace or --delete) a user's line of the users file for AUTH.",
            """
            The line is USER:$pbkdf2-sha256$ITERATIONS$SALT$HASH (PBKDF2-HMAC-SHA256,
            salted). The password is read from standard input: typed twice without echo on a terminal, or the
            first line of a pipe. A running relay picks a changed file up on SIGHUP or within reloadCheckSeconds.
            """)
        {
            User, File, Iterations, Delete,
        };
        command.SetAction(result => Run(result.GetValue(User)!, result.ValueOrNull(File),
            result.ValueOr(Iterations, PasswordHash.DefaultIterations), result.GetValue(Delete)));
        return command;
    }

    private static int Run(string user, string? file, int iterations, bool delete)
    {
        if (!UserStore.IsValidName(user))
            throw new ConfigException($"user name '{user}' may not contain ':', white space or control characters");

        if (!delete)
            NativeRelay.Net.OpenSslLibrary.Require("passwd"); // PBKDF2-HMAC-SHA256
        if (delete)
        {
            if (file is null)
                throw new ConfigException("--delete needs --file");
            if (!Rewrite(file, user, newLine: null))
                throw new ConfigException($"user {user} is not in {file}");
            Console.Error.WriteLine($"nativerelay: removed user {user} from {file}");
            return 0;
        }

        var password = ReadPassword();
        var line = $"{user}:{PasswordHash.Create(password, iterations)}";
        if (file is null)
        {
            Console.Out.WriteLine(line);
            return 0;
        }
        bool replaced = Rewrite(file, user, line);
        Console.Error.WriteLine($"nativerelay: {(replaced ? "changed the password of" : "added")} user {user} in {file}");
        return 0;
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

    /// <summary>
    /// Replaces (or with a null line removes) the line of NAME (the text before its first ':'), or
    /// appends it, rewriting the file atomically with mode 0600; true if the name was there.
    /// Shared by the users file and the tokens file (TokenCommand), which are both NAME:... lines.
    /// </summary>
    internal static bool Rewrite(string path, string user, string? newLine)
    {
        var lines = new List<string>();
        bool found = false;
        try
        {
            if (System.IO.File.Exists(path))
            {
                foreach (var line in System.IO.File.ReadAllLines(path))
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
            System.IO.File.Delete(temp);
            using (var stream = new FileStream(temp, options))
            using (var writer = new StreamWriter(stream, new UTF8Encoding(false)))
            {
                foreach (var line in lines)
                    writer.Write(line + "\n");
                writer.Flush();
                stream.Flush(flushToDisk: true);
            }
            System.IO.File.Move(temp, full, overwrite: true);
            return found;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"cannot write {path}: {NativeRelay.Telemetry.ExceptionText.Reason(e)}");
        }
    }
}
