using System.Text.RegularExpressions;
using NativeRelay.Config;

namespace NativeRelay.Traffic.Bounces;

/// <summary>
/// One compiled classification rule: its codes and status patterns as numbers (-1: any), its
/// text as a <see cref="Regex"/> built once when the rules are loaded, never per reply.
/// </summary>
public sealed class BounceRule
{
    /// <summary>A pathological operator pattern must not stall a delivery loop: after this, the rule does not match.</summary>
    private static readonly TimeSpan MatchTimeout = TimeSpan.FromMilliseconds(50);

    private readonly (int Hundreds, int Tens, int Units)[]? _codes;
    private readonly (int Class, int Subject, int Detail)[]? _statuses;
    private readonly Regex? _text;
    private readonly bool? _local;

    private BounceRule(BounceClass result, (int, int, int)[]? codes, (int, int, int)[]? statuses, Regex? text, bool? local)
    {
        Class = result;
        _codes = codes;
        _statuses = statuses;
        _text = text;
        _local = local;
    }

    public BounceClass Class { get; }

    public static BounceRule Compile(BounceRuleOptions o, string where)
    {
        if (!BounceClassNames.TryParse(o.Class, out var result))
            throw new ConfigException($"{where}: class '{o.Class}' is not one of {string.Join(", ", BounceClassNames.All)}");
        if (o.Code is null && o.Status is null && o.Text is null && o.Local is null)
            throw new ConfigException($"{where}: a rule needs at least one of code, status, text, local");
        (int, int, int)[]? codes = null;
        if (o.Code is not null)
        {
            codes = new (int, int, int)[o.Code.Count];
            for (int i = 0; i < codes.Length; i++)
            {
                var c = o.Code[i].Trim().ToLowerInvariant();
                if (c.Length != 3 || c[0] is not ('2' or '3' or '4' or '5') || !IsDigitOrAny(c[1]) || !IsDigitOrAny(c[2]))
                    throw new ConfigException($"{where}: code '{o.Code[i]}' is not a reply code such as 550, 55x or 4xx");
                codes[i] = (c[0] - '0', Part(c[1]), Part(c[2]));
            }
        }
        (int, int, int)[]? statuses = null;
        if (o.Status is not null)
        {
            statuses = new (int, int, int)[o.Status.Count];
            for (int i = 0; i < statuses.Length; i++)
            {
                var parts = o.Status[i].Trim().Split('.');
                if (parts.Length != 3 || !TryStatusPart(parts[0], 1, out int cls) || cls is 0 or 1 or 3 or > 5
                    || !TryStatusPart(parts[1], 3, out int subject) || !TryStatusPart(parts[2], 3, out int detail))
                    throw new ConfigException($"{where}: status '{o.Status[i]}' is not an enhanced status code such as 5.1.1, x.1.1 or 5.7.*");
                statuses[i] = (cls, subject, detail);
            }
        }
        Regex? text = null;
        if (o.Text is not null)
        {
            try
            {
                text = new Regex(o.Text, RegexOptions.IgnoreCase | RegexOptions.CultureInvariant, MatchTimeout);
            }
            catch (ArgumentException e)
            {
                throw new ConfigException($"{where}: text '{o.Text}' is not a regular expression: {e.Message}");
            }
        }
        return new BounceRule(result, codes, statuses, text, o.Local);
    }

    private static bool IsDigitOrAny(char c) => char.IsAsciiDigit(c) || c == 'x';

    private static int Part(char c) => c == 'x' ? -1 : c - '0';

    private static bool TryStatusPart(string s, int maxDigits, out int value)
    {
        value = -1;
        if (s is "x" or "X" or "*")
            return true;
        if (s.Length == 0 || s.Length > maxDigits)
            return false;
        foreach (char c in s)
            if (!char.IsAsciiDigit(c))
                return false;
        value = int.Parse(s, System.Globalization.CultureInfo.InvariantCulture);
        return true;
    }

    /// <summary>Whether every condition of the rule holds for the reply (status: the enhanced code found in it, or cls 0 when none).</summary>
    internal bool Matches(int code, in EnhancedStatus status, string? text, bool local)
    {
        if (_local is bool l && l != local)
            return false;
        if (_codes is not null)
        {
            bool any = false;
            foreach (var (h, t, u) in _codes)
                if (code / 100 == h && (t < 0 || code / 10 % 10 == t) && (u < 0 || code % 10 == u))
                {
                    any = true;
                    break;
                }
            if (!any)
                return false;
        }
        if (_statuses is not null)
        {
            if (status.Class == 0)
                return false;
            bool any = false;
            foreach (var (c, s, d) in _statuses)
                if ((c < 0 || c == status.Class) && (s < 0 || s == status.Subject) && (d < 0 || d == status.Detail))
                {
                    any = true;
                    break;
                }
            if (!any)
                return false;
        }
        if (_text is not null)
        {
            if (string.IsNullOrEmpty(text))
                return false;
            try
            {
                return _text.IsMatch(text);
            }
            catch (RegexMatchTimeoutException)
            {
                return false;
            }
        }
        return true;
    }
}

/// <summary>An RFC 3463 enhanced status code read from the start of a reply's text; Class 0 when there is none.</summary>
public readonly record struct EnhancedStatus(int Class, int Subject, int Detail)
{
    /// <summary>
    /// The code at the start of the text ("5.1.1 ...", also "#5.1.0 ..." as some servers write it),
    /// whatever its class: "554 4.4.7 Message expired" says 4.4.7.
    /// </summary>
    public static EnhancedStatus Parse(ReadOnlySpan<char> text)
    {
        text = text.TrimStart();
        if (text.Length > 0 && text[0] == '#')
            text = text[1..];
        if (text.Length < 5 || text[0] is not ('2' or '4' or '5') || text[1] != '.')
            return default;
        int i = 2;
        int subject = Number(text, ref i, 3);
        if (subject < 0 || i >= text.Length || text[i] != '.')
            return default;
        i++;
        int detail = Number(text, ref i, 3);
        if (detail < 0 || (i < text.Length && char.IsAsciiDigit(text[i])))
            return default;
        return new EnhancedStatus(text[0] - '0', subject, detail);
    }

    private static int Number(ReadOnlySpan<char> s, ref int i, int maxDigits)
    {
        int start = i, value = 0;
        while (i < s.Length && i - start < maxDigits && char.IsAsciiDigit(s[i]))
            value = value * 10 + (s[i++] - '0');
        return i == start ? -1 : value;
    }

    public override string ToString() => Class == 0 ? "" : $"{Class}.{Subject}.{Detail}";
}
