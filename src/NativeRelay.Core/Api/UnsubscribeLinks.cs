using System.Security.Cryptography;
using System.Text;
using NativeRelay.Config;

namespace NativeRelay.Api;

/// <summary>
/// The signed, expiring token of a one-click unsubscribe link (RFC 8058): base64url of
/// "v1 \n EXPIRY \n RECIPIENT \n SENDERDOMAIN \n LISTID", a dot, and the base64url of the first
/// 16 bytes of its HMAC-SHA256 under the relay's unsubscribe key. Nothing is stored per link;
/// a link that does not verify, or has expired, names nobody.
/// </summary>
public sealed class UnsubscribeLinks
{
    private readonly byte[] _key;

    public UnsubscribeLinks(byte[] key, UnsubscribeSettings settings)
    {
        _key = key;
        Settings = settings;
    }

    public UnsubscribeSettings Settings { get; }

    /// <summary>Reads the key file, or (no secretFile configured) creates a random one in the spool directory, mode 0600.</summary>
    public static UnsubscribeLinks Load(UnsubscribeSettings settings)
    {
        try
        {
            if (settings.SecretIsGenerated && !File.Exists(settings.SecretFile))
            {
                var fresh = RandomNumberGenerator.GetBytes(32);
                var temp = settings.SecretFile + ".tmp";
                using (var f = new FileStream(temp, PrivateFile.Write(FileMode.Create)))
                {
                    f.Write(fresh);
                    f.Flush(flushToDisk: true);
                }
                File.Move(temp, settings.SecretFile, overwrite: false);
            }
            var key = File.ReadAllBytes(settings.SecretFile);
            if (key.Length < 32)
                throw new ConfigException($"http.unsubscribe.secretFile {settings.SecretFile}: at least 32 bytes are needed, it has {key.Length}");
            return new UnsubscribeLinks(key, settings);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ConfigException($"http.unsubscribe.secretFile {settings.SecretFile}: {e.Message}");
        }
    }

    public string CreateToken(string recipient, string senderDomain, string listId, DateTimeOffset now)
    {
        long expires = (now + Settings.Validity).ToUnixTimeSeconds();
        var payload = Encoding.UTF8.GetBytes($"v1\n{expires}\n{recipient}\n{senderDomain}\n{listId}");
        return TokenStore.Base64Url(payload) + "." + TokenStore.Base64Url(Mac(payload));
    }

    /// <summary>The header fields to add (before DKIM signing), CRLF-terminated.</summary>
    public string HeaderFields(string recipient, string senderDomain, string listId, DateTimeOffset now)
    {
        var url = $"{Settings.BaseUrl.AbsoluteUri.TrimEnd('/')}/u/{CreateToken(recipient, senderDomain, listId, now)}";
        var value = Settings.Mailto is { } m ? $"<{url}>,\r\n <mailto:{m}?subject=unsubscribe>" : $"<{url}>";
        return $"List-Unsubscribe: {value}\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n";
    }

    /// <summary>What a token names, if its signature verifies and it has not expired.</summary>
    public bool TryVerify(string token, DateTimeOffset now, out string recipient, out string senderDomain, out string listId)
    {
        recipient = senderDomain = listId = "";
        int dot = token.IndexOf('.');
        if (dot <= 0 || token.Length > 2048)
            return false;
        var payload = FromBase64Url(token.AsSpan(0, dot));
        var mac = FromBase64Url(token.AsSpan(dot + 1));
        if (payload is null || mac is null || !CryptographicOperations.FixedTimeEquals(mac, Mac(payload)))
            return false;
        var fields = Encoding.UTF8.GetString(payload).Split('\n');
        if (fields.Length != 5 || fields[0] != "v1" || !long.TryParse(fields[1], out long expires)
            || now.ToUnixTimeSeconds() > expires)
            return false;
        recipient = fields[2];
        senderDomain = fields[3];
        listId = fields[4];
        return true;
    }

    private byte[] Mac(byte[] payload) => HMACSHA256.HashData(_key, payload)[..16];

    private static byte[]? FromBase64Url(ReadOnlySpan<char> text)
    {
        var s = text.ToString().Replace('-', '+').Replace('_', '/');
        s += (s.Length % 4) switch { 2 => "==", 3 => "=", _ => "" };
        try
        {
            return Convert.FromBase64String(s);
        }
        catch (FormatException)
        {
            return null;
        }
    }
}
