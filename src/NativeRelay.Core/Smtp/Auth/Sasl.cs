using System.Buffers;
using System.Buffers.Text;

namespace NativeRelay.Smtp.Auth;

/// <summary>The SASL mechanisms the server offers (RFC 4954 with RFC 4616 PLAIN and the LOGIN draft).</summary>
public enum SaslMechanism : byte
{
    None,
    Plain,
    Login,
}

/// <summary>Decoding of AUTH arguments and responses. Only runs during AUTH, so it may allocate.</summary>
public static class Sasl
{
    /// <summary>RFC 4954 4: a response line may be up to 12288 octets.</summary>
    public const int MaxResponseLine = 12288;

    /// <summary>"334 " challenges of AUTH LOGIN: base64 of "Username:" and "Password:".</summary>
    public static ReadOnlySpan<byte> LoginUserChallenge => "334 VXNlcm5hbWU6\r\n"u8;
    public static ReadOnlySpan<byte> LoginPasswordChallenge => "334 UGFzc3dvcmQ6\r\n"u8;
    public static ReadOnlySpan<byte> EmptyChallenge => "334 \r\n"u8;

    public static SaslMechanism ParseMechanism(ReadOnlySpan<byte> name)
    {
        if (System.Text.Ascii.EqualsIgnoreCase(name, "PLAIN"u8))
            return SaslMechanism.Plain;
        if (System.Text.Ascii.EqualsIgnoreCase(name, "LOGIN"u8))
            return SaslMechanism.Login;
        return SaslMechanism.None;
    }

    /// <summary>True when the client cancelled the exchange with "*" (RFC 4954 4).</summary>
    public static bool IsCancel(ReadOnlySpan<byte> line) => line.Length == 1 && line[0] == (byte)'*';

    /// <summary>Decodes a base64 response; "=" is the empty response (RFC 4954 4). Returns null if not base64.</summary>
    public static byte[]? DecodeResponse(ReadOnlySpan<byte> text)
    {
        if (text.Length == 1 && text[0] == (byte)'=')
            return [];
        if (text.IsEmpty)
            return [];
        var decoded = new byte[Base64.GetMaxDecodedFromUtf8Length(text.Length)];
        var status = Base64.DecodeFromUtf8(text, decoded, out int consumed, out int written);
        if (status != OperationStatus.Done || consumed != text.Length)
            return null;
        return decoded.AsSpan(0, written).ToArray();
    }

    /// <summary>
    /// Splits a PLAIN message (RFC 4616): <c>[authzid] NUL authcid NUL passwd</c>. An authorization
    /// identity other than the user itself is refused: nobody may act as someone else.
    /// </summary>
    public static bool TryParsePlain(byte[] message, out byte[] user, out byte[] password)
    {
        user = [];
        password = [];
        var span = message.AsSpan();
        int first = span.IndexOf((byte)0);
        if (first < 0)
            return false;
        int second = span[(first + 1)..].IndexOf((byte)0);
        if (second < 0)
            return false;
        second += first + 1;
        var authz = span[..first];
        var authc = span[(first + 1)..second];
        var pass = span[(second + 1)..];
        if (authc.IsEmpty || pass.IsEmpty || pass.IndexOf((byte)0) >= 0)
            return false;
        if (!authz.IsEmpty && !authz.SequenceEqual(authc))
            return false;
        user = authc.ToArray();
        password = pass.ToArray();
        return true;
    }
}
