using System.Text;
using NativeRelay.Telemetry;
using NativeRelay.Traffic.Suppression;

namespace NativeRelay.Tests.Unit;

/// <summary>The suppression list in process: lookups by scope, the journal across reopening, a torn tail, listing, compaction.</summary>
[System.Runtime.Versioning.UnsupportedOSPlatform("windows")]
public sealed class SuppressionListTests : IDisposable
{
    private readonly string _spool = Directory.CreateTempSubdirectory("nr-suppress-").FullName;

    public void Dispose() => Directory.Delete(_spool, recursive: true);

    private static byte[] B(string s) => Encoding.UTF8.GetBytes(s);

    private SuppressionList Open() => SuppressionList.Open(_spool, Log.Null);

    [Fact]
    public void A_global_entry_suppresses_the_address_in_any_case_and_nothing_else()
    {
        using var list = Open();
        Assert.False(list.IsSuppressed(B("gone@example.com"), null, default));
        list.Add(B("Gone@Example.COM"), SuppressionScope.Global, "test");
        Assert.True(list.IsSuppressed(B("gone@example.com"), null, default));
        Assert.True(list.IsSuppressed(B("GONE@EXAMPLE.COM"), "bulk", B("sender.example")));
        Assert.False(list.IsSuppressed(B("gone@example.org"), null, default));
        Assert.False(list.IsSuppressed(B("gone2@example.com"), null, default));
        Assert.Equal(1, list.Count);
        // Adding it again changes nothing.
        Assert.False(list.TryAdd(B("gone@example.com"), SuppressionScope.Global, "again", 0));
        Assert.Equal(1, list.Count);
        Assert.True(list.Remove(B("GONE@example.com"), SuppressionScope.Global));
        Assert.False(list.IsSuppressed(B("gone@example.com"), null, default));
        Assert.False(list.Remove(B("gone@example.com"), SuppressionScope.Global));
    }

    [Fact]
    public void Pool_and_sender_domain_entries_apply_only_to_their_pool_and_domain()
    {
        using var list = Open();
        list.Add(B("a@example.com"), SuppressionScope.Pool("bulk"), "test");
        list.Add(B("b@example.com"), SuppressionScope.Domain("News.Example"), "unsubscribed");
        Assert.True(list.IsSuppressed(B("a@example.com"), "bulk", default));
        Assert.False(list.IsSuppressed(B("a@example.com"), "transactional", default));
        Assert.False(list.IsSuppressed(B("a@example.com"), null, default));
        Assert.True(list.IsSuppressed(B("b@example.com"), null, B("news.example")));
        Assert.True(list.IsSuppressed(B("b@example.com"), "bulk", B("NEWS.example")));
        Assert.False(list.IsSuppressed(B("b@example.com"), null, B("shop.example")));
        Assert.False(list.IsSuppressed(B("b@example.com"), null, default));
        Assert.False(list.Remove(B("a@example.com"), SuppressionScope.Global));
        Assert.True(list.Remove(B("a@example.com"), SuppressionScope.Pool("bulk")));
    }

    [Fact]
    public void Committed_changes_survive_reopening_with_a_new_hash_seed()
    {
        using (var list = Open())
        {
            list.Add(B("one@example.com"), SuppressionScope.Global, "r1");
            list.Add(B("two@example.com"), SuppressionScope.Pool("p"), "r2");
            list.Add(B("three@example.com"), SuppressionScope.Global, "r3");
            Assert.True(list.Remove(B("three@example.com"), SuppressionScope.Global));
            list.Commit();
        }
        using (var list = Open())
        {
            Assert.Equal(2, list.Count);
            Assert.True(list.IsSuppressed(B("one@example.com"), null, default));
            Assert.True(list.IsSuppressed(B("two@example.com"), "p", default));
            Assert.False(list.IsSuppressed(B("three@example.com"), null, default));
            var entries = list.Entries().ToList();
            Assert.Equal(["one@example.com", "two@example.com"], entries.Select(e => e.Address));
            Assert.Equal(["global", "pool:p"], entries.Select(e => e.Scope));
            Assert.Equal("r1", entries[0].Reason);
        }
    }

