using System.CommandLine;
using System.CommandLine.Help;
using NativeRelay.Cli;

namespace NativeRelay.Tests.Unit;

/// <summary>
/// The command tree every verb adds itself to (<see cref="Verbs.Root"/>): whatever a new flag or
/// verb is, its --help says what it is and it parses in both forms.
/// </summary>
public class CliTreeTests
{
    private static IEnumerable<Command> AllCommands(Command command) =>
        new[] { command }.Concat(command.Subcommands.SelectMany(AllCommands));

    [Fact]
    public void Every_verb_subcommand_flag_and_argument_is_described()
    {
        var root = Verbs.Root();
        Assert.Equal(["serve", "check-config", "sendmail", "passwd", "blast", "sink", "bench", "queue", "suppress", "traffic", "cluster", "dkim", "token", "tls-rpt"], root.Subcommands.Select(c => c.Name));
        foreach (var command in AllCommands(root).Skip(1))
        {
            Assert.False(string.IsNullOrWhiteSpace(command.Description), $"{Usage.Path(command)} has no description");
            Assert.DoesNotContain('\n', command.Description!);
            foreach (var option in command.Options.Where(o => o is not HelpOption))
                Assert.False(string.IsNullOrWhiteSpace(option.Description), $"{Usage.Path(command)} {option.Name} has no description");
            foreach (var argument in command.Arguments)
                Assert.False(string.IsNullOrWhiteSpace(argument.Description), $"{Usage.Path(command)} {argument.Name} has no description");
        }
    }

    [Fact]
    public void Every_flag_with_a_value_takes_it_in_both_forms()
    {
        foreach (var command in AllCommands(Verbs.Root()).Skip(1).Where(c => c.Name != "sendmail"))
        {
            foreach (var option in command.Options.Where(o => o.Name.StartsWith("--", StringComparison.Ordinal) && o.Arity.MaximumNumberOfValues > 0))
            {
                var path = Usage.Path(command).Split(' ');
                var spaced = Entry.Parse([.. path, option.Name, "x"]);
                var joined = Entry.Parse([.. path, option.Name + "=x"]);
                Assert.True(spaced.GetResult(option) is not null, $"{string.Join(' ', path)} {option.Name} x: {string.Join("; ", spaced.Errors.Select(e => e.Message))}");
                Assert.Equal(["x"], spaced.GetResult(option)!.Tokens.Select(t => t.Value));
                Assert.Equal(["x"], joined.GetResult(option)!.Tokens.Select(t => t.Value));
            }
        }
    }
}
