using System.Text;

namespace NativeRelay.Api;

/// <summary>
/// <c>{{ name }}</c> placeholders (spaces inside the braces optional; a name is letters, digits,
/// '_', '-', '.'). A placeholder with no value is an error for that recipient, never sent blank;
/// "{{" not followed by a name and "}}" is text.
/// </summary>
public static class Substitutions
{
    /// <summary>The text with every placeholder replaced (HTML-escaped when <paramref name="html"/>), or null and the unknown name.</summary>
    public static string? Apply(string? template, IReadOnlyDictionary<string, string>? values, bool html, out string? unknown)
    {
        unknown = null;
        if (template is null)
            return null;
        int open = template.IndexOf("{{", StringComparison.Ordinal);
        if (open < 0)
            return template;
        var result = new StringBuilder(template.Length + 64);
        int copied = 0;
        while (open >= 0)
        {
            if (TryReadPlaceholder(template, open, out var name, out int end))
            {
                if (values is null || !values.TryGetValue(name, out var value))
                {
                    unknown = name;
                    return null;
                }
                result.Append(template, copied, open - copied);
                result.Append(html ? System.Net.WebUtility.HtmlEncode(value) : value);
                copied = end;
                open = template.IndexOf("{{", end, StringComparison.Ordinal);
            }
            else
            {
                open = template.IndexOf("{{", open + 1, StringComparison.Ordinal);
            }
        }
        result.Append(template, copied, template.Length - copied);
        return result.ToString();
    }

    /// <summary>Whether the text has any placeholder at all (then every recipient's copy is built on its own).</summary>
    public static bool HasPlaceholder(string? template)
    {
        if (template is null)
            return false;
        for (int open = template.IndexOf("{{", StringComparison.Ordinal); open >= 0; open = template.IndexOf("{{", open + 1, StringComparison.Ordinal))
            if (TryReadPlaceholder(template, open, out _, out _))
                return true;
        return false;
    }

    private static bool TryReadPlaceholder(string s, int open, out string name, out int end)
    {
        name = "";
        end = 0;
        int i = open + 2;
        while (i < s.Length && s[i] == ' ')
            i++;
        int start = i;
        while (i < s.Length && (char.IsAsciiLetterOrDigit(s[i]) || s[i] is '_' or '-' or '.'))
            i++;
        if (i == start)
            return false;
        name = s[start..i];
        while (i < s.Length && s[i] == ' ')
            i++;
        if (i + 1 >= s.Length || s[i] != '}' || s[i + 1] != '}')
            return false;
        end = i + 2;
        return true;
    }
}
