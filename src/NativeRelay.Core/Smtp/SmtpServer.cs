using System.Runtime.InteropServices;
using System.Text;
using NativeRelay.Config;
using NativeRelay.Delivery;
using NativeRelay.Net;
using NativeRelay.Policy;
using NativeRelay.Smtp.Auth;
using NativeRelay.Spool;
using NativeRelay.Telemetry;

namespace NativeRelay.Smtp;

/// <summary>
/// What every receiving session shares: settings, the spool, the hand-off to delivery, the relay
/// policy, the certificate and the users, and the fixed replies rendered once at start (greeting,
/// the EHLO capability lists) so sessions only copy bytes.
/// </summary>
public sealed class SmtpServer : IConnectionHandler
{
    // EHLO capability lists, by (STARTTLS offered ? 1 : 0) | (AUTH offered ? 2 : 0).
    private readonly byte[][] _ehloCapabilities = new byte[8][];

    /// <param name="certificates">Overrides loading <see cref="RelaySettings.Tls"/> (tests); null loads it if configured.</param>
    /// <param name="users">Overrides loading <see cref="RelaySettings.UsersFile"/> (tests).</param>
    /// <param name="authThrottle">Shared with the server this one replaces on a reload, so recent AUTH failures still count.</param>
    /// <exception cref="ConfigException">A configured certificate, users or recipients file cannot be loaded.</exception>
    public SmtpServer(RelaySettings settings, SpoolLog spool, IQueueIntake intake, QueueIdGenerator ids, Log log,
        TlsCertificateStore? certificates = null, UserStore? users = null, AuthThrottle? authThrottle = null)
    {
        AuthThrottle = authThrottle ?? new AuthThrottle();
        Settings = settings;
        Spool = spool;
        Intake = intake;
        Accept = new SpoolIntake(spool, intake);
        Ids = ids;
        Log = log;
        Certificates = certificates ?? (settings.Tls is null ? null : TlsCertificateStore.Load(settings.Tls));
        Users = users ?? (settings.UsersFile is null ? null : UserStore.Load(settings.UsersFile));
        Policy = RecipientPolicy.FromSettings(settings);
        // The DKIM keys are read with the server's other files: a reload that cannot read one is refused as a whole.
        Signer = settings.Dkim.Signs ? NativeRelay.MailAuth.Dkim.DkimSigner.Create(settings.Dkim, log) : null;
        // SPF, DKIM and DMARC of mail from strangers: one authenticator (and its DNS cache) per
        // configuration, shared by every session; none at all while every listener is off.
        if (settings.InboundAuth is { AnyOn: true } inbound)
        {
            var dns = new NativeRelay.Routing.DnsClientResolver(settings.Routing.DnsServers, settings.Routing.DnsTimeout);
            Inbound = new NativeRelay.MailAuth.InboundAuthenticator(inbound, dns,
                NativeRelay.MailAuth.Dkim.DkimVerifier.Create(dns, settings.Dkim), settings.Hostname);
        }
        HostnameBytes = Encoding.ASCII.GetBytes(settings.Hostname);
        Greeting = Encoding.ASCII.GetBytes($"220 {settings.Hostname} ESMTP NativeRelay\r\n");
        for (int variant = 0; variant < _ehloCapabilities.Length; variant++)
            _ehloCapabilities[variant] = Encoding.ASCII.GetBytes(RenderCapabilities(settings, startTls: (variant & 1) != 0, auth: (variant & 2) != 0,
                requireTls: (variant & 4) != 0));
        DataLineTooLongReply = Encoding.ASCII.GetBytes(
            $"550 5.6.0 Message refused: a line is longer than {settings.Limits.MaxLineLength} octets (RFC 5322 2.1.1)\r\n");
        TooManyConnectionsReply = SmtpReplies.TooManyConnections.ToArray();
    }

