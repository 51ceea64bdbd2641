using System.Buffers;
using System.Security.Cryptography;
using System.Text;
using NativeRelay.Smtp.Auth;

namespace NativeRelay.Smtp;

/// <summary>AUTH (RFC 4954): the SASL exchange (PLAIN, LOGIN), the credentials, the password check off the socket thread.</summary>
internal sealed partial class SmtpServerSession
{
    private byte[] AuthScratch => _authScratch ??= new byte[Sasl.MaxResponseLine];

    private static bool StartsWithAuth(in ReadOnlySequence<byte> buffer)
    {
        Span<byte> head = stackalloc byte[5];
        if (buffer.Length < 5)
            return false;
        buffer.Slice(0, 5).CopyTo(head);
        return Ascii.EqualsIgnoreCase(head, "AUTH "u8);
    }

    private Step Auth(ReadOnlySpan<byte> argument)
    {
        if (_server.Users is null || !_listener.IsSubmission)
            return Error(SmtpReplies.AuthNotEnabled);
        if (_phase == Phase.Connected || !_esmtp)
            return Error(SmtpReplies.BadSequenceNeedHelo);
        if (_authenticatedUser is not null)
            return Error(SmtpReplies.AuthAlreadyDone);
        if (InTransaction)
            return Error(SmtpReplies.AuthInTransaction);
        if (_tls is null && !_server.Settings.AllowPlaintextAuth)
            return Error(SmtpReplies.AuthNeedsEncryption);

        int space = argument.IndexOf((byte)' ');
        var name = space < 0 ? argument : argument[..space];
        var initial = space < 0 ? default : argument[(space + 1)..];
        if (name.IsEmpty || initial.IndexOf((byte)' ') >= 0)
            return Error(SmtpReplies.AuthSyntax);
        var mechanism = Sasl.ParseMechanism(name);
        if (mechanism == SaslMechanism.None)
            return Error(SmtpReplies.AuthUnknownMechanism);

        if (space < 0)
        {
            _authStep = mechanism == SaslMechanism.Plain ? AuthStep.PlainResponse : AuthStep.LoginUser;
            return Reply(mechanism == SaslMechanism.Plain ? Sasl.EmptyChallenge : Sasl.LoginUserChallenge);
        }
        if (Sasl.IsCancel(initial))
            return Error(SmtpReplies.AuthCancelled);
        var decoded = Sasl.DecodeResponse(initial);
        if (decoded is null)
            return Error(SmtpReplies.AuthBadResponse);
        if (mechanism == SaslMechanism.Plain)
            return PlainCredentials(decoded);
        _authUser = decoded;
        _authStep = AuthStep.LoginPassword;
        return Reply(Sasl.LoginPasswordChallenge);
    }

    /// <summary>A line of the AUTH exchange (a base64 response, or "*" to cancel).</summary>
    private Step AuthResponse(ReadOnlySpan<byte> line)
    {
        var step = _authStep;
        _authStep = AuthStep.None;
        if (Sasl.IsCancel(line))
        {
            ClearCredentials();
            return Error(SmtpReplies.AuthCancelled);
        }
        var decoded = Sasl.DecodeResponse(line);
        if (decoded is null)
        {
            ClearCredentials();
            return Error(SmtpReplies.AuthBadResponse);
        }
        switch (step)
        {
            case AuthStep.PlainResponse:
                return PlainCredentials(decoded);
            case AuthStep.LoginUser:
                _authUser = decoded;
                _authStep = AuthStep.LoginPassword;
                return Reply(Sasl.LoginPasswordChallenge);
            default:
                _authUser ??= [];
                _authPassword = decoded;
                return Step.Authenticate;
        }
    }

    private Step PlainCredentials(byte[] message)
    {
        // A malformed PLAIN message is a failed login like any other (same delay, same count).
        Sasl.TryParsePlain(message, out var user, out var password);
        CryptographicOperations.ZeroMemory(message);
        _authUser = user;
        _authPassword = password;
        return Step.Authenticate;
    }

    private void ClearCredentials()
    {
        if (_authPassword is not null)
            CryptographicOperations.ZeroMemory(_authPassword);
        _authUser = null;
        _authPassword = null;
    }

    /// <summary>Checks the collected credentials: 235, or 535 after a delay that grows with each failure, and 421 at the limit.</summary>
    private async ValueTask AuthenticateAsync(CancellationToken stopping)
    {
        var user = _authUser ?? [];
        var password = _authPassword ?? [];
        _authUser = null;
        _authPassword = null;
        string? name = null;
        try
        {
            if (user.Length > 0 && password.Length > 0)
                name = await _server.Users!.VerifyAsync(user, password);
        }
        finally
        {
            CryptographicOperations.ZeroMemory(password);
        }

        if (name is not null)
        {
            _authenticatedUser = name;
            _server.Log.Info($"{_clientAddress}: authenticated as {name}");
            Reply(SmtpReplies.AuthSucceeded);
            return;
        }

        _authFailures++;
        var limits = _server.Settings.Limits;
        int fromAddress = _server.AuthThrottle.RecordFailure(_clientAddress);
        _server.Log.Info($"{_clientAddress}: AUTH failed for '{Printable(user)}' ({_authFailures} of {limits.MaxAuthFailures} in this session, {fromAddress} from this address lately)");
        var delay = AuthThrottle.Delay(_authFailures, fromAddress, limits.AuthFailureDelaySeconds, MaxAuthDelay);
        if (delay > TimeSpan.Zero)
        {
            try
            {
                await Task.Delay(delay, stopping);
            }
            catch (OperationCanceledException)
            {
            }
        }
        if (_authFailures >= limits.MaxAuthFailures)
        {
            _output.Write(SmtpReplies.AuthFailed);
            _output.Write(SmtpReplies.AuthTooManyFailures);
            _closeAfterFlush = true;
            return;
        }
        Error(SmtpReplies.AuthFailed);
    }

    private static string Printable(byte[] text)
    {
        var s = Encoding.UTF8.GetString(text, 0, Math.Min(text.Length, 64));
        return string.Create(s.Length, s, static (span, source) =>
        {
            for (int i = 0; i < span.Length; i++)
                span[i] = char.IsControl(source[i]) || source[i] == '\'' ? '?' : source[i];
        });
    }
}