    [Fact]
    public void A_torn_or_damaged_tail_is_cut_off_and_the_records_before_it_are_kept()
    {
        string journal;
        using (var list = Open())
        {
            list.Add(B("kept@example.com"), SuppressionScope.Global, "r");
            list.Commit();
            journal = list.JournalPath;
        }
        long good = new FileInfo(journal).Length;
        // Half a record (as a crash in the middle of a write leaves it), then garbage.
        using (var f = new FileStream(journal, FileMode.Append))
            f.Write([40, 0, 0, 0, 1, 2, 3, 4, 1, 9, 9]);
        using (var list = Open())
        {
            Assert.True(list.IsSuppressed(B("kept@example.com"), null, default));
            Assert.Equal(good, new FileInfo(journal).Length);
            list.Add(B("after@example.com"), SuppressionScope.Global, "r");
            list.Commit();
        }
        using (var list = Open())
        {
            Assert.Equal(2, list.Count);
            Assert.True(list.IsSuppressed(B("after@example.com"), null, default));
        }
    }

    [Fact]
    public void The_journal_and_its_directory_are_the_relay_users_alone()
    {
        string journal;
        using (var list = Open())
            journal = list.JournalPath;
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(journal));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute, File.GetUnixFileMode(Path.GetDirectoryName(journal)!));
        File.SetUnixFileMode(journal, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead);
        using (Open())
            Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(journal));
    }

    [Fact]
    public void A_file_that_is_not_a_journal_is_refused_and_left_alone()
    {
        Directory.CreateDirectory(Path.Combine(_spool, SuppressionList.DirectoryName));
        string path = Path.Combine(_spool, SuppressionList.DirectoryName, SuppressionList.FileName);
        File.WriteAllText(path, "something else entirely");
        var e = Assert.Throws<IOException>(Open);
        Assert.Contains("not a suppression journal", e.Message);
        Assert.Equal("something else entirely", File.ReadAllText(path));
    }

    [Fact]
    public void A_listing_shows_each_live_entry_once_in_the_order_added_and_can_be_limited_to_a_scope()
    {
        using var list = Open();
        list.Add(B("a@example.com"), SuppressionScope.Global, "1");
        list.Add(B("b@example.com"), SuppressionScope.Global, "2");
        list.Add(B("c@example.com"), SuppressionScope.Pool("x"), "3");
        list.Remove(B("a@example.com"), SuppressionScope.Global);
        list.Add(B("A@example.com"), SuppressionScope.Global, "4");
        list.Remove(B("b@example.com"), SuppressionScope.Global);
        Assert.Equal(["c@example.com", "a@example.com"], list.Entries().Select(e => e.Address));
        Assert.Equal("4", list.Entries().Last().Reason);
        Assert.Equal(["c@example.com"], list.Entries(SuppressionScope.Pool("x")).Select(e => e.Address));
        Assert.Equal(["a@example.com"], list.Entries(SuppressionScope.Global).Select(e => e.Address));
    }

    [Fact]
    public void Compaction_rewrites_the_journal_with_the_live_entries_and_they_survive_reopening()
    {
        long before;
        using (var list = Open())
        {
            for (int i = 0; i < 6000; i++)
                list.Add(B($"u{i}@example.com"), SuppressionScope.Global, "r");
            for (int i = 0; i < 5000; i++)
                Assert.True(list.Remove(B($"u{i}@example.com"), SuppressionScope.Global));
            list.Commit();
            before = list.JournalBytes;
            Assert.True(list.CompactIfWorthIt());
            Assert.True(list.JournalBytes < before / 5, $"{list.JournalBytes} of {before}");
            Assert.False(list.CompactIfWorthIt());
            Assert.Equal(1000, list.Entries().Count());
            Assert.True(list.IsSuppressed(B("u5000@example.com"), null, default));
            // Changes after the compaction land in the new file.
            list.Add(B("late@example.com"), SuppressionScope.Global, "r");
            list.Remove(B("u5001@example.com"), SuppressionScope.Global);
            list.Commit();
        }
        using (var list = Open())
        {
            Assert.Equal(1000, list.Count);
            Assert.True(list.IsSuppressed(B("late@example.com"), null, default));
            Assert.True(list.IsSuppressed(B("u5999@example.com"), null, default));
            Assert.False(list.IsSuppressed(B("u5001@example.com"), null, default));
            Assert.False(list.IsSuppressed(B("u10@example.com"), null, default));
            Assert.Equal(1000, list.Entries().Count());
        }
    }

    [Fact]
    public void A_hundred_thousand_entries_are_all_found_and_others_are_not()
    {
        using var list = Open();
        for (int i = 0; i < 100_000; i++)
            list.TryAdd(B($"user{i}@d{i % 97}.example"), SuppressionScope.Global, "", 0);
        Assert.Equal(100_000, list.Count);
        for (int i = 0; i < 100_000; i++)
            Assert.True(list.IsSuppressed(B($"user{i}@d{i % 97}.example"), null, default));
        int wrong = 0;
        for (int i = 0; i < 100_000; i++)
            if (list.IsSuppressed(B($"user{i}@d{(i + 1) % 97}.example"), null, default))
                wrong++;
        Assert.Equal(0, wrong);
        // 2^18 slots of 16 bytes hold them (at most three quarters full).
        Assert.Equal(1L << 18, list.TableBytes / 16);
    }

    [Fact]
    public void A_lookup_allocates_nothing()
    {
        using var list = Open();
        list.Add(B("x@example.com"), SuppressionScope.Global, "");
        list.Add(B("y@example.com"), SuppressionScope.Pool("bulk"), "");
        list.Add(B("z@example.com"), SuppressionScope.Domain("news.example"), "");
        var hit = B("x@example.com");
        var miss = B("nobody@example.com");
        var domain = B("news.example");
        list.IsSuppressed(miss, "bulk", domain); // the pool's hash is cached on first use
        long before = GC.GetAllocatedBytesForCurrentThread();
        int found = 0;
        for (int i = 0; i < 10_000; i++)
        {
            found += list.IsSuppressed(hit, "bulk", domain) ? 1 : 0;
            found += list.IsSuppressed(miss, "bulk", domain) ? 1 : 0;
        }
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        Assert.Equal(10_000, found);
        Assert.Equal(0, allocated);
    }

    [Theory]
    [InlineData("")]
    [InlineData("has space@example.com")]
    [InlineData("tab\t@example.com")]
    public void A_malformed_address_is_refused(string address)
    {
        using var list = Open();
        Assert.Throws<ArgumentException>(() => list.Add(B(address), SuppressionScope.Global, ""));
        Assert.Equal(0, list.Count);
    }

    [Theory]
    [InlineData("global", "global")]
    [InlineData("", "global")]
    [InlineData("pool:bulk", "pool:bulk")]
    [InlineData("domain:News.Example", "domain:news.example")]
    public void Scopes_parse_from_their_text(string text, string expected)
    {
        Assert.True(SuppressionScope.TryParse(text, out var scope, out _));
        Assert.Equal(expected, scope.ToString());
    }

    [Theory]
    [InlineData("pool:")]
    [InlineData("site:x")]
    [InlineData("pool:a b")]
    public void Wrong_scopes_are_refused_with_a_reason(string text)
    {
        Assert.False(SuppressionScope.TryParse(text, out _, out var error));
        Assert.Contains("global, pool:NAME or domain:SENDERDOMAIN", error);
    }
}
