using System.Buffers;
using System.Text;
using NativeRelay.MailAuth.Dmarc;
using NativeRelay.MailAuth.Spf;
using NativeRelay.Message;

namespace NativeRelay.MailAuth;

/// <summary>
/// The <c>Authentication-Results:</c> header field of RFC 8601: one field, named with this
/// relay's authserv-id, carrying the SPF, DKIM and DMARC results of a message
/// (<see cref="Build"/>); and the other half of section 5, finding fields that claim our
/// authserv-id but arrived with the message, so they can be removed before ours is added
/// (<see cref="FindOurs"/>).
/// </summary>
public static class AuthenticationResults
{
    /// <summary>RFC 5322 2.1.1: lines SHOULD stay within 78 characters; never more than 998.</summary>
    private const int FoldAt = 78;
    private const int MaxReason = 200;

    /// <summary>
    /// The header field, folded, ending with CRLF. <paramref name="spf"/> null: SPF was not
    /// checked; <paramref name="dkim"/> null: DKIM was not checked (empty: checked, no signature:
    /// <c>dkim=none</c>); <paramref name="dmarc"/> null: not checked. Nothing checked at all is
    /// <c>; none</c> (RFC 8601 2.2).
    /// </summary>
    public static byte[] Build(string authservId, SpfVerdict? spf, IReadOnlyList<DkimVerdict>? dkim, DmarcVerdict? dmarc)
    {
        var field = new Folder("Authentication-Results:");
        field.Add(Value(authservId) + (spf is null && dkim is null && dmarc is null ? "; none" : ";"));
        var results = new List<List<string>>();
        if (spf is not null)
        {
            var r = new List<string> { "spf=" + spf.ResultName };
            if (spf.Problem is not null)
                r.Add("reason=" + Quoted(Shorten(spf.Problem)));
            else if (spf.Mechanism is not null)
                r.Add(Comment("matched " + spf.Mechanism));
            r.Add(spf.Identity == "helo" ? "smtp.helo=" + PValue(spf.Domain) : "smtp.mailfrom=" + PValue(spf.Sender));
            results.Add(r);
        }
        if (dkim is not null)
        {
            if (dkim.Count == 0)
                results.Add(["dkim=none"]);
            foreach (var v in dkim)
            {
                var r = new List<string> { "dkim=" + Name(v.Result) };
                if (v.Reason is not null)
                    r.Add("reason=" + Quoted(Shorten(v.Reason)));
                if (v.Domain.Length > 0)
                    r.Add("header.d=" + PValue(v.Domain));
                if (v.Selector.Length > 0)
                    r.Add("header.s=" + Value(v.Selector));
                if (v.Algorithm.Length > 0)
                    r.Add("header.a=" + Value(v.Algorithm));
                if (v.SignaturePrefix.Length > 0)
                    r.Add("header.b=" + Value(v.SignaturePrefix));
                results.Add(r);
            }
        }
        if (dmarc is not null)
        {
            var r = new List<string> { "dmarc=" + dmarc.ResultName };
            if (dmarc.Record is not null)
            {
                var policy = new StringBuilder("p=").Append(DmarcRecord.Name(dmarc.Record.Policy));
                if (dmarc.Record.SubdomainPolicy is { } sp)
                    policy.Append(" sp=").Append(DmarcRecord.Name(sp));
                policy.Append(" dis=").Append(DmarcRecord.Name(dmarc.Disposition));
                r.Add(Comment(policy.ToString()));
            }
            if (dmarc.Problem is not null)
                r.Add("reason=" + Quoted(Shorten(dmarc.Problem)));
            if (dmarc.FromDomain is not null)
                r.Add("header.from=" + PValue(dmarc.FromDomain));
            results.Add(r);
        }
        for (int i = 0; i < results.Count; i++)
        {
            // Each result starts a line of its own; the ';' that separates it from the next ends it.
            field.Break();
            var parts = results[i];
            for (int j = 0; j < parts.Count; j++)
                field.Add(j == parts.Count - 1 && i < results.Count - 1 ? parts[j] + ";" : parts[j]);
        }
        return field.Finish();
    }

