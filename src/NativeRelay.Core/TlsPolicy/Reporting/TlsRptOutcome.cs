using NativeRelay.Routing;

namespace NativeRelay.TlsPolicies.Reporting;

/// <summary>
/// What one delivery connection means for TLS-RPT (RFC 8460 4.3): a session that was set up, or
/// one a policy refused, counted under the route's policy domain with the policy that applied
/// (sts: the MTA-STS policy's lines and mx patterns; tlsa: the usable TLSA records; otherwise
/// no-policy-found). Called only for routes that carry a policy domain.
/// </summary>
public static class TlsRptOutcome
{
    /// <summary>A session that connected: success, or (testing mode, no policy) the failure it would have been.</summary>
    public static void Connected(TlsRptRecorder recorder, Route route, PeerCertificateCheck check, string host, string ip, bool encrypted)
    {
        string? failure = null;
        if (!encrypted)
            failure = TlsFailureType.StarttlsNotSupported;
        else if (check.StsMxMismatch)
            failure = TlsFailureType.ValidationFailure;
        else if ((check.Sts is not null || check.Dane is not null) && check.Checked && check.Problem != CertificateProblem.None)
            failure = TlsFailureType.For(check.Problem);
        Record(recorder, route, check, failure, host, ip);
    }

    /// <summary>A session a policy refused (before or during the handshake).</summary>
    public static void Refused(TlsRptRecorder recorder, Route route, PeerCertificateCheck? check, string resultType, string host, string ip) =>
        Record(recorder, route, check, resultType, host, ip);

    private static void Record(TlsRptRecorder recorder, Route route, PeerCertificateCheck? check, string? failure, string host, string ip)
    {
        string domain = route.PolicyDomain!;
        string type = check?.ReportPolicyType ?? "no-policy-found";
        string[] strings = [], mx = [];
        if (check?.Sts is { } sts)
        {
            strings = sts.Policy.Lines;
            mx = [.. sts.Policy.Mx];
        }
        else if (check?.Dane is { } dane)
        {
            strings = Array.ConvertAll(dane, r => $"{r.Usage} {r.Selector} {r.MatchingType} {Convert.ToHexString(r.Data)}");
        }
        string? address = ip.Length == 0 ? null : System.Net.IPEndPoint.TryParse(ip, out var endPoint) ? endPoint.Address.ToString() : ip;
        recorder.Record(domain, route.TlsRptRecord, type, strings, mx, failure, host, address);
        // A policy fetch that failed is a failure of its own, counted beside the session.
        if (check?.StsFetchFailureType is { } fetch)
            recorder.Record(domain, route.TlsRptRecord, "sts", [], [], fetch, null, null);
    }
}
