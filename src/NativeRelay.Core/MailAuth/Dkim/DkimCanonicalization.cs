using System.Buffers;
using System.Security.Cryptography;

namespace NativeRelay.MailAuth.Dkim;

/// <summary>The two canonicalization algorithms of RFC 6376 3.4, for the header (c= before the slash) or the body.</summary>
public enum DkimCanonicalization : byte
{
    Simple,
    Relaxed,
}

/// <summary>
/// RFC 6376 3.4: the one canonicalization code that signing and verifying share. Header fields
/// are canonicalized one at a time into a hash; the body goes through <see cref="DkimBodyHasher"/>
/// in pieces (the pooled blocks of a message, or one span), so nothing is copied to canonicalize.
/// </summary>
public static class DkimCanonicalizer
{
    private static readonly SearchValues<byte> Whitespace = SearchValues.Create(" \t\r\n"u8);

    /// <summary>
    /// Hashes one header field (its name through the CRLF that ends it, folding included; or, for
    /// the DKIM-Signature being checked, without the final CRLF). Simple: the bytes as they are.
    /// Relaxed (3.4.2): name lower-cased, unfolded, runs of white space made one SP, white space at
    /// the ends of the value and around the colon removed, then CRLF (when <paramref name="withCrlf"/>).
    /// </summary>
    public static void HashHeader(ReadOnlySpan<byte> field, DkimCanonicalization mode, IncrementalHash hash, bool withCrlf = true)
    {
        if (mode == DkimCanonicalization.Simple)
        {
            if (!withCrlf && field.EndsWith("\r\n"u8))
                field = field[..^2];
            hash.AppendData(field);
            if (withCrlf && !field.EndsWith("\r\n"u8))
                hash.AppendData("\r\n"u8);
            return;
        }
        Span<byte> scratch = stackalloc byte[512];
        int n = 0;
        int colon = field.IndexOf((byte)':');
        if (colon < 0)
            colon = field.Length;
        // The name: lower case, without white space before the colon.
        var name = field[..colon].TrimEnd(" \t"u8);
        foreach (byte b in name)
        {
            if (n == scratch.Length)
                Flush(hash, scratch, ref n);
            scratch[n++] = b is >= (byte)'A' and <= (byte)'Z' ? (byte)(b | 0x20) : b;
        }
        if (n == scratch.Length)
            Flush(hash, scratch, ref n);
        scratch[n++] = (byte)':';
        if (colon < field.Length)
        {
            var value = field[(colon + 1)..];
            bool pendingSpace = false;
            bool any = false;
            while (!value.IsEmpty)
            {
                int i = value.IndexOfAny(Whitespace);
                var run = i < 0 ? value : value[..i];
                if (!run.IsEmpty)
                {
                    if (pendingSpace && any)
                    {
                        if (n == scratch.Length)
                            Flush(hash, scratch, ref n);
                        scratch[n++] = (byte)' ';
                    }
                    pendingSpace = false;
                    any = true;
                    while (!run.IsEmpty)
                    {
                        if (n == scratch.Length)
                            Flush(hash, scratch, ref n);
                        int k = Math.Min(run.Length, scratch.Length - n);
                        run[..k].CopyTo(scratch[n..]);
                        n += k;
                        run = run[k..];
                    }
                }
                if (i < 0)
                    break;
                // CR and LF are removed (unfolding); SP and HTAB become one SP before the next text.
                if (value[i] is (byte)' ' or (byte)'\t')
                    pendingSpace = true;
                value = value[(i + 1)..];
            }
        }
        if (withCrlf)
        {
            if (n + 2 > scratch.Length)
                Flush(hash, scratch, ref n);
            scratch[n++] = (byte)'\r';
            scratch[n++] = (byte)'\n';
        }
        Flush(hash, scratch, ref n);
    }

    private static void Flush(IncrementalHash hash, Span<byte> scratch, ref int n)
    {
        hash.AppendData(scratch[..n]);
        n = 0;
    }

    /// <summary>Parses "relaxed/simple" (a missing body part means simple, RFC 6376 3.5 c=).</summary>
    public static bool TryParse(ReadOnlySpan<char> text, out DkimCanonicalization header, out DkimCanonicalization body)
    {
        header = body = DkimCanonicalization.Simple;
        int slash = text.IndexOf('/');
        var h = (slash < 0 ? text : text[..slash]).Trim();
        var b = slash < 0 ? "simple" : text[(slash + 1)..].Trim();
        return TryParseOne(h, out header) && TryParseOne(b, out body);
    }

    private static bool TryParseOne(ReadOnlySpan<char> text, out DkimCanonicalization mode)
    {
        if (text.Equals("simple", StringComparison.OrdinalIgnoreCase))
        {
            mode = DkimCanonicalization.Simple;
            return true;
        }
        mode = DkimCanonicalization.Relaxed;
        return text.Equals("relaxed", StringComparison.OrdinalIgnoreCase);
    }

    public static string Name(DkimCanonicalization mode) => mode == DkimCanonicalization.Simple ? "simple" : "relaxed";
}