    public static string Name(DkimResult result) => result switch
    {
        DkimResult.None => "none",
        DkimResult.Pass => "pass",
        DkimResult.Fail => "fail",
        DkimResult.Neutral => "neutral",
        DkimResult.Policy => "policy",
        DkimResult.TempError => "temperror",
        _ => "permerror",
    };

    /// <summary>
    /// The fields named Authentication-Results whose authserv-id is <paramref name="authservId"/>
    /// (case-insensitive; comments, folding and a quoted form allowed), as byte ranges of the
    /// header section (whole fields, CRLF included) to drop. Fields of other authserv-ids stay.
    /// </summary>
    public static List<Range> FindOurs(ReadOnlySpan<byte> message, string authservId)
    {
        var drop = new List<Range>();
        var scanner = new HeaderScanner(message);
        while (scanner.TryReadNext(out var field))
        {
            if (!field.NameEquals(message, "Authentication-Results"u8))
                continue;
            if (TryReadAuthservId(field.RawValue(message), out string id) && id.Equals(authservId, StringComparison.OrdinalIgnoreCase))
                drop.Add(new Range(field.Start, field.End));
        }
        return drop;
    }

    /// <summary>Copies the message without the given ranges (ascending, as <see cref="FindOurs"/> returns them).</summary>
    public static void CopyWithout(ReadOnlySpan<byte> message, IReadOnlyList<Range> drop, IBufferWriter<byte> output)
    {
        int at = 0;
        foreach (var range in drop)
        {
            var (start, length) = range.GetOffsetAndLength(message.Length);
            output.Write(message[at..start]);
            at = start + length;
        }
        output.Write(message[at..]);
    }

    /// <summary>What a forged field is renamed to: as long as "Authentication-Results", so nothing moves.</summary>
    public static ReadOnlySpan<byte> RemovedFieldName => "X-Removed-Auth-Results"u8;

    /// <summary>
    /// The zero-copy alternative to removing them (RFC 8601 5 allows "delete or otherwise
    /// obscure"): renames each field in place to <c>X-Removed-Auth-Results</c>, a name of the same
    /// 22 bytes, so the message keeps its length and its pooled blocks need no moving.
    /// </summary>
    public static void ObscureInPlace(Span<byte> message, IReadOnlyList<Range> fields)
    {
        foreach (var range in fields)
            RemovedFieldName.CopyTo(message[range][.."Authentication-Results".Length]);
    }

    /// <summary>The authserv-id at the start of a field's value: CFWS, then a token or a quoted-string.</summary>
    public static bool TryReadAuthservId(ReadOnlySpan<byte> value, out string id)
    {
        id = "";
        int i = SkipCfws(value, 0);
        if (i >= value.Length)
            return false;
        if (value[i] == '"')
        {
            var text = new StringBuilder();
            for (i++; i < value.Length; i++)
            {
                byte b = value[i];
                if (b == '"')
                {
                    id = text.ToString();
                    return id.Length > 0;
                }
                if (b == '\\' && i + 1 < value.Length)
                    b = value[++i];
                if (b is not ((byte)'\r' or (byte)'\n'))
                    text.Append((char)b);
            }
            return false;
        }
        int start = i;
        while (i < value.Length && IsTokenByte(value[i]))
            i++;
        if (i == start)
            return false;
        id = Encoding.UTF8.GetString(value[start..i]);
        return true;
    }

    /// <summary>Skips white space, folding and (nested) comments.</summary>
    private static int SkipCfws(ReadOnlySpan<byte> value, int i)
    {
        int depth = 0;
        for (; i < value.Length; i++)
        {
            byte b = value[i];
            if (depth > 0)
            {
                if (b == '\\')
                    i++;
                else if (b == '(')
                    depth++;
                else if (b == ')')
                    depth--;
                continue;
            }
            if (b == '(')
                depth++;
            else if (b is not ((byte)' ' or (byte)'\t' or (byte)'\r' or (byte)'\n'))
                return i;
        }
        return i;
    }

