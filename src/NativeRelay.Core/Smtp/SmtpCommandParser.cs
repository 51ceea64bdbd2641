using System.Buffers.Binary;
using System.Runtime.CompilerServices;

namespace NativeRelay.Smtp;

/// <summary>
/// Splits one SMTP command line into its verb and argument (RFC 5321 4.1.1: <c>verb [SP argument] CRLF</c>).
/// </summary>
/// <remarks>
/// Semantics callers rely on:
/// <list type="bullet">
/// <item>The line is given WITHOUT its line ending (see <see cref="CommandLineReader"/>).</item>
/// <item>Trailing SP and HTAB are trimmed from the whole line first, so "QUIT\t" and "NOOP   " are recognised
///   and an argument never ends in white space.</item>
/// <item>The verb ends at the first SP only (the grammar's separator). A verb followed by HTAB and more text
///   ("MAIL\tFROM:&lt;a&gt;") is one unknown word, as is a verb glued to other characters ("MAILX").</item>
/// <item>The argument is everything after that single SP. Extra spaces are kept ("MAIL  FROM:" gives
///   " FROM:"), so the argument parsers decide how tolerant to be.</item>
/// <item>Verb matching is ASCII case-insensitive. Nothing is allocated.</item>
/// </list>
/// </remarks>
public static class SmtpCommandParser
{
    private const byte Space = (byte)' ';
    private const byte Tab = (byte)'\t';

    // Every verb is made only of letters, so OR-ing each byte with 0x20 folds upper to lower case and can
    // never turn a non-letter into a letter: x | 0x20 lands in 'a'..'z' only when x was already a letter.
    // That lets a whole verb be compared as one integer instead of byte by byte.
    private const uint LowerCaseMask4 = 0x20202020u;
    private const ulong LowerCaseMask8 = 0x2020202020202020ul;

    private const uint Helo = 'h' | ('e' << 8) | ('l' << 16) | ((uint)'o' << 24);
    private const uint Ehlo = 'e' | ('h' << 8) | ('l' << 16) | ((uint)'o' << 24);
    private const uint Mail = 'm' | ('a' << 8) | ('i' << 16) | ((uint)'l' << 24);
    private const uint Rcpt = 'r' | ('c' << 8) | ('p' << 16) | ((uint)'t' << 24);
    private const uint Data = 'd' | ('a' << 8) | ('t' << 16) | ((uint)'a' << 24);
    private const uint Bdat = 'b' | ('d' << 8) | ('a' << 16) | ((uint)'t' << 24);
    private const uint Rset = 'r' | ('s' << 8) | ('e' << 16) | ((uint)'t' << 24);
    private const uint Noop = 'n' | ('o' << 8) | ('o' << 16) | ((uint)'p' << 24);
    private const uint Quit = 'q' | ('u' << 8) | ('i' << 16) | ((uint)'t' << 24);
    private const uint Vrfy = 'v' | ('r' << 8) | ('f' << 16) | ((uint)'y' << 24);
    private const uint Expn = 'e' | ('x' << 8) | ('p' << 16) | ((uint)'n' << 24);
    private const uint Help = 'h' | ('e' << 8) | ('l' << 16) | ((uint)'p' << 24);
    private const uint Auth = 'a' | ('u' << 8) | ('t' << 16) | ((uint)'h' << 24);

    private const ulong StartTls = Starttls0To3 | ((ulong)Starttls4To7 << 32);
    private const uint Starttls0To3 = 's' | ('t' << 8) | ('a' << 16) | ((uint)'r' << 24);
    private const uint Starttls4To7 = 't' | ('t' << 8) | ('l' << 16) | ((uint)'s' << 24);

    /// <summary>Recognises the verb of <paramref name="line"/> and returns the argument that follows it.</summary>
    /// <param name="line">One command line without its CRLF.</param>
    /// <param name="argument">Text after the single SP that ends the verb, trailing SP/HTAB trimmed; empty if none.
    /// Set even when the verb is <see cref="SmtpVerb.Unknown"/>.</param>
    public static SmtpVerb Parse(ReadOnlySpan<byte> line, out ReadOnlySpan<byte> argument)
    {
        line = TrimTrailingWhiteSpace(line);

        int space = line.IndexOf(Space);
        ReadOnlySpan<byte> verb;
        if (space < 0)
        {
            verb = line;
            argument = default;
        }
        else
        {
            verb = line[..space];
            argument = line[(space + 1)..];
        }

        return MatchVerb(verb);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ReadOnlySpan<byte> TrimTrailingWhiteSpace(ReadOnlySpan<byte> line)
    {
        int end = line.Length;
        while (end > 0 && (line[end - 1] == Space || line[end - 1] == Tab))
        {
            end--;
        }

        return line[..end];
    }

    private static SmtpVerb MatchVerb(ReadOnlySpan<byte> verb)
    {
        if (verb.Length == 4)
        {
            return (BinaryPrimitives.ReadUInt32LittleEndian(verb) | LowerCaseMask4) switch
            {
                Helo => SmtpVerb.Helo,
                Ehlo => SmtpVerb.Ehlo,
                Mail => SmtpVerb.Mail,
                Rcpt => SmtpVerb.Rcpt,
                Data => SmtpVerb.Data,
                Bdat => SmtpVerb.Bdat,
                Rset => SmtpVerb.Rset,
                Noop => SmtpVerb.Noop,
                Quit => SmtpVerb.Quit,
                Vrfy => SmtpVerb.Vrfy,
                Expn => SmtpVerb.Expn,
                Help => SmtpVerb.Help,
                Auth => SmtpVerb.Auth,
                _ => SmtpVerb.Unknown,
            };
        }

        if (verb.Length == 8 && (BinaryPrimitives.ReadUInt64LittleEndian(verb) | LowerCaseMask8) == StartTls)
        {
            return SmtpVerb.StartTls;
        }

        return SmtpVerb.Unknown;
    }
}
