using System.Buffers;

namespace NativeRelay.Message;

/// <summary>What the server knows about one incoming message, for its Received: trace field.</summary>
public ref struct ReceivedTrace
{
    /// <summary>As the client gave it in EHLO/HELO; untrusted, sanitized when written.</summary>
    public ReadOnlySpan<byte> HeloName;

    /// <summary>Textual IP, e.g. "127.0.0.1" or "::1" (IPv4-mapped IPv6 should be given as IPv4).</summary>
    public ReadOnlySpan<byte> ClientAddress;

    /// <summary>Verified reverse DNS name, or empty for "unknown".</summary>
    public ReadOnlySpan<byte> ClientHostName;

    /// <summary>Our host name.</summary>
    public ReadOnlySpan<byte> ByHostName;

    /// <summary>RFC 3848 protocol name: "SMTP", "ESMTP", "ESMTPS", "ESMTPA", "ESMTPSA", "UTF8SMTP"...; empty omits the clause.</summary>
    public ReadOnlySpan<byte> Protocol;

    /// <summary>Spool id of the message; empty omits the clause.</summary>
    public ReadOnlySpan<byte> QueueId;

    /// <summary>The recipient address (without angle brackets) when there is exactly one, else empty.</summary>
    public ReadOnlySpan<byte> ForRecipient;

    /// <summary>
    /// Text of the TLS comment, written as given inside "( )" on its own line, or empty without TLS.
    /// "using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384" gives Postfix's wording.
    /// </summary>
    public ReadOnlySpan<byte> TlsDescription;

    public DateTimeOffset Timestamp;
}

/// <summary>
/// Writes the Received: trace field (RFC 5321 4.4) in Postfix's layout, folded with CRLF TAB:
/// <code>
/// Received: from HELO (HOST [IP])
///     by BY (NativeRelay) with PROTOCOL id QUEUEID
///     (TLS DESCRIPTION)
///     for &lt;RCPT&gt;; Mon, 23 Nov 2026 06:55:01 +0000
/// </code>
/// </summary>
/// <remarks>
/// Client-supplied text (HELO, the reverse DNS name, the recipient) is rewritten byte by byte
/// where it could end the field, start a new one, or close the comment it sits in: a CR LF in a
/// HELO must not become a forged header line in every copy of the message we relay.
/// Every input is cut to a fixed limit (the Max*Length constants), which is what makes
/// <see cref="MaxLength"/> a true bound and lets a caller use a stack buffer of that size.
/// </remarks>
public static class ReceivedHeader
{
    /// <summary>RFC 5321 4.5.3.1.4: a command line is 512 octets, so no real HELO argument is longer.</summary>
    public const int MaxHeloLength = 512;

    /// <summary>A textual IPv6 address with zone is far shorter; this is the contract's input limit.</summary>
    public const int MaxAddressLength = 256;

    /// <summary>RFC 1035: a domain name is at most 255 octets.</summary>
    public const int MaxHostNameLength = 255;

    public const int MaxProtocolLength = 16;

    public const int MaxQueueIdLength = 64;

    /// <summary>RFC 5321 4.5.3.1.3: a path is at most 256 octets.</summary>
    public const int MaxRecipientLength = 256;

    public const int MaxTlsDescriptionLength = 256;

    /// <summary>
    /// Upper bound of the output. The worst case, every input at its limit and the first line
    /// folded, is 1977 octets:
    /// "Received: from " 15 + HELO 512 + CRLF TAB "(" 4 + host 255 + " [IPv6:" 7 + address 256 + "])" 2
    /// + CRLF TAB "by " 6 + host 255 + " (NativeRelay)" 14 + " with " 6 + protocol 16 + " id " 4 + id 64
    /// + CRLF TAB "(" 4 + TLS 256 + ")" 1 + CRLF TAB "for &lt;" 8 + recipient 256 + "&gt;" 1
    /// + "; " 2 + date 31 + CRLF 2.
    /// </summary>
    public const int MaxLength = 2048;

    // RFC 5322 2.1.1: a line must not exceed 998 octets; beyond that the first line is folded
    // before the TCP-info comment (the only place a long HELO plus host name can push it over).
    private const int MaxLineLength = 998;

    // Atoms in the from/by clauses and in comments: printable ASCII without the comment
    // delimiters and the quoting backslash, so nothing can close the comment early.
    private static readonly SearchValues<byte> TokenBytes = SearchValues.Create(
        "!\"#$%&'*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~"u8);

    // Comment text may hold spaces as well.
    private static readonly SearchValues<byte> CommentBytes = SearchValues.Create(
        " !\"#$%&'*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`abcdefghijklmnopqrstuvwxyz{|}~"u8);

    // In the for clause: no control bytes (CR, LF among them) and no angle brackets that would end
    // the path early. Bytes of 128 and up stay, as an SMTPUTF8 address is UTF-8 (RFC 6531).
    private static readonly SearchValues<byte> RecipientForbiddenBytes = SearchValues.Create(
        "\0\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000b\f\r\u000e\u000f\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f\u007f<>"u8);

    private const byte Replacement = (byte)'?';

