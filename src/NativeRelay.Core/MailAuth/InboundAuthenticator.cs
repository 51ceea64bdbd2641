using System.Net;
using NativeRelay.Config;
using NativeRelay.MailAuth.Dmarc;
using NativeRelay.MailAuth.Spf;
using NativeRelay.Routing;

namespace NativeRelay.MailAuth;

/// <summary>What the session does with a message (or a MAIL command) once it is authenticated.</summary>
public enum InboundAction : byte
{
    /// <summary>Take it (with the Authentication-Results header).</summary>
    Accept,
    /// <summary>Take it, annotated, marked as quarantined (DMARC quarantine) for routing.</summary>
    Quarantine,
    /// <summary>Refuse it with <see cref="InboundDecision.Reply"/> (always 5xx: only policy refuses, never a DNS failure).</summary>
    Reject,
}

/// <summary>The decision and, for a refusal, the whole SMTP reply line without CRLF ("550 5.7.1 ...").</summary>
public readonly record struct InboundDecision(InboundAction Action, string? Reply)
{
    public static InboundDecision Accept { get; } = new(InboundAction.Accept, null);
}

/// <summary>
/// Everything the end of data needs: the verdicts, the Authentication-Results field to add
/// above the message (bytes ending with CRLF), the fields that claim our authserv-id and must
/// be removed from the message first (byte ranges of its header section, RFC 8601 5), and the
/// decision.
/// </summary>
public sealed record InboundAuthResult(
    SpfVerdict Spf,
    IReadOnlyList<DkimVerdict>? Dkim,
    DmarcVerdict Dmarc,
    byte[] Header,
    IReadOnlyList<Range> ForgedHeaders,
    InboundDecision Decision);

/// <summary>
/// The inbound mail-authentication stage: SPF at MAIL (<see cref="CheckSpfAsync"/>, optionally
/// refusing a <c>fail</c>), then at the end of data DKIM (through the <see cref="IDkimVerifier"/>,
/// if any), DMARC and the Authentication-Results header (<see cref="CheckMessageAsync"/>).
/// All DNS goes through one <see cref="MailAuthDns"/> cache; every call is asynchronous and
/// bounded by <c>inboundAuth.timeoutSeconds</c>, past which the missing results are temperrors.
/// A temperror never refuses anything. One instance serves the whole relay (thread-safe).
/// </summary>
public sealed class InboundAuthenticator
{
    private readonly InboundAuthSettings _settings;
    private readonly IDkimVerifier? _dkim;
    private readonly SpfEvaluator _spf;
    private readonly DmarcEvaluator _dmarc;

    /// <param name="settings">The validated <c>inboundAuth</c> options.</param>
    /// <param name="dns">The relay's resolver; answers are cached here (wrap it in nothing).</param>
    /// <param name="dkim">The DKIM verifier, or null when DKIM is not checked.</param>
    /// <param name="hostname">This relay's name (the %{r} macro of SPF explanations).</param>
    /// <param name="dmarcSample">pct sampling, 0 to 99 per message (tests fix it); default random.</param>
    public InboundAuthenticator(InboundAuthSettings settings, IDnsResolver dns, IDkimVerifier? dkim, string hostname, Func<int>? dmarcSample = null)
    {
        _settings = settings;
        _dkim = dkim;
        var cached = dns as MailAuthDns ?? new MailAuthDns(dns, settings.DnsCacheSize);
        _spf = new SpfEvaluator(cached, hostname);
        _dmarc = new DmarcEvaluator(cached, settings.PublicSuffixList, dmarcSample);
    }

    public InboundAuthSettings Settings => _settings;

    /// <summary>
    /// Who is checked (the session asks before MAIL): only clients of a listener whose mode is not
    /// off, that are neither in relayNetworks nor authenticated.
    /// </summary>
    public static bool AppliesTo(InboundAuthMode mode, bool inRelayNetworks, bool authenticated) =>
        mode != InboundAuthMode.Off && !inRelayNetworks && !authenticated;

