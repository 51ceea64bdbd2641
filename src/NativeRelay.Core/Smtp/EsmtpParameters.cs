using System.Buffers;
using System.Text;
using System.Text.Unicode;

namespace NativeRelay.Smtp;

/// <summary>One ESMTP parameter as yielded by <see cref="EsmtpParameters"/>: spans into the command line.</summary>
public readonly ref struct EsmtpParameter
{
    public EsmtpParameter(ReadOnlySpan<byte> keyword, ReadOnlySpan<byte> value)
    {
        Keyword = keyword;
        Value = value;
    }

    public ReadOnlySpan<byte> Keyword { get; }

    /// <summary>Empty when the parameter has no "=value".</summary>
    public ReadOnlySpan<byte> Value { get; }
}

/// <summary>
/// Enumerates the ESMTP parameters of MAIL / RCPT (RFC 5321 4.1.2): <c>esmtp-param *(SP esmtp-param)</c>,
/// <c>esmtp-param = esmtp-keyword ["=" esmtp-value]</c>, without allocating.
/// </summary>
/// <remarks>
/// <para>Grammar enforced: keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-"); value = 1*(%d33-60 / %d62-126), so "=x",
/// "KEY=", "KEY=a=b" and control characters are malformed. Runs of several SP between parameters are tolerated.
/// Octets >= 0x80 in a value are allowed only when constructed with <c>allowUtf8</c> (RFC 6531 3.3 extends esmtp-value
/// under SMTPUTF8); keywords are always ASCII.</para>
/// <para>Use a <c>while (parameters.MoveNext())</c> loop when the caller must tell "ended" from "malformed": a
/// <c>foreach</c> enumerates a COPY of this struct, so <see cref="IsMalformed"/> on the original is never set by it.
/// <c>foreach</c> is fine after <see cref="IsWellFormed"/> has checked the whole list.</para>
/// <para><see cref="Current"/> returns a fresh <see cref="EsmtpParameter"/> holding the same spans as
/// <see cref="Keyword"/> / <see cref="Value"/>.</para>
/// </remarks>
public ref struct EsmtpParameters
{
    private const byte Space = (byte)' ';
    private const byte EqualsSign = (byte)'=';

    // RFC 1870: size-value = 1*20DIGIT. Twenty digits can exceed long.MaxValue, hence the explicit overflow check.
    private const int MaxSizeDigits = 20;

    private static readonly SearchValues<byte> KeywordCharacters =
        SearchValues.Create("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-"u8);

    // RFC 5321 esmtp-value = 1*(%d33-60 / %d62-126): printable ASCII except '='.
    private static readonly SearchValues<byte> ValueCharacters = CreateValueCharacters(withNonAscii: false);
    private static readonly SearchValues<byte> ValueCharactersOrNonAscii = CreateValueCharacters(withNonAscii: true);

    private ReadOnlySpan<byte> _remaining;
    private readonly bool _allowUtf8;

    public EsmtpParameters(ReadOnlySpan<byte> parameters)
        : this(parameters, allowUtf8: false)
    {
    }

    /// <param name="parameters">The raw parameter text (from <see cref="MailboxPath.Parse"/>).</param>
    /// <param name="allowUtf8">The client asked for SMTPUTF8, so values may carry UTF-8 octets.</param>
    public EsmtpParameters(ReadOnlySpan<byte> parameters, bool allowUtf8)
    {
        _remaining = parameters;
        _allowUtf8 = allowUtf8;
        Keyword = default;
        Value = default;
        IsMalformed = false;
    }

    public ReadOnlySpan<byte> Keyword { get; private set; }

    /// <summary>Empty if the parameter had no '='.</summary>
    public ReadOnlySpan<byte> Value { get; private set; }

    /// <summary>Set when <see cref="MoveNext"/> stopped on a syntax error rather than at the end.</summary>
    public bool IsMalformed { get; private set; }

    public readonly EsmtpParameter Current => new(Keyword, Value);

    public readonly EsmtpParameters GetEnumerator() => this;

    /// <summary>Advances to the next parameter.</summary>
    /// <returns>False at the end, or on a syntax error (then <see cref="IsMalformed"/> is true and stays true).</returns>
    public bool MoveNext()
    {
        if (IsMalformed)
        {
            return false;
        }

        _remaining = _remaining.TrimStart(Space);
        if (_remaining.IsEmpty)
        {
            Keyword = default;
            Value = default;
            return false;
        }

        int end = _remaining.IndexOf(Space);
        ReadOnlySpan<byte> token = end < 0 ? _remaining : _remaining[..end];
        _remaining = end < 0 ? default : _remaining[end..];

        int equals = token.IndexOf(EqualsSign);
        ReadOnlySpan<byte> keyword = equals < 0 ? token : token[..equals];
        ReadOnlySpan<byte> value = equals < 0 ? default : token[(equals + 1)..];

        if (!IsValidKeyword(keyword) || (equals >= 0 && !IsValidValue(value, _allowUtf8)))
        {
            IsMalformed = true;
            Keyword = default;
            Value = default;
            _remaining = default;
            return false;
        }

        Keyword = keyword;
        Value = value;
        return true;
    }

    /// <summary>True when every parameter in <paramref name="parameters"/> is well formed.</summary>
    public static bool IsWellFormed(ReadOnlySpan<byte> parameters, bool allowUtf8 = false)
    {
        var enumerator = new EsmtpParameters(parameters, allowUtf8);
        while (enumerator.MoveNext())
        {
        }

        return !enumerator.IsMalformed;
    }

    /// <summary>Case-insensitive keyword comparison (ESMTP keywords are case-insensitive, RFC 5321 2.4).</summary>
    /// <param name="keyword">As received.</param>
    /// <param name="asciiUpper">The expected keyword, e.g. "SIZE"u8; any ASCII case works, upper case is the convention.</param>
    public static bool KeywordEquals(ReadOnlySpan<byte> keyword, ReadOnlySpan<byte> asciiUpper) =>
        Ascii.EqualsIgnoreCase(keyword, asciiUpper);

    /// <summary>Parses the value of SIZE (RFC 1870: <c>1*20DIGIT</c>).</summary>
    /// <returns>False for an empty value, any non-digit (signs included), more than 20 digits, or a value above
    /// <see cref="long.MaxValue"/>.</returns>
    public static bool TryParseSize(ReadOnlySpan<byte> value, out long size)
    {
        size = 0;
        if (value.IsEmpty || value.Length > MaxSizeDigits)
        {
            return false;
        }

        long result = 0;
        foreach (byte b in value)
        {
            uint digit = (uint)(b - '0');
            if (digit > 9 || result > (long.MaxValue - digit) / 10)
            {
                return false;
            }

            result = (result * 10) + digit;
        }

        size = result;
        return true;
    }

    /// <summary>
    /// Decodes xtext (RFC 3461 4: ENVID, ORCPT, and AUTH= of RFC 4954): printable ASCII except '+' and '=' stands for
    /// itself, "+XX" for the octet with hex value XX.
    /// </summary>
    /// <remarks>
    /// Lower-case hex digits are accepted although RFC 3461 asks senders for upper case: rejecting them would fail mail
    /// for no safety gain. The decoded octets may be anything, CR and LF included; never write them into a header or a
    /// reply without re-encoding.
    /// </remarks>
    /// <returns><see cref="OperationStatus.Done"/>; <see cref="OperationStatus.InvalidData"/> for a character outside
    /// xtext, a raw '=', or a '+' not followed by two hex digits; <see cref="OperationStatus.DestinationTooSmall"/> when
    /// <paramref name="destination"/> is full (<paramref name="written"/> then counts what fit). A destination as long
    /// as <paramref name="xtext"/> always suffices.</returns>
    public static OperationStatus DecodeXtext(ReadOnlySpan<byte> xtext, Span<byte> destination, out int written)
    {
        written = 0;
        int i = 0;
        while (i < xtext.Length)
        {
            byte c = xtext[i];
            byte decoded;
            if (c == (byte)'+')
            {
                if (i + 2 >= xtext.Length)
                {
                    return OperationStatus.InvalidData;
                }

                int high = HexValue(xtext[i + 1]);
                int low = HexValue(xtext[i + 2]);
                if ((high | low) < 0)
                {
                    return OperationStatus.InvalidData;
                }

                decoded = (byte)((high << 4) | low);
                i += 3;
            }
            else if (c is >= 33 and <= 126 && c != EqualsSign)
            {
                decoded = c;
                i++;
            }
            else
            {
                return OperationStatus.InvalidData;
            }

            if (written == destination.Length)
            {
                return OperationStatus.DestinationTooSmall;
            }

            destination[written++] = decoded;
        }

        return OperationStatus.Done;
    }

    private static int HexValue(byte c) => c switch
    {
        >= (byte)'0' and <= (byte)'9' => c - '0',
        >= (byte)'A' and <= (byte)'F' => c - 'A' + 10,
        >= (byte)'a' and <= (byte)'f' => c - 'a' + 10,
        _ => -1,
    };

    private static bool IsValidKeyword(ReadOnlySpan<byte> keyword) =>
        !keyword.IsEmpty
        && keyword[0] != (byte)'-'
        && !keyword.ContainsAnyExcept(KeywordCharacters);

    private static bool IsValidValue(ReadOnlySpan<byte> value, bool allowUtf8)
    {
        if (value.IsEmpty)
        {
            return false;
        }

        if (!value.ContainsAnyExcept(ValueCharacters))
        {
            return true;
        }

        // Only octets >= 0x80 may remain, and only under SMTPUTF8 as well-formed UTF-8.
        return allowUtf8 && !value.ContainsAnyExcept(ValueCharactersOrNonAscii) && Utf8.IsValid(value);
    }

    private static SearchValues<byte> CreateValueCharacters(bool withNonAscii)
    {
        // Runs once per set at type initialisation.
        var values = new List<byte>(256);
        for (int b = 33; b <= 255; b++)
        {
            if ((b <= 126 && b != EqualsSign) || (b >= 0x80 && withNonAscii))
            {
                values.Add((byte)b);
            }
        }

        return SearchValues.Create(values.ToArray());
    }
}