    /// <summary>Writes the whole field, ending with CRLF, and returns its length.</summary>
    /// <exception cref="ArgumentException"><paramref name="destination"/> is too small (never when it has <see cref="MaxLength"/> bytes).</exception>
    public static int Write(in ReceivedTrace trace, Span<byte> destination)
    {
        ReadOnlySpan<byte> helo = Truncate(trace.HeloName.IsEmpty ? "unknown"u8 : trace.HeloName, MaxHeloLength);
        ReadOnlySpan<byte> host = Truncate(trace.ClientHostName.IsEmpty ? "unknown"u8 : trace.ClientHostName, MaxHostNameLength);
        ReadOnlySpan<byte> address = Truncate(trace.ClientAddress, MaxAddressLength);
        ReadOnlySpan<byte> by = Truncate(trace.ByHostName.IsEmpty ? "localhost"u8 : trace.ByHostName, MaxHostNameLength);
        ReadOnlySpan<byte> protocol = Truncate(trace.Protocol, MaxProtocolLength);
        ReadOnlySpan<byte> queueId = Truncate(trace.QueueId, MaxQueueIdLength);
        ReadOnlySpan<byte> tls = Truncate(trace.TlsDescription, MaxTlsDescriptionLength);
        ReadOnlySpan<byte> recipient = Truncate(StripAngleBrackets(trace.ForRecipient), MaxRecipientLength);

        // RFC 5321 4.1.3: an IPv6 address literal carries the "IPv6:" tag inside the brackets.
        bool needsIpv6Tag = address.Contains((byte)':') && !address.StartsWith("IPv6:"u8);

        var output = new Cursor(destination);
        output.Append("Received: from "u8);
        output.AppendSanitized(helo, TokenBytes);

        int firstLineLength = "Received: from "u8.Length + helo.Length + " ("u8.Length + host.Length
            + (address.IsEmpty ? 0 : (needsIpv6Tag ? " [IPv6:"u8.Length : " ["u8.Length) + address.Length + "]"u8.Length)
            + ")"u8.Length;
        output.Append(firstLineLength > MaxLineLength ? "\r\n\t("u8 : " ("u8);
        output.AppendSanitized(host, TokenBytes);
        if (!address.IsEmpty)
        {
            output.Append(needsIpv6Tag ? " [IPv6:"u8 : " ["u8);
            output.AppendSanitized(address, TokenBytes);
            output.Append("]"u8);
        }

        output.Append(")\r\n\tby "u8);
        output.AppendSanitized(by, TokenBytes);
        output.Append(" (NativeRelay)"u8);
        if (!protocol.IsEmpty)
        {
            output.Append(" with "u8);
            output.AppendSanitized(protocol, TokenBytes);
        }

        if (!queueId.IsEmpty)
        {
            output.Append(" id "u8);
            output.AppendSanitized(queueId, TokenBytes);
        }

        if (!tls.IsEmpty)
        {
            output.Append("\r\n\t("u8);
            output.AppendSanitized(tls, CommentBytes);
            output.Append(")"u8);
        }

        if (!recipient.IsEmpty)
        {
            output.Append("\r\n\tfor <"u8);
            output.AppendReplacing(recipient, RecipientForbiddenBytes);
            output.Append(">"u8);
        }

        output.Append("; "u8);
        output.AppendDate(trace.Timestamp);
        output.Append("\r\n"u8);
        return output.Written;
    }

    private static ReadOnlySpan<byte> Truncate(ReadOnlySpan<byte> value, int maxLength) =>
        value.Length > maxLength ? value[..maxLength] : value;

    private static ReadOnlySpan<byte> StripAngleBrackets(ReadOnlySpan<byte> address) =>
        address.Length >= 2 && address[0] == (byte)'<' && address[^1] == (byte)'>' ? address[1..^1] : address;

    private ref struct Cursor
    {
        private readonly Span<byte> _destination;

        public Cursor(Span<byte> destination)
        {
            _destination = destination;
            Written = 0;
        }

        public int Written { get; private set; }

        public void Append(ReadOnlySpan<byte> text)
        {
            text.CopyTo(Reserve(text.Length));
            Written += text.Length;
        }

        /// <summary>Copies <paramref name="text"/>, replacing every byte outside <paramref name="allowed"/>.</summary>
        public void AppendSanitized(ReadOnlySpan<byte> text, SearchValues<byte> allowed)
        {
            Span<byte> target = Reserve(text.Length);
            text.CopyTo(target);
            int bad;
            while ((bad = target.IndexOfAnyExcept(allowed)) >= 0)
            {
                target[bad] = Replacement;
                target = target[(bad + 1)..];
            }

            Written += text.Length;
        }

        /// <summary>Copies <paramref name="text"/>, replacing every byte in <paramref name="forbidden"/>.</summary>
        public void AppendReplacing(ReadOnlySpan<byte> text, SearchValues<byte> forbidden)
        {
            Span<byte> target = Reserve(text.Length);
            text.CopyTo(target);
            int bad;
            while ((bad = target.IndexOfAny(forbidden)) >= 0)
            {
                target[bad] = Replacement;
                target = target[(bad + 1)..];
            }

            Written += text.Length;
        }

        public void AppendDate(DateTimeOffset timestamp)
        {
            // Checked at the longest date so the failure is ours; a CRLF always follows, so a
            // destination that fits the whole field never fails here for a shorter date.
            Reserve(Rfc5322Date.MaxLength);
            Written += Rfc5322Date.Write(timestamp, _destination[Written..]);
        }

        private readonly Span<byte> Reserve(int length)
        {
            if (_destination.Length - Written < length)
            {
                throw new ArgumentException("The destination is too small for the Received field.", "destination");
            }

            return _destination.Slice(Written, length);
        }
    }
}
