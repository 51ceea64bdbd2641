using System.Net;
using NativeRelay.MailAuth;

namespace NativeRelay.Config;

/// <summary>
/// The validated <c>inboundAuth</c> options: the mode of every "smtp" listener (the default, and
/// the listeners that set their own), the authserv-id, the enforcement choices, and the Public
/// Suffix List (a file's is read here, so a bad file fails the start or the reload, not the
/// first message; the built-in one is parsed only when first used).
/// </summary>
public sealed record InboundAuthSettings(
    InboundAuthMode Mode,
    IReadOnlyDictionary<IPEndPoint, InboundAuthMode> ListenerModes,
    string AuthservId,
    bool SpfRejectFailAtMail,
    DmarcRejectAction DmarcRejectAction,
    int MaxDkimSignatures,
    string? PublicSuffixListFile,
    PublicSuffixList? PublicSuffixListFromFile,
    TimeSpan Timeout,
    int DnsCacheSize,
    bool HoldQuarantined = false)
{
    /// <summary>The list to use: the file's, else the one built into the binary.</summary>
    public PublicSuffixList PublicSuffixList => PublicSuffixListFromFile ?? PublicSuffixList.Default;

    /// <summary>The mode of a listener: its own <c>inboundAuth</c>, else <see cref="Mode"/> for "smtp" listeners; submission listeners are never checked.</summary>
    public InboundAuthMode ModeFor(IPEndPoint listener, bool isSubmission) =>
        ListenerModes.TryGetValue(listener, out var mode) ? mode : isSubmission ? InboundAuthMode.Off : Mode;

    /// <summary>Whether any listener checks anything (so the relay builds the authenticator at all).</summary>
    public bool AnyOn => Mode != InboundAuthMode.Off || ListenerModes.Values.Any(m => m != InboundAuthMode.Off);

    public static InboundAuthSettings Validate(RelayOptions o, string hostname)
    {
        var a = o.InboundAuth ?? new InboundAuthOptions(); // "inboundAuth": null means the defaults
        var mode = ParseMode(a.Mode, "inboundAuth.mode");
        var listenerModes = new Dictionary<IPEndPoint, InboundAuthMode>();
        foreach (var listener in o.Listeners)
        {
            if (listener.InboundAuth is null)
                continue;
            var endPoint = RelaySettings.ParseEndPoint(listener.Address, "listeners.address");
            listenerModes[endPoint] = ParseMode(listener.InboundAuth, $"listeners[{listener.Address}].inboundAuth");
        }

        string authservId = string.IsNullOrWhiteSpace(a.AuthservId) ? hostname : a.AuthservId.Trim();
        if (authservId.Length > 255 || authservId.Any(c => c <= ' ' || c >= 127 || "()<>@,;:\\\"/[]?=".Contains(c)))
            throw new ConfigException($"inboundAuth.authservId: '{authservId}' is not a token (a host name such as mx.example.com)");

        var action = a.DmarcRejectAction?.Trim().ToLowerInvariant() switch
        {
            "reject" => DmarcRejectAction.Reject,
            "quarantine" => DmarcRejectAction.Quarantine,
            "annotate" => DmarcRejectAction.Annotate,
            _ => throw new ConfigException($"inboundAuth.dmarcRejectAction: '{a.DmarcRejectAction}' is not one of reject, quarantine, annotate"),
        };
        bool hold = a.Quarantine?.Trim().ToLowerInvariant() switch
        {
            "annotate" => false,
            "hold" => true,
            _ => throw new ConfigException($"inboundAuth.quarantine: '{a.Quarantine}' is not one of annotate, hold"),
        };
        if (a.MaxDkimSignatures is < 1 or > 50)
            throw new ConfigException($"inboundAuth.maxDkimSignatures: 1 to 50 (got {a.MaxDkimSignatures})");
        if (a.TimeoutSeconds is < 1 or > 120)
            throw new ConfigException($"inboundAuth.timeoutSeconds: 1 to 120 (got {a.TimeoutSeconds})");
        if (a.DnsCacheSize is < 100 or > 10_000_000)
            throw new ConfigException($"inboundAuth.dnsCacheSize: 100 to 10000000 (got {a.DnsCacheSize})");

        PublicSuffixList? psl = null;
        string? pslFile = string.IsNullOrWhiteSpace(a.PublicSuffixListFile) ? null : Path.GetFullPath(a.PublicSuffixListFile);
        if (pslFile is not null)
        {
            try
            {
                psl = PublicSuffixList.LoadFile(pslFile);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException)
            {
                throw new ConfigException($"inboundAuth.publicSuffixListFile: {e.Message}");
            }
        }
        return new InboundAuthSettings(mode, listenerModes, authservId, a.SpfRejectFailAtMail, action, a.MaxDkimSignatures,
            pslFile, psl, TimeSpan.FromSeconds(a.TimeoutSeconds), a.DnsCacheSize, hold);
    }

    private static InboundAuthMode ParseMode(string? text, string what) => text?.Trim().ToLowerInvariant() switch
    {
        "off" => InboundAuthMode.Off,
        "annotate" => InboundAuthMode.Annotate,
        "enforce" => InboundAuthMode.Enforce,
        _ => throw new ConfigException($"{what}: '{text}' is not one of off, annotate, enforce"),
    };
}
