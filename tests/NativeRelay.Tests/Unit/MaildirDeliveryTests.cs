using System.Text;
using NativeRelay.Config;
using NativeRelay.Local;
using NativeRelay.Tests.Support;
using static NativeRelay.Tests.Support.LocalDeliveryFixtures;

namespace NativeRelay.Tests.Unit;

/// <summary>Maildir delivery on real directories: one whole file in new/, trace headers on top, LF line ends.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class MaildirDeliveryTests : IDisposable
{
    private readonly TempDir _dir = new("nativerelay-maildir");

    private string Root => _dir.File("mail");

    private LocalDomainOptions Domain(Action<LocalDomainOptions>? change = null)
    {
        var d = new LocalDomainOptions { Domain = "local.test", MaildirRoot = Root };
        change?.Invoke(d);
        return d;
    }

    private const string Message =
        "From: Sender <sender@example.test>\r\nTo: alice@local.test\r\nSubject: hello\r\n\r\nfirst line\r\n.dot line\r\nlast line\r\n";

    [Fact]
    public async Task Delivers_one_file_into_new_with_return_path_and_delivered_to_and_lf_line_ends()
    {
        var agent = Agent(null, Domain());
        var envelope = Envelope("sender@example.test", "Alice@Local.Test");
        var body = Buffer(Message);

        var results = await agent.DeliverAsync(envelope, body, [0]);

        var result = Assert.Single(results);
        Assert.True(result.Reply.Code == 250, result.ToString());
        string maildir = Path.Combine(Root, "alice");
        var file = Assert.Single(Files(maildir, "new"));
        Assert.Empty(Files(maildir, "tmp"));
        Assert.Empty(Files(maildir, "cur"));
        Assert.Contains(file, result.Detail);
        string expected = "Return-Path: <sender@example.test>\nDelivered-To: alice@local.test\n" + Message.Replace("\r\n", "\n");
        Assert.Equal(expected, File.ReadAllText(file, Encoding.Latin1));
        // Maildir unique name: seconds.M<usec>P<pid>Q<n>.<host>
        Assert.Matches(@"^\d+\.M\d+P" + Environment.ProcessId + @"Q\d+\.mx\.local\.test$", Path.GetFileName(file));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(file));
        foreach (var sub in new[] { "", "tmp", "new", "cur" })
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.Combine(maildir, sub)));
        body.Release();
    }

    [Fact]
    public async Task The_file_is_never_written_in_new_only_moved_there_whole()
    {
        string maildir = Path.Combine(Root, "bob");
        MaildirWriter.EnsureMaildir(maildir);
        var events = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var watcher = new FileSystemWatcher(Path.Combine(maildir, "new"));
        watcher.NotifyFilter = NotifyFilters.FileName | NotifyFilters.Size;
        watcher.Created += (_, e) => events.Enqueue("created " + e.Name);
        watcher.Changed += (_, e) => events.Enqueue("changed " + e.Name);
        watcher.Renamed += (_, e) => events.Enqueue("renamed " + e.Name);
        watcher.EnableRaisingEvents = true;
        var tmpEvents = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var tmpWatcher = new FileSystemWatcher(Path.Combine(maildir, "tmp"));
        tmpWatcher.NotifyFilter = NotifyFilters.FileName | NotifyFilters.Size;
        tmpWatcher.Changed += (_, e) => tmpEvents.Enqueue("changed " + e.Name);
        tmpWatcher.Created += (_, e) => tmpEvents.Enqueue("created " + e.Name);
        tmpWatcher.EnableRaisingEvents = true;

        var agent = Agent(null, Domain());
        // Large enough to take several writes (the message crosses many pool blocks).
        var big = new StringBuilder("Subject: big\r\n\r\n");
        for (int i = 0; i < 20_000; i++)
            big.Append("line ").Append(i).Append(" of a large message to be written in pieces\r\n");
        var body = Buffer(big.ToString());
        var result = Assert.Single(await agent.DeliverAsync(Envelope("s@example.test", "bob@local.test"), body, [0]));
        Assert.Equal(250, result.Reply.Code);
        var file = Assert.Single(Files(maildir, "new"));
        string name = Path.GetFileName(file);

        // The writes happened in tmp/ under the same name; new/ only ever saw the name appear.
        await WaitUntil(() => events.Contains("created " + name) && tmpEvents.Contains("created " + name), "watcher events");
        Assert.DoesNotContain(events, e => e.StartsWith("changed"));
        Assert.Contains(tmpEvents, e => e == "changed " + name);
        Assert.Equal(big.ToString().Replace("\r\n", "\n").Length + "Return-Path: <s@example.test>\nDelivered-To: bob@local.test\n".Length,
            new FileInfo(file).Length);
        body.Release();
    }

    [Fact]
    public async Task Many_deliveries_at_once_get_distinct_names()
    {
        var agent = Agent(null, Domain());
        var tasks = Enumerable.Range(0, 40).Select(i => Task.Run(async () =>
        {
            var body = Buffer($"Subject: {i}\r\n\r\nbody {i}\r\n");
            var r = await agent.DeliverAsync(Envelope("s@example.test", "carol@local.test"), body, [0]);
            body.Release();
            return r[0];
        })).ToArray();
        var results = await Task.WhenAll(tasks);

        Assert.All(results, r => Assert.Equal(250, r.Reply.Code));
        var files = Files(Path.Combine(Root, "carol"), "new");
        Assert.Equal(40, files.Length);
        var subjects = files.Select(f => File.ReadAllLines(f).First(l => l.StartsWith("Subject: "))).ToHashSet();
        Assert.Equal(40, subjects.Count);
    }

    [Fact]
    public async Task Each_recipient_gets_its_own_delivered_to_and_a_mailbox_reached_twice_gets_one_copy()
    {
        var agent = Agent(null, Domain(d => d.RecipientDelimiter = "+"));
        var envelope = Envelope("", "alice@local.test", "bob@local.test", "alice+lists@local.test");
        var body = Buffer(Message);

        var results = await agent.DeliverAsync(envelope, body, All(envelope));

        Assert.All(results, r => Assert.True(r.Reply.Code == 250, r.ToString()));
        Assert.Equal([0, 1, 2], results.Select(r => r.RecipientIndex));
        var alice = Assert.Single(Files(Path.Combine(Root, "alice"), "new"));
        var bob = Assert.Single(Files(Path.Combine(Root, "bob"), "new"));
        Assert.StartsWith("Return-Path: <>\nDelivered-To: alice@local.test\nFrom:", File.ReadAllText(alice));
        Assert.StartsWith("Return-Path: <>\nDelivered-To: bob@local.test\nFrom:", File.ReadAllText(bob));
        body.Release();
    }

    [Fact]
    public async Task A_message_that_was_already_delivered_here_is_refused_as_a_loop()
    {
        var agent = Agent(null, Domain());
        var body = Buffer("Delivered-To: alice@local.test\r\nSubject: again\r\n\r\nbody\r\n");

        var result = Assert.Single(await agent.DeliverAsync(Envelope("s@example.test", "alice@local.test"), body, [0]));

        Assert.Equal(554, result.Reply.Code);
        Assert.Contains("5.4.6", result.Reply.Text);
        Assert.Empty(Files(Path.Combine(Root, "alice"), "new"));
        body.Release();
    }

    [Theory]
    [InlineData("../escape@local.test")]
    [InlineData(".hidden@local.test")]
    [InlineData("a/b@local.test")]
    [InlineData("\"quoted name\"@local.test")]
    public async Task A_user_name_that_cannot_be_a_directory_is_refused(string recipient)
    {
        var agent = Agent(null, Domain());
        var body = Buffer(Message);

        var result = Assert.Single(await agent.DeliverAsync(Envelope("s@example.test", recipient), body, [0]));

        Assert.Equal(553, result.Reply.Code);
        Assert.False(Directory.Exists(_dir.File("escape")));
        Assert.Empty(Directory.Exists(Root) ? Directory.GetDirectories(Root) : []);
        body.Release();
    }

    [Fact]
    public async Task With_a_user_list_unknown_users_go_to_the_catch_all_or_are_refused_without_one()
    {
        var withCatchAll = Agent(null, Domain(d => { d.Users = ["alice", "postmaster"]; d.CatchAll = "postmaster"; }));
        var body = Buffer(Message);
        var r1 = Assert.Single(await withCatchAll.DeliverAsync(Envelope("s@example.test", "nobody@local.test"), body, [0]));
        Assert.Equal(250, r1.Reply.Code);
        var caught = Assert.Single(Files(Path.Combine(Root, "postmaster"), "new"));
        Assert.Contains("Delivered-To: postmaster@local.test\n", File.ReadAllText(caught));
        Assert.False(Directory.Exists(Path.Combine(Root, "nobody")));

        var strict = Agent(null, Domain(d => d.Users = ["alice"]));
        var r2 = Assert.Single(await strict.DeliverAsync(Envelope("s@example.test", "nobody@local.test"), body, [0]));
        Assert.Equal(550, r2.Reply.Code);
        Assert.Contains("5.1.1", r2.Reply.Text);
        body.Release();
    }

    [Fact]
    public async Task A_maildir_that_cannot_be_written_is_a_temporary_failure_and_leaves_nothing_in_new()
    {
        Directory.CreateDirectory(Path.Combine(Root, "dave"));
        File.WriteAllText(Path.Combine(Root, "dave", "tmp"), "a file where tmp/ should be");
        var agent = Agent(null, Domain());
        var body = Buffer(Message);

        var result = Assert.Single(await agent.DeliverAsync(Envelope("s@example.test", "dave@local.test"), body, [0]));

        Assert.Equal(451, result.Reply.Code);
        Assert.Contains("4.3.0", result.Reply.Text);
        Assert.Empty(Files(Path.Combine(Root, "dave"), "new"));
        body.Release();
    }

    [Fact]
    public void Crlf_split_across_writes_still_becomes_one_lf_and_a_lone_cr_stays()
    {
        string maildir = _dir.File("direct");
        var writer = new MaildirWriter("host/with:odd");
        // The CR of a CRLF ends the prefix and its LF starts the body: it must still become one LF.
        var body = Buffer("\nline\rwith lone CR\r\n");
        string file = writer.Deliver(maildir, "X-Test: 1\r"u8, body);
        Assert.Equal("X-Test: 1\nline\rwith lone CR\n", File.ReadAllText(file, Encoding.Latin1));
        Assert.EndsWith(".host\\057with\\072odd", file);
        body.Release();
    }

    private static async Task WaitUntil(Func<bool> condition, string what)
    {
        for (int i = 0; i < 200 && !condition(); i++)
            await Task.Delay(50);
        Assert.True(condition(), "timed out waiting for " + what);
    }

    public void Dispose() => _dir.Dispose();
}
