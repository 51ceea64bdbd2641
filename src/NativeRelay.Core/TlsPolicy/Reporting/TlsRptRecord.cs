namespace NativeRelay.TlsPolicies.Reporting;

/// <summary>
/// The "_smtp._tls.DOMAIN" TXT record (RFC 8460 3): "v=TLSRPTv1; rua=URI[,URI...]" where each URI
/// is mailto: or https:, with optional extension fields. Strict: a record that does not parse, or
/// more than one TLSRPTv1 record, means the domain asks for no reports.
/// </summary>
public sealed class TlsRptRecord
{
    private static readonly char[] Wsp = [' ', '\t'];

    private TlsRptRecord(IReadOnlyList<Uri> rua) => Rua = rua;

    /// <summary>Where reports go: mailto: and https: URIs, in the record's order.</summary>
    public IReadOnlyList<Uri> Rua { get; }

    /// <summary>The one valid TLSRPTv1 record among a name's TXT records, as text, or null.</summary>
    public static string? FromTxt(IReadOnlyList<string> records)
    {
        string? found = null;
        int candidates = 0;
        foreach (var text in records)
        {
            if (!text.StartsWith("v=TLSRPTv1", StringComparison.Ordinal))
                continue;
            candidates++;
            found = TryParse(text, out _) is null ? null : text;
        }
        return candidates == 1 ? found : null;
    }

    public static TlsRptRecord? TryParse(string text, out string? error)
    {
        error = null;
        const string Version = "v=TLSRPTv1";
        if (!text.StartsWith(Version, StringComparison.Ordinal))
            return Fail(out error, "the record does not start with v=TLSRPTv1");
        List<Uri>? rua = null;
        var fields = text[Version.Length..].Split(';');
        if (fields[0].Trim(Wsp).Length != 0)
            return Fail(out error, "expected ';' after the version");
        for (int f = 1; f < fields.Length; f++)
        {
            var field = fields[f].Trim(Wsp);
            if (field.Length == 0)
            {
                if (f == fields.Length - 1)
                    break; // the optional trailing delimiter
                return Fail(out error, "an empty field");
            }
            int eq = field.IndexOf('=');
            if (eq <= 0)
                return Fail(out error, $"field '{field}' has no '='");
            var name = field[..eq];
            var value = field[(eq + 1)..];
            if (name == "rua")
            {
                if (rua is not null)
                    return Fail(out error, "rua appears twice");
                rua = [];
                foreach (var item in value.Split(','))
                {
                    var uriText = item.Trim(Wsp);
                    if (!Uri.TryCreate(uriText, UriKind.Absolute, out var uri)
                        || !(uri.Scheme == "mailto" && uriText.Contains('@') || uri.Scheme == Uri.UriSchemeHttps))
                        return Fail(out error, $"rua '{uriText}' is not a mailto: or https: URI");
                    rua.Add(uri);
                }
            }
            else if (!NativeRelay.TlsPolicies.MtaSts.MtaStsRecord.IsExtensionName(name) || value.Length == 0
                     || value.AsSpan().IndexOfAnyExceptInRange('!', '~') >= 0 || value.Contains('='))
                return Fail(out error, $"'{field}' is not a field");
        }
        if (rua is null || rua.Count == 0)
            return Fail(out error, "no rua");
        return new TlsRptRecord(rua);
    }

    private static TlsRptRecord? Fail(out string? error, string why)
    {
        error = why;
        return null;
    }
}
