namespace NativeRelay.Config;

/// <summary>
/// DKIM signing and verifying (the <c>dkim</c> section; docs/CONFIG.md). With no keys nothing is
/// signed and the receiving path does not touch DKIM at all.
/// </summary>
public sealed class DkimOptions
{
    /// <summary>Signing keys. Two keys for one domain (say RSA and Ed25519) sign each message twice (RFC 8463 3).</summary>
    public List<DkimKeyOptions> Keys { get; set; } = [];

    /// <summary>Header fields to sign (h=), in this order. Null: the default list (DkimSettings.DefaultHeaders).</summary>
    public List<string>? Headers { get; set; }

    /// <summary>Fields signed once more than they occur, so a copy added later breaks the signature (RFC 6376 8.15).</summary>
    public List<string> OverSign { get; set; } = ["From"];

    /// <summary>c=: "relaxed/relaxed" (default), "simple/simple", "relaxed/simple" or "simple/relaxed".</summary>
    public string Canonicalization { get; set; } = "relaxed/relaxed";

    /// <summary>When positive, signatures carry x= (expire) this many seconds after t=. 0: no x=.</summary>
    public long ExpirationSeconds { get; set; }

    /// <summary>
    /// Which domain picks the key, tried in this order: "from" (the From: header's domain),
    /// "sender" (the envelope sender's), "user" (the part after '@' of the authenticated user).
    /// </summary>
    public List<string> SignBy { get; set; } = ["from"];

    public DkimVerifyOptions Verify { get; set; } = new();
}

/// <summary>One signing key: d=, s= and the PEM file (RSA or Ed25519; the algorithm is read from the key).</summary>
public sealed class DkimKeyOptions
{
    public string Domain { get; set; } = "";
    public string Selector { get; set; } = "";
    public string KeyFile { get; set; } = "";

    /// <summary>Also sign mail of every subdomain of <see cref="Domain"/> (news.example.com signs as d=example.com).</summary>
    public bool Subdomains { get; set; }
}

public sealed class DkimVerifyOptions
{
    /// <summary>At most this many DKIM-Signature fields of a message are checked (the rest get no verdict).</summary>
    public int MaxSignatures { get; set; } = 5;

    /// <summary>DNS key records kept (each for its TTL).</summary>
    public int KeyCacheSize { get; set; } = 10_000;
}