    internal RelaySettings Settings { get; }
    internal SpoolLog Spool { get; }
    internal IQueueIntake Intake { get; }
    /// <summary>Append, commit, hand over: the path every accepted message takes (shared with the HTTP API).</summary>
    internal SpoolIntake Accept { get; }
    internal QueueIdGenerator Ids { get; }
    internal Log Log { get; }
    public TlsCertificateStore? Certificates { get; }
    public UserStore? Users { get; }
    public RecipientPolicy Policy { get; }
    /// <summary>The suppression list the RCPT check asks (null: none kept); set by the host before the first session.</summary>
    public NativeRelay.Traffic.Suppression.ISuppressionList? Suppression { get; set; }
    /// <summary>Signs each accepted message once, before it is spooled; null when no DKIM key is configured.</summary>
    public NativeRelay.MailAuth.IMessageSigner? Signer { get; }
    /// <summary>Where reception events go (the null publisher, costing nothing, when no webhook is configured).</summary>
    public NativeRelay.Events.IEventPublisher Events { get => Accept.Events; init => Accept.Events = value; }
    /// <summary>Checks SPF, DKIM and DMARC of inbound mail; null when inboundAuth is off on every listener.</summary>
    public NativeRelay.MailAuth.InboundAuthenticator? Inbound { get; }
    /// <summary>Failed AUTH attempts per client address, shared by all sessions.</summary>
    internal AuthThrottle AuthThrottle { get; }
    internal byte[] HostnameBytes { get; }
    internal byte[] Greeting { get; }
    internal byte[] DataLineTooLongReply { get; }

    public ReadOnlyMemory<byte> TooManyConnectionsReply { get; }

    /// <summary>The EHLO reply after its first line ("250-hostname Hello ...").</summary>
    /// <param name="requireTls">The session is under TLS: REQUIRETLS is offered (RFC 8689 4.1).</param>
    internal byte[] EhloCapabilities(bool startTls, bool auth, bool requireTls = false) =>
        _ehloCapabilities[(startTls ? 1 : 0) | (auth ? 2 : 0) | (requireTls ? 4 : 0)];

    private static string RenderCapabilities(RelaySettings settings, bool startTls, bool auth, bool requireTls)
    {
        var sb = new StringBuilder();
        sb.Append("250-PIPELINING\r\n");
        sb.Append("250-SIZE ").Append(settings.Limits.MaxMessageSize).Append("\r\n");
        if (startTls)
            sb.Append("250-STARTTLS\r\n");
        if (auth)
            sb.Append("250-AUTH PLAIN LOGIN\r\n");
        sb.Append("250-ENHANCEDSTATUSCODES\r\n");
        sb.Append("250-8BITMIME\r\n");
        sb.Append("250-DSN\r\n");
        sb.Append("250-SMTPUTF8\r\n");
        sb.Append("250-CHUNKING\r\n");
        if (requireTls)
            sb.Append("250-REQUIRETLS\r\n");
        sb.Append("250 HELP\r\n");
        return sb.ToString();
    }

    private long _messagesAccepted;
    private long _bytesAccepted;
    public long MessagesAccepted => Interlocked.Read(ref _messagesAccepted);
    public long BytesAccepted => Interlocked.Read(ref _bytesAccepted);

    internal void CountAccepted(long bytes, int recipients)
    {
        Interlocked.Increment(ref _messagesAccepted);
        Interlocked.Add(ref _bytesAccepted, bytes);
        Telemetry.RelayMetrics.MessagesReceived.Increment();
        Telemetry.RelayMetrics.BytesReceived.Add(bytes);
        Telemetry.RelayMetrics.RecipientsReceived.Add(recipients);
    }

    public Task HandleAsync(SocketConnection connection, ListenerInfo listener, CancellationToken stopping) =>
        new SmtpServerSession(this, connection, listener).RunAsync(stopping);

    internal bool MayRelay(System.Net.IPAddress client) => Policy.IsRelayClient(client);

