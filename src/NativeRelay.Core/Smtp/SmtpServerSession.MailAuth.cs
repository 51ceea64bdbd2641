using System.Text;
using NativeRelay.MailAuth;
using NativeRelay.MailAuth.Spf;
using NativeRelay.Message;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Smtp;

/// <summary>
/// Inbound mail authentication (SPF, DKIM, DMARC: <see cref="InboundAuthenticator"/>) for clients
/// that are neither trusted (relayNetworks) nor authenticated, on listeners whose inboundAuth
/// mode is not off. SPF starts at MAIL, in the background, so its DNS lookups overlap the rest
/// of the transaction; only with spfRejectFailAtMail under enforce does the MAIL reply wait for
/// it. At the end of data DKIM and DMARC are checked, forged Authentication-Results fields that
/// claim our authserv-id are renamed away (RFC 8601 5), the refusals of enforce are sent, and the
/// Authentication-Results field goes above the Received field. Temporary DNS failures never
/// refuse anything.
/// </summary>
internal sealed partial class SmtpServerSession
{
    /// <summary>Room in the message's reserved front for the Authentication-Results field.</summary>
    private const int AuthenticationResultsReserve = 2048;

    private readonly InboundAuthMode _inboundMode;
    private Task<SpfVerdict>? _spfCheck;

    /// <summary>Whether this transaction's message is checked: the listener checks, and the client is a stranger.</summary>
    private bool ChecksInbound => _server.Inbound is not null
        && InboundAuthenticator.AppliesTo(_inboundMode, _isRelayClient, _authenticatedUser is not null);

    /// <summary>At MAIL: starts the SPF check; true when the MAIL reply must wait for it.</summary>
    private bool StartSenderChecks()
    {
        if (!ChecksInbound)
            return false;
        var inbound = _server.Inbound!;
        _spfCheck = inbound.CheckSpfAsync(_clientAddress, _sender.Length == 0 ? null : Encoding.UTF8.GetString(_sender), _heloName, CancellationToken.None);
        return _inboundMode == InboundAuthMode.Enforce && inbound.Settings.SpfRejectFailAtMail;
    }

    /// <summary>The MAIL reply under spfRejectFailAtMail: 250, or the SPF refusal (and no transaction).</summary>
    private async ValueTask CheckSenderAsync()
    {
        var spf = await _spfCheck!;
        var decision = _server.Inbound!.DecideAtMail(_inboundMode, spf);
        if (decision.Action != InboundAction.Reject)
        {
            Reply(SmtpReplies.SenderOk);
            return;
        }
        _server.Log.Info($"{_clientAddress}: MAIL FROM:<{Encoding.UTF8.GetString(_sender)}> refused: SPF {spf.ResultName}");
        ResetTransaction();
        Error(Encoding.ASCII.GetBytes(decision.Reply + "\r\n"));
    }

    /// <summary>
    /// The end-of-data check. False when the message was refused (the reply is written and the
    /// transaction reset); otherwise the Authentication-Results field to add. The message is read
    /// once into a contiguous buffer for the checks (from the pool, returned here).
    /// </summary>
    private async ValueTask<(bool Accepted, byte[] Header, bool Hold)> AuthenticateMessageAsync(MessageBuffer message)
    {
        var inbound = _server.Inbound!;
        int reserved = message.Reserved;
        int length = (int)(message.ContentLength - reserved);
        var copy = System.Buffers.ArrayPool<byte>.Shared.Rent(Math.Max(1, length));
        InboundAuthResult result;
        try
        {
            message.CopyTo(reserved, copy.AsSpan(0, length));
            var spf = _spfCheck is null ? null : await _spfCheck;
            result = await inbound.CheckMessageAsync(_inboundMode, _clientAddress, _heloName,
                _sender.Length == 0 ? null : Encoding.UTF8.GetString(_sender), spf, copy.AsMemory(0, length), CancellationToken.None);
        }
        finally
        {
            System.Buffers.ArrayPool<byte>.Shared.Return(copy);
        }

        // RFC 8601 5: a field that claims our authserv-id came from outside: it must not survive.
        // Renamed in place (same length), so the message is not moved.
        foreach (var range in result.ForgedHeaders)
        {
            var (start, _) = range.GetOffsetAndLength(length);
            message.Overwrite(reserved + start, AuthenticationResults.RemovedFieldName);
        }
        if (result.ForgedHeaders.Count > 0)
            _server.Log.Info($"{new QueueIdText(_queueId)}: renamed {result.ForgedHeaders.Count} Authentication-Results field(s) claiming our authserv-id");

        string summary = $"spf={result.Spf.ResultName} dkim={DkimSummary(result.Dkim)} dmarc={result.Dmarc.ResultName}";
        if (result.Decision.Action == InboundAction.Reject)
        {
            _server.Log.Info($"{new QueueIdText(_queueId)}: refused from {_clientAddress}: {summary}: {result.Decision.Reply}");
            RelayMetrics.MessagesRejected.Increment();
            ResetTransaction();
            Reply(Encoding.ASCII.GetBytes(result.Decision.Reply + "\r\n"));
            return (false, [], false);
        }
        _server.Log.Info($"{new QueueIdText(_queueId)}: authentication {summary}{(result.Decision.Action == InboundAction.Quarantine ? " (quarantine)" : "")}");
        bool hold = result.Decision.Action == InboundAction.Quarantine && inbound.Settings.HoldQuarantined;
        return (true, result.Header, hold);
    }

    /// <summary>
    /// inboundAuth.quarantine "hold": a status record holds the message in the same commit
    /// wait as its 250, so it is acknowledged held and stays held across a crash.
    /// </summary>
    private async ValueTask HoldQuarantinedAsync(ulong id)
    {
        await _server.Spool.AppendStatusAsync(new StatusRecord
        {
            Id = id,
            TimeUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
            Flags = StatusFlags.Held,
            Attempts = 0,
            NextAttemptUnixMs = 0,
            Changes = [],
        });
        await _server.Spool.WaitForCommitAsync(_server.Spool.TailAddress - 1);
        _server.Log.Info($"{new QueueIdText(id)}: held (DMARC quarantine): nativerelay queue release or delete decides");
    }

    private static string DkimSummary(IReadOnlyList<DkimVerdict>? verdicts) =>
        verdicts is not { Count: > 0 } ? "none" : string.Join(',', verdicts.Select(v => v.Result.ToString().ToLowerInvariant()));

    /// <summary>Puts the field above the Received field (a copy with more room when it does not fit the reserve).</summary>
    private MessageBuffer PrependAuthenticationResults(MessageBuffer message, byte[] header)
    {
        if (message.TryPrepend(header))
            return message;
        var bigger = message.CopyWithFront(header.Length + (_server.Signer?.MaxHeaderLength ?? 0));
        message.Release();
        bigger.TryPrepend(header);
        return _message = bigger;
    }
}