    /// <summary>
    /// SPF of the MAIL FROM (or, for a null sender, the HELO name), run at MAIL. Keep the verdict
    /// for <see cref="CheckMessageAsync"/>, which then does not ask again.
    /// </summary>
    public async Task<SpfVerdict> CheckSpfAsync(IPAddress client, string? mailFrom, string helo, CancellationToken cancel)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        timeout.CancelAfter(_settings.Timeout);
        var verdict = await _spf.CheckAsync(client, mailFrom, helo, timeout.Token).ConfigureAwait(false);
        cancel.ThrowIfCancellationRequested();
        return verdict;
    }

    /// <summary>
    /// The reply to MAIL given its SPF verdict: under enforce with <c>spfRejectFailAtMail</c>, a
    /// <c>fail</c> is refused with 550 5.7.1 (RFC 7208 8.4, with the domain's explanation when it
    /// gave one); everything else, temperror included, is accepted.
    /// </summary>
    public InboundDecision DecideAtMail(InboundAuthMode mode, SpfVerdict spf)
    {
        if (mode != InboundAuthMode.Enforce || !_settings.SpfRejectFailAtMail || spf.Result != SpfResult.Fail)
            return InboundDecision.Accept;
        string text = spf.Explanation is { Length: > 0 } explanation
            ? OneLine(explanation)
            : $"SPF: {spf.Domain} does not designate this host as a permitted sender";
        return new InboundDecision(InboundAction.Reject, "550 5.7.1 " + text);
    }

    /// <summary>
    /// The end-of-data check of a whole message (header section and body as received, CRLF line
    /// ends): DKIM, DMARC against the SPF verdict from MAIL (checked here if
    /// <paramref name="spfAtMail"/> is null), the Authentication-Results field, the forged fields
    /// to remove and the decision for <paramref name="mode"/>.
    /// </summary>
    public async Task<InboundAuthResult> CheckMessageAsync(InboundAuthMode mode, IPAddress client, string helo, string? mailFrom,
        SpfVerdict? spfAtMail, ReadOnlyMemory<byte> message, CancellationToken cancel)
    {
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancel);
        timeout.CancelAfter(_settings.Timeout);
        var token = timeout.Token;

        // SPF (unless done at MAIL), DKIM and the DMARC policy lookup run side by side.
        var from = FromDomain.Find(message.Span);
        var spfTask = spfAtMail is null ? _spf.CheckAsync(client, mailFrom, helo, token) : Task.FromResult(spfAtMail);
        var dkimTask = VerifyDkimAsync(message, token);
        var policyTask = DiscoverAsync(from, token);
        var spf = await spfTask.ConfigureAwait(false);
        var dkim = await dkimTask.ConfigureAwait(false);
        var policy = await policyTask.ConfigureAwait(false);

        DmarcVerdict dmarc;
        try
        {
            dmarc = await _dmarc.EvaluateAsync(policy, spf, dkim ?? [], token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested && !cancel.IsCancellationRequested)
        {
            dmarc = new DmarcVerdict(DmarcResult.TempError, from.Domain, null, null, DmarcPolicy.None, DmarcPolicy.None, false, false, "timed out");
        }
        cancel.ThrowIfCancellationRequested();

        byte[] header = AuthenticationResults.Build(_settings.AuthservId, spf, dkim, dmarc);
        var forged = AuthenticationResults.FindOurs(message.Span, _settings.AuthservId);
        return new InboundAuthResult(spf, dkim, dmarc, header, forged, Decide(mode, dmarc));
    }

    private async Task<DmarcPolicyLookup> DiscoverAsync(FromDomain from, CancellationToken token)
    {
        try
        {
            return await _dmarc.DiscoverAsync(from.Domain, token, from.Problem).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            return new DmarcPolicyLookup(from.Domain, null, null, null, DmarcResult.TempError, "timed out");
        }
    }

    private async Task<IReadOnlyList<DkimVerdict>?> VerifyDkimAsync(ReadOnlyMemory<byte> message, CancellationToken token)
    {
        if (_dkim is null)
            return null;
        try
        {
            var verdicts = await _dkim.VerifyAsync(message, token).ConfigureAwait(false);
            return verdicts.Count <= _settings.MaxDkimSignatures ? verdicts : verdicts.Take(_settings.MaxDkimSignatures).ToList();
        }
        catch (OperationCanceledException) when (token.IsCancellationRequested)
        {
            return [new DkimVerdict(DkimResult.TempError, "", "", "", "timed out", "")];
        }
    }

    /// <summary>
    /// Under enforce: a DMARC failure whose disposition (after pct) is reject, and a message
    /// without exactly one From address (RFC 7489 6.6.1), are handled by
    /// <c>dmarcRejectAction</c>; a quarantine disposition is quarantined. Temperrors and
    /// everything under annotate are accepted.
    /// </summary>
    internal InboundDecision Decide(InboundAuthMode mode, DmarcVerdict dmarc)
    {
        if (mode != InboundAuthMode.Enforce)
            return InboundDecision.Accept;
        bool reject = dmarc.Result is DmarcResult.Fail or DmarcResult.PermError && dmarc.Disposition == DmarcPolicy.Reject;
        if (reject)
        {
            return _settings.DmarcRejectAction switch
            {
                DmarcRejectAction.Reject => new InboundDecision(InboundAction.Reject, dmarc.Result == DmarcResult.PermError
                    ? $"550 5.7.1 Message refused: DMARC needs exactly one From address ({dmarc.Problem})"
                    : $"550 5.7.1 Message refused by the DMARC policy of {dmarc.PolicyDomain}: it is not authenticated as {dmarc.FromDomain}"),
                DmarcRejectAction.Quarantine => new InboundDecision(InboundAction.Quarantine, null),
                _ => InboundDecision.Accept,
            };
        }
        if (dmarc.Result == DmarcResult.Fail && dmarc.Disposition == DmarcPolicy.Quarantine)
            return new InboundDecision(InboundAction.Quarantine, null);
        return InboundDecision.Accept;
    }

    /// <summary>An explanation is the domain's text: printable ASCII on one line, not too long, for a reply.</summary>
    private static string OneLine(string text)
    {
        var chars = text.Where(c => c is >= ' ' and < (char)127).Take(400).ToArray();
        return new string(chars);
    }
}
