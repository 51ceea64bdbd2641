using System.Text;
using System.Text.Json;

namespace NativeRelay.TlsPolicies.Reporting;

/// <summary>One failure line of a report: a result type (RFC 8460 4.3) at one MX host and address.</summary>
public readonly record struct TlsRptFailureKey(string ResultType, string? ReceivingMx, string? ReceivingIp)
{
    /// <summary>The key's RFC 8460 4.4 fields, as the counts file and the report both write them.</summary>
    public void WriteFields(System.Text.Json.Utf8JsonWriter w)
    {
        w.WriteString("result-type", ResultType);
        if (ReceivingMx is not null)
            w.WriteString("receiving-mx-hostname", ReceivingMx);
        if (ReceivingIp is not null)
            w.WriteString("receiving-ip", ReceivingIp);
    }
}

/// <summary>The sessions of one day under one policy of one domain (RFC 8460 4.4 "policies" entry).</summary>
public sealed class TlsRptPolicyCounts
{
    /// <summary>"sts", "tlsa" or "no-policy-found".</summary>
    public required string PolicyType { get; init; }
    public string[] PolicyString { get; set; } = [];
    public string[] MxHost { get; set; } = [];
    public long Successes { get; set; }
    public Dictionary<TlsRptFailureKey, long> Failures { get; } = new();
    public long FailureTotal => Failures.Values.Sum();
}

/// <summary>
/// The TLS outcomes of one UTC day for one policy domain, as kept in SPOOL/tls-rpt/DATE/DOMAIN.json
/// until the day's report is sent: the domain's "_smtp._tls" record as last seen, and the counts
/// per policy. Read and written with System.Text.Json's reader and writer (no reflection).
/// </summary>
public sealed class TlsRptDay
{
    public required string Date { get; init; }
    public required string Domain { get; init; }
    public string? Record { get; set; }
    public Dictionary<string, TlsRptPolicyCounts> Policies { get; } = new(StringComparer.Ordinal);

    public DateTimeOffset Start => DateTimeOffset.ParseExact(Date, "yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture,
        System.Globalization.DateTimeStyles.AssumeUniversal);

    public byte[] ToJson()
    {
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("date", Date);
            w.WriteString("domain", Domain);
            if (Record is not null)
                w.WriteString("record", Record);
            w.WriteStartArray("policies");
            foreach (var p in Policies.Values)
            {
                w.WriteStartObject();
                w.WriteString("policy-type", p.PolicyType);
                WriteStrings(w, "policy-string", p.PolicyString);
                WriteStrings(w, "mx-host", p.MxHost);
                w.WriteNumber("successes", p.Successes);
                w.WriteStartArray("failures");
                foreach (var (key, count) in p.Failures)
                {
                    w.WriteStartObject();
                    key.WriteFields(w);
                    w.WriteNumber("count", count);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return buffer.ToArray();
    }

    private static void WriteStrings(Utf8JsonWriter w, string name, string[] values)
    {
        w.WriteStartArray(name);
        foreach (var v in values)
            w.WriteStringValue(v);
        w.WriteEndArray();
    }

    /// <summary>Reads a day file; null when it does not parse (a damaged file is reported by the caller, never trusted).</summary>
    public static TlsRptDay? FromJson(ReadOnlySpan<byte> json)
    {
        try
        {
            using var doc = JsonDocument.Parse(json.ToArray());
            var root = doc.RootElement;
            var day = new TlsRptDay
            {
                Date = root.GetProperty("date").GetString()!,
                Domain = root.GetProperty("domain").GetString()!,
                Record = root.TryGetProperty("record", out var record) ? record.GetString() : null,
            };
            foreach (var p in root.GetProperty("policies").EnumerateArray())
            {
                var counts = new TlsRptPolicyCounts
                {
                    PolicyType = p.GetProperty("policy-type").GetString()!,
                    PolicyString = Strings(p.GetProperty("policy-string")),
                    MxHost = Strings(p.GetProperty("mx-host")),
                    Successes = p.GetProperty("successes").GetInt64(),
                };
                foreach (var f in p.GetProperty("failures").EnumerateArray())
                {
                    var key = new TlsRptFailureKey(f.GetProperty("result-type").GetString()!,
                        f.TryGetProperty("receiving-mx-hostname", out var mx) ? mx.GetString() : null,
                        f.TryGetProperty("receiving-ip", out var ip) ? ip.GetString() : null);
                    counts.Failures[key] = f.GetProperty("count").GetInt64();
                }
                day.Policies[counts.PolicyType] = counts;
            }
            _ = day.Start; // the date must parse
            return day;
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException or ArgumentException)
        {
            return null;
        }
    }

    private static string[] Strings(JsonElement array)
    {
        var list = new List<string>();
        foreach (var e in array.EnumerateArray())
            list.Add(e.GetString()!);
        return [.. list];
    }

    public override string ToString() => Encoding.UTF8.GetString(ToJson());
}
