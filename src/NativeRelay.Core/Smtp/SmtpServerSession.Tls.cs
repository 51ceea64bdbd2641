using System.Buffers;
using NativeRelay.Net;

namespace NativeRelay.Smtp;

/// <summary>STARTTLS (RFC 3207) and the TLS handshake, on STARTTLS or at connect on an implicit-TLS port (RFC 8314).</summary>
internal sealed partial class SmtpServerSession
{
    /// <summary>The TLS handshake, then a fresh start: RFC 3207 4.2 says forget all that was said before.</summary>
    private async ValueTask<bool> StartTlsAsync(CancellationToken stopping)
    {
        try
        {
            _tls = await TlsTransport.AcceptAsync(_connection.Transport, _server.Certificates!, _commandTimeout, stopping);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            _server.Log.Info($"{_clientAddress}: TLS handshake failed: {NativeRelay.Telemetry.ExceptionText.Of(e)}");
            return false;
        }
        _input = _tls.Input;
        _output = _tls.Output;
        ResetTransaction();
        _phase = Phase.Connected;
        _esmtp = false;
        _heloName = "";
        _authStep = AuthStep.None;
        _authenticatedUser = null;
        _discardingLongLine = false;
        return true;
    }

    private Step StartTls(ReadOnlySpan<byte> argument)
    {
        if (!argument.IsEmpty)
            return Error(SmtpReplies.NoArgumentsAllowed);
        if (_server.Certificates is null)
            return Error(SmtpReplies.NotImplemented);
        if (_tls is not null)
            return Error(SmtpReplies.TlsAlreadyActive);
        if (InTransaction)
            return Error(SmtpReplies.StartTlsInTransaction);
        _output.Write(SmtpReplies.ReadyToStartTls);
        return Step.StartTls;
    }
}