    /// <summary>Logs what the start-up configuration means for clients (once, at start).</summary>
    public void LogConfiguration(IEnumerable<ListenerInfo> listeners)
    {
        if (Certificates is not null)
            Log.Info($"TLS certificate: {Certificates.Describe()}");
        if (Users is not null)
            Log.Info($"AUTH users: {Users.Count} from {Users.Path}");
        foreach (var l in listeners)
        {
            if (l.IsSubmission && Certificates is null && !Settings.AllowPlaintextAuth)
                Log.Warn($"{ListenerSettings.KindName(l.Kind)} listener {l.EndPoint}: AUTH is offered only under TLS, but no certificate is configured, so no client can authenticate (set tls or allowPlaintextAuth)");
        }
    }

    private readonly List<Func<bool, string?>> _reloadables = [];

    /// <summary>
    /// Adds a file another stage reads (the local aliases) to the reload on SIGHUP and the periodic
    /// check: called with force, it returns a line for the log or null; a line starting with
    /// "keeping" is a warning. Add before <see cref="StartReloading"/>.
    /// </summary>
    public void AddReloadable(Func<bool, string?> reload) => _reloadables.Add(reload);

    /// <summary>Re-reads the certificate, users and recipients files when they changed (always when forced).</summary>
    public void ReloadFiles(bool force)
    {
        Report(Certificates?.Reload(force));
        Report(Users?.Reload(force));
        Report(Policy.ReloadRecipientsFile(force));
        foreach (var reload in _reloadables)
            Report(reload(force));

        void Report(string? line)
        {
            if (line is null)
                return;
            if (line.StartsWith("keeping", StringComparison.Ordinal))
                Log.Warn(line);
            else
                Log.Info(line);
        }
    }

    /// <summary>
    /// Reloads on SIGHUP and checks the files for changes every <see cref="RelaySettings.ReloadCheckSeconds"/>.
    /// Dispose to stop.
    /// </summary>
    public IDisposable StartReloading(CancellationToken stopping) => StartReloading(stopping, handleHangup: true);

    /// <summary>
    /// Checks the files for changes every <see cref="RelaySettings.ReloadCheckSeconds"/>; with
    /// <paramref name="handleHangup"/> also reloads them on SIGHUP (a host that reloads the whole
    /// configuration on SIGHUP passes false). Dispose to stop.
    /// </summary>
    public IDisposable StartReloading(CancellationToken stopping, bool handleHangup)
    {
        var stop = CancellationTokenSource.CreateLinkedTokenSource(stopping);
        PosixSignalRegistration? hangup = null;
        try
        {
            if (handleHangup)
            {
                hangup = PosixSignalRegistration.Create(PosixSignal.SIGHUP, context =>
                {
                    context.Cancel = true; // reload, never terminate
                    ThreadPool.UnsafeQueueUserWorkItem(static s =>
                    {
                        var server = (SmtpServer)s!;
                        server.Log.Info("SIGHUP: reloading the certificate, users, recipient and aliases files");
                        server.ReloadFiles(force: true);
                    }, this);
                });
            }
        }
        catch (PlatformNotSupportedException)
        {
        }
        if (Certificates is not null || Users is not null || Settings.LocalRecipientsFile is not null || _reloadables.Count > 0)
            _ = PollAsync(TimeSpan.FromSeconds(Settings.ReloadCheckSeconds), stop.Token);
        return new Reloading(stop, hangup);
    }

    private async Task PollAsync(TimeSpan interval, CancellationToken stop)
    {
        using var timer = new PeriodicTimer(interval);
        try
        {
            while (await timer.WaitForNextTickAsync(stop).ConfigureAwait(false))
            {
                try
                {
                    ReloadFiles(force: false);
                }
                catch (Exception e)
                {
                    Log.Warn($"reload check failed: {ExceptionText.Of(e)}");
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private sealed class Reloading(CancellationTokenSource stop, PosixSignalRegistration? hangup) : IDisposable
    {
        public void Dispose()
        {
            hangup?.Dispose();
            stop.Cancel();
            stop.Dispose();
        }
    }
}
