using System.CommandLine;
using System.CommandLine.Parsing;
using NativeRelay.Config;

namespace NativeRelay.Cli;

/// <summary>
/// Makes the flags of the verbs, all alike: <c>--flag VALUE</c> or <c>--flag=VALUE</c>, the value
/// checked by a parser that throws <see cref="ConfigException"/> (its message becomes the usage
/// error), the default written into the description as <c>[default: X]</c> for --help. The
/// default is only shown: a flag not given has no value (<see cref="ValueOr"/>), so a verb can
/// tell "not given" from "given the default" (serve: the configuration file decides then).
/// </summary>
internal static class Flags
{
    /// <summary>
    /// A flag with one value, turned into a <typeparamref name="T"/> by <paramref name="parse"/>
    /// (given the flag's name and the text). Given twice, the last one wins.
    /// </summary>
    public static Option<T> Value<T>(string name, string valueName, string description, Func<string, string, T> parse, object? shown = null,
        params string[] aliases) =>
        new(name, aliases)
        {
            HelpName = valueName,
            Description = Describe(description, shown),
            Arity = ArgumentArity.OneOrMore,
            AllowMultipleArgumentsPerToken = false,
            CustomParser = result => Parse(result, name, (flag, text) => parse(flag, NotAFlag(flag, text))),
        };

    /// <summary>A flag with one value taken as it is.</summary>
    public static Option<string> Text(string name, string valueName, string description, object? shown = null) =>
        Value(name, valueName, description, static (_, text) => text, shown);

    /// <summary>A flag that may be given more than once (<c>--listen A --listen B</c>); every value is parsed.</summary>
    public static Option<string[]> Repeatable(string name, string valueName, string description, Action<string, string>? check = null,
        object? shown = null) =>
        new(name)
        {
            HelpName = valueName,
            Description = Describe(description + " (repeatable)", shown),
            Arity = ArgumentArity.OneOrMore,
            AllowMultipleArgumentsPerToken = false,
            CustomParser = result =>
            {
                var values = new string[result.Tokens.Count];
                for (int i = 0; i < values.Length; i++)
                {
                    values[i] = result.Tokens[i].Value;
                    try
                    {
                        NotAFlag(name, values[i]);
                        check?.Invoke(name, values[i]);
                    }
                    catch (ConfigException e)
                    {
                        result.AddError(e.Message);
                    }
                }
                return values;
            },
        };

    /// <summary>A flag without a value: present or not.</summary>
    public static Option<bool> Switch(string name, string description, params string[] aliases) =>
        new(name, aliases)
        {
            Description = description,
            Arity = ArgumentArity.Zero,
        };

    /// <summary>Offers these words to shell completion.</summary>
    public static Option<T> Completing<T>(this Option<T> option, params string[] words)
    {
        option.CompletionSources.Add(words);
        return option;
    }

    /// <summary>The flag's value when given, else <paramref name="fallback"/>.</summary>
    public static T ValueOr<T>(this ParseResult result, Option<T> option, T fallback) =>
        result.GetResult(option) is { Implicit: false } ? result.GetValue(option)! : fallback;

    /// <summary>The flag's value when given, else null.</summary>
    public static T? ValueOrNull<T>(this ParseResult result, Option<T> option) where T : class =>
        result.GetResult(option) is { Implicit: false } ? result.GetValue(option) : null;

    /// <summary>
    /// An argument (not a flag) checked by <paramref name="parse"/>. A word starting with '-' is
    /// an unknown flag, not the argument (System.CommandLine would take it as the argument).
    /// </summary>
    public static Argument<T> Argument<T>(string name, string description, Func<string, string, T> parse, bool optional = false) =>
        new(name)
        {
            Description = description,
            Arity = optional ? ArgumentArity.ZeroOrOne : ArgumentArity.ExactlyOne,
            CustomParser = result => Parse(result, name, (argument, text) =>
                text.Length > 1 && text[0] == '-' ? throw new ConfigException($"unknown flag '{text}'") : parse(argument, text)),
        };

    // "--spool --bogus": System.CommandLine would take an unknown flag as the value; the old parser said "needs a value", and so do these.
    private static string NotAFlag(string flag, string text) =>
        text.StartsWith("--", StringComparison.Ordinal) ? throw new ConfigException($"{flag} needs a value (got the flag '{text}')") : text;

    public static string Describe(string description, object? shown) =>
        shown is null ? description : $"{description} [default: {shown}]";

    private static T Parse<T>(ArgumentResult result, string name, Func<string, string, T> parse)
    {
        if (result.Tokens.Count == 0)
            return default!;
        try
        {
            return parse(name, result.Tokens[^1].Value);
        }
        catch (ConfigException e)
        {
            result.AddError(e.Message);
            return default!;
        }
    }
}
