using System.Text;

namespace NativeRelay.MailAuth.Dkim;

/// <summary>A DKIM key record from DNS (RFC 6376 3.6.1, RFC 8463 4): the key type and public key, or why it cannot be used.</summary>
public sealed record DkimKeyRecord(DkimAlgorithm Algorithm, byte[] PublicKey, bool Testing, bool StrictIdentity)
{
    /// <summary>Parses one TXT record; on failure <paramref name="error"/> says why (a PermError reason).</summary>
    public static DkimKeyRecord? Parse(string text, out string? error)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        Span<(Range Name, Range Value)> tags = stackalloc (Range, Range)[DkimTagList.MaxTags];
        if (!DkimTagList.TryParse(bytes, tags, out int count))
        {
            error = "key record is not a tag list";
            return null;
        }
        tags = tags[..count];
        if (DkimTagList.TryGet(bytes, tags, "v"u8, out var v) && !bytes.AsSpan(v).SequenceEqual("DKIM1"u8))
        {
            error = "key record v= is not DKIM1";
            return null;
        }
        var algorithm = DkimAlgorithm.RsaSha256;
        if (DkimTagList.TryGet(bytes, tags, "k"u8, out var k))
        {
            var kind = bytes.AsSpan(k);
            if (kind.SequenceEqual("ed25519"u8))
                algorithm = DkimAlgorithm.Ed25519Sha256;
            else if (!kind.SequenceEqual("rsa"u8))
            {
                error = $"key type k={Encoding.ASCII.GetString(kind)} is not supported";
                return null;
            }
        }
        if (DkimTagList.TryGet(bytes, tags, "h"u8, out var h) && !ListHas(bytes.AsSpan(h), "sha256"u8))
        {
            error = "key record does not allow sha256 (h=)";
            return null;
        }
        if (DkimTagList.TryGet(bytes, tags, "s"u8, out var s) && !ListHas(bytes.AsSpan(s), "email"u8) && !ListHas(bytes.AsSpan(s), "*"u8))
        {
            error = "key record is not for email (s=)";
            return null;
        }
        if (!DkimTagList.TryGet(bytes, tags, "p"u8, out var p))
        {
            error = "key record has no p=";
            return null;
        }
        var raw = bytes.AsSpan(p);
        Span<byte> clean = raw.Length <= 4096 ? stackalloc byte[raw.Length] : new byte[raw.Length];
        int n = DkimTagList.CopyWithoutWhitespace(raw, clean);
        if (n == 0)
        {
            error = "key revoked (empty p=)";
            return null;
        }
        var key = new byte[n];
        if (System.Buffers.Text.Base64.DecodeFromUtf8(clean[..n], key, out _, out int keyLength) != System.Buffers.OperationStatus.Done)
        {
            error = "key record p= is not base64";
            return null;
        }
        bool testing = false, strict = false;
        if (DkimTagList.TryGet(bytes, tags, "t"u8, out var t))
        {
            testing = ListHas(bytes.AsSpan(t), "y"u8);
            strict = ListHas(bytes.AsSpan(t), "s"u8);
        }
        error = null;
        return new DkimKeyRecord(algorithm, key[..keyLength], testing, strict);
    }

    /// <summary>True when a ':'-separated list (white space allowed around items) contains <paramref name="item"/>.</summary>
    internal static bool ListHas(ReadOnlySpan<byte> list, ReadOnlySpan<byte> item)
    {
        foreach (var range in list.Split((byte)':'))
            if (list[range].Trim(" \t\r\n"u8).SequenceEqual(item))
                return true;
        return false;
    }
}