    // RFC 2045 token: printable ASCII except SP and tspecials ()<>@,;:\"/[]?=
    private static bool IsTokenByte(byte b) => b is > 32 and < 127 && "()<>@,;:\\\"/[]?=".IndexOf((char)b) < 0;

    private static bool IsToken(string s)
    {
        if (s.Length == 0)
            return false;
        foreach (char c in s)
            if (c > 126 || !IsTokenByte((byte)c))
                return false;
        return true;
    }

    /// <summary>value = token / quoted-string (RFC 8601 2.2, RFC 2045 5.1).</summary>
    private static string Value(string s) => IsToken(s) ? s : Quoted(s);

    /// <summary>A pvalue: [[local-part] "@"] domain-name, or a value when it is not that simple.</summary>
    private static string PValue(string s)
    {
        int at = s.LastIndexOf('@');
        string local = at >= 0 ? s[..at] : "";
        string domain = at >= 0 ? s[(at + 1)..] : s;
        bool simpleDomain = domain.Length > 0 && domain.All(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '-' or '_');
        bool simpleLocal = local.All(c => c < 127 && (char.IsAsciiLetterOrDigit(c) || "!#$%&'*+-/=?^_`{|}~.".Contains(c)));
        return simpleDomain && simpleLocal ? s : Quoted(s, asciiOnly: false); // an SMTPUTF8 address stays as it is
    }

    /// <summary>A quoted-string; reasons quote DNS text, so anything but printable ASCII becomes '?'.</summary>
    private static string Quoted(string s, bool asciiOnly = true) => Enclose(s, '"', '"', "\"\\", asciiOnly);

    private static string Comment(string s) => Enclose(s, '(', ')', "()\\", asciiOnly: true);

    private static string Enclose(string s, char open, char close, string escaped, bool asciiOnly)
    {
        var text = new StringBuilder(s.Length + 2).Append(open);
        foreach (char c in s)
        {
            if (escaped.Contains(c))
                text.Append('\\');
            text.Append(c is '\r' or '\n' or '\t' ? ' ' : asciiOnly && c is < ' ' or > '~' ? '?' : c);
        }
        return text.Append(close).ToString();
    }

    private static string Shorten(string s) => s.Length <= MaxReason ? s : s[..MaxReason] + "...";

    /// <summary>Writes words separated by spaces, folding (CRLF TAB) before a word that would pass 78 columns.</summary>
    private sealed class Folder(string name)
    {
        private readonly StringBuilder _text = new(name);
        private int _lineLength = name.Length;

        /// <summary>
        /// Adds a word after a space. A word with spaces inside (a quoted reason, a comment) may
        /// fold at them too: CRLF goes in before the space, so unfolding gives the same text.
        /// </summary>
        public void Add(string word)
        {
            int space = word.IndexOf(' ');
            string first = space < 0 ? word : word[..space];
            if (_lineLength > 1 && _lineLength + 1 + first.Length > FoldAt)
                Break();
            if (_lineLength > 1)
            {
                _text.Append(' ');
                _lineLength++;
            }
            _text.Append(first);
            _lineLength += first.Length;
            while (space >= 0)
            {
                int next = word.IndexOf(' ', space + 1);
                var piece = next < 0 ? word.AsSpan(space + 1) : word.AsSpan(space + 1, next - space - 1);
                if (_lineLength + 1 + piece.Length > FoldAt)
                {
                    _text.Append("\r\n");
                    _lineLength = 0;
                }
                _text.Append(' ').Append(piece);
                _lineLength += 1 + piece.Length;
                space = next;
            }
        }

        /// <summary>Ends the line; the next word starts a folded line.</summary>
        public void Break()
        {
            _text.Append("\r\n\t");
            _lineLength = 1;
        }

        public byte[] Finish() => Encoding.UTF8.GetBytes(_text.Append("\r\n").ToString());
    }
}
