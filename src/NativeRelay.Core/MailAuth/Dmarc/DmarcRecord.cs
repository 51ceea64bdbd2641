using System.Globalization;

namespace NativeRelay.MailAuth.Dmarc;

/// <summary>A domain owner's requested handling of mail that fails DMARC (RFC 7489 6.3, p/sp/np).</summary>
public enum DmarcPolicy : byte
{
    None,
    Quarantine,
    Reject,
}

/// <summary>
/// A parsed DMARC policy record (RFC 7489 6.3 and 6.4, np from RFC 9091): a tag-value list that
/// starts with <c>v=DMARC1</c>. Unknown tags are ignored. A record without a valid <c>p</c> is
/// read as <c>p=none</c> when it has a <c>rua</c> (RFC 7489 6.6.3), otherwise it is not a valid
/// record; an invalid <c>sp</c>/<c>np</c>/<c>adkim</c>/<c>aspf</c>/<c>pct</c> value is replaced by
/// its default, as a receiver must still apply what it can.
/// </summary>
public sealed record DmarcRecord(
    DmarcPolicy Policy,
    DmarcPolicy? SubdomainPolicy,
    DmarcPolicy? NonexistentPolicy,
    bool StrictDkim,
    bool StrictSpf,
    int Percent,
    IReadOnlyList<string> AggregateReportUris,
    IReadOnlyList<string> FailureReportUris,
    string FailureOptions,
    int ReportInterval)
{
    /// <summary>Whether a TXT record is a DMARC record at all: "v" first, "DMARC1" (RFC 7489 6.6.3 step 3).</summary>
    public static bool IsDmarcRecord(string text)
    {
        var span = text.AsSpan().TrimStart();
        if (!span.StartsWith("v"))
            return false;
        span = span[1..].TrimStart(" \t");
        if (!span.StartsWith("="))
            return false;
        span = span[1..].TrimStart(" \t");
        if (!span.StartsWith("DMARC1"))
            return false;
        span = span[6..].TrimStart(" \t");
        return span.IsEmpty || span[0] == ';';
    }

    /// <summary>Parses a record that <see cref="IsDmarcRecord"/> accepted; false when it has to be discarded.</summary>
    public static bool TryParse(string text, out DmarcRecord record, out string? error)
    {
        record = null!;
        error = null;
        if (!IsDmarcRecord(text))
        {
            error = "not a DMARC record (v=DMARC1 must come first)";
            return false;
        }
        DmarcPolicy? p = null, sp = null, np = null;
        bool pSeen = false, strictDkim = false, strictSpf = false;
        int pct = 100, ri = 86400;
        List<string> rua = [], ruf = [];
        string fo = "0";
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var part in text.Split(';'))
        {
            int eq = part.IndexOf('=');
            if (eq < 0)
            {
                if (part.Trim(" \t\r\n".ToCharArray()).Length == 0)
                    continue;
                error = $"'{part.Trim()}' is not tag=value";
                return false;
            }
            string tag = part[..eq].Trim(" \t\r\n".ToCharArray());
            string value = part[(eq + 1)..].Trim(" \t\r\n".ToCharArray());
            if (!seen.Add(tag))
                continue; // a repeated tag: the first one counts
            switch (tag)
            {
                case "p":
                    pSeen = true;
                    p = ParsePolicy(value);
                    break;
                case "sp":
                    sp = ParsePolicy(value);
                    break;
                case "np":
                    np = ParsePolicy(value);
                    break;
                case "adkim":
                    strictDkim = value.Equals("s", StringComparison.OrdinalIgnoreCase);
                    break;
                case "aspf":
                    strictSpf = value.Equals("s", StringComparison.OrdinalIgnoreCase);
                    break;
                case "pct":
                    if (int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int percent) && percent <= 100)
                        pct = percent;
                    break;
                case "ri":
                    if (int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out int interval))
                        ri = interval;
                    break;
                case "rua":
                    rua = Uris(value);
                    break;
                case "ruf":
                    ruf = Uris(value);
                    break;
                case "fo":
                    fo = value;
                    break;
            }
        }
        if (p is null)
        {
            if (rua.Count == 0)
            {
                error = pSeen ? "p is not none, quarantine or reject" : "no p tag";
                return false;
            }
            p = DmarcPolicy.None;
        }
        record = new DmarcRecord(p.Value, sp, np, strictDkim, strictSpf, pct, rua, ruf, fo, ri);
        return true;
    }

    private static DmarcPolicy? ParsePolicy(string value) => value.ToLowerInvariant() switch
    {
        "none" => DmarcPolicy.None,
        "quarantine" => DmarcPolicy.Quarantine,
        "reject" => DmarcPolicy.Reject,
        _ => null,
    };

    private static List<string> Uris(string value)
    {
        var uris = new List<string>();
        foreach (var uri in value.Split(','))
        {
            string trimmed = uri.Trim();
            if (trimmed.Contains(':'))
                uris.Add(trimmed);
        }
        return uris;
    }

    public static string Name(DmarcPolicy policy) => policy switch
    {
        DmarcPolicy.Quarantine => "quarantine",
        DmarcPolicy.Reject => "reject",
        _ => "none",
    };
}
