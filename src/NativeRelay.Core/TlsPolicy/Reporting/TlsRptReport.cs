using System.Globalization;
using System.IO.Compression;
using System.Text.Json;

namespace NativeRelay.TlsPolicies.Reporting;

/// <summary>
/// The aggregate report of one day for one policy domain (RFC 8460 4.4): organization-name,
/// date-range (the UTC day), contact-info, report-id, and one "policies" entry per policy seen
/// (policy-type sts, tlsa or no-policy-found; policy-string; policy-domain; mx-host), each with
/// its summary (total-successful-session-count, total-failure-session-count) and failure-details
/// (result-type, receiving-mx-hostname, receiving-ip, failed-session-count). Written with
/// Utf8JsonWriter (the RFC's member names are hyphenated; no reflection), gzip-compressed (4.4,
/// 5.3: application/tlsrpt+gzip) with System.IO.Compression.
/// </summary>
public static class TlsRptReport
{
    public static string ReportId(TlsRptDay day, string submitter) =>
        $"{day.Date}T00:00:00Z_{day.Domain}@{submitter}";

    public static byte[] Json(TlsRptDay day, string organization, string contact, string reportId)
    {
        var start = day.Start;
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("organization-name", organization);
            w.WriteStartObject("date-range");
            w.WriteString("start-datetime", Time(start));
            w.WriteString("end-datetime", Time(start.AddDays(1).AddSeconds(-1)));
            w.WriteEndObject();
            w.WriteString("contact-info", contact);
            w.WriteString("report-id", reportId);
            w.WriteStartArray("policies");
            foreach (var p in day.Policies.Values.OrderBy(p => p.PolicyType, StringComparer.Ordinal))
            {
                w.WriteStartObject();
                w.WriteStartObject("policy");
                w.WriteString("policy-type", p.PolicyType);
                if (p.PolicyType != "no-policy-found")
                {
                    w.WriteStartArray("policy-string");
                    foreach (var line in p.PolicyString)
                        w.WriteStringValue(line);
                    w.WriteEndArray();
                }
                w.WriteString("policy-domain", day.Domain);
                if (p.MxHost.Length > 0)
                {
                    w.WriteStartArray("mx-host");
                    foreach (var mx in p.MxHost)
                        w.WriteStringValue(mx);
                    w.WriteEndArray();
                }
                w.WriteEndObject();
                w.WriteStartObject("summary");
                w.WriteNumber("total-successful-session-count", p.Successes);
                w.WriteNumber("total-failure-session-count", p.FailureTotal);
                w.WriteEndObject();
                if (p.Failures.Count > 0)
                {
                    w.WriteStartArray("failure-details");
                    foreach (var (key, count) in p.Failures.OrderBy(f => f.Key.ResultType, StringComparer.Ordinal))
                    {
                        w.WriteStartObject();
                        key.WriteFields(w);
                        w.WriteNumber("failed-session-count", count);
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return buffer.ToArray();
    }

    public static byte[] Gzip(byte[] json)
    {
        var buffer = new MemoryStream();
        using (var gzip = new GZipStream(buffer, CompressionLevel.Optimal, leaveOpen: true))
            gzip.Write(json);
        return buffer.ToArray();
    }

    /// <summary>RFC 8460 5.3: "submitter!policy-domain!begin-timestamp!end-timestamp.json.gz" (timestamps in seconds since the epoch).</summary>
    public static string FileName(TlsRptDay day, string submitter)
    {
        long begin = day.Start.ToUnixTimeSeconds();
        long end = day.Start.AddDays(1).AddSeconds(-1).ToUnixTimeSeconds();
        return $"{submitter}!{day.Domain}!{begin.ToString(CultureInfo.InvariantCulture)}!{end.ToString(CultureInfo.InvariantCulture)}.json.gz";
    }

    private static string Time(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);
}
