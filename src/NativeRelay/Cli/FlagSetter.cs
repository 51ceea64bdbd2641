using System.CommandLine;

namespace NativeRelay.Cli;

/// <summary>
/// A flag and what it sets in a verb's options (<typeparamref name="TTarget"/>) when it is given:
/// a verb lists its flags as an array of these, so a flag is declared, described and applied in
/// one entry. A flag not given leaves the target as it was (its default, or the configuration file's value).
/// </summary>
internal abstract class FlagSetter<TTarget>
{
    public abstract Option Option { get; }

    public abstract void ApplyIfGiven(ParseResult result, TTarget target);

    public static FlagSetter<TTarget> Of<T>(Option<T> option, Action<TTarget, T> apply) => new Typed<T>(option, apply);

    /// <summary>Adds every flag to the command, in order (the order of --help).</summary>
    public static void AddAll(Command command, IEnumerable<FlagSetter<TTarget>> flags)
    {
        foreach (var flag in flags)
            command.Options.Add(flag.Option);
    }

    /// <summary>Applies every flag given, in order.</summary>
    public static TTarget ApplyAll(ParseResult result, IEnumerable<FlagSetter<TTarget>> flags, TTarget target)
    {
        foreach (var flag in flags)
            flag.ApplyIfGiven(result, target);
        return target;
    }

    private sealed class Typed<T>(Option<T> option, Action<TTarget, T> apply) : FlagSetter<TTarget>
    {
        public override Option Option => option;

        public override void ApplyIfGiven(ParseResult result, TTarget target)
        {
            if (result.GetResult(option) is { Implicit: false })
                apply(target, result.GetValue(option)!);
        }
    }
}
