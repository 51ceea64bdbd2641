using System.Text;
using NativeRelay.Api;
using NativeRelay.Config;
using NativeRelay.Message;
using NativeRelay.Spool;
using NativeRelay.Tests.Support;

namespace NativeRelay.Tests.Unit.Api;

/// <summary>The HTTP API's pieces that need no server: substitutions, the tokens file, unsubscribe links, the idempotency journal, the spool codec's injection part.</summary>
public sealed class ApiPartsTests
{
    [Fact]
    public void Substitutions_replace_placeholders_escape_html_and_name_an_unknown_one()
    {
        var values = new Dictionary<string, string> { ["first"] = "Ann", ["x"] = "<b>&\"" };
        Assert.Equal("Hi Ann, Ann!", Substitutions.Apply("Hi {{ first }}, {{first}}!", values, html: false, out var unknown));
        Assert.Null(unknown);
        Assert.Equal("&lt;b&gt;&amp;&quot;", Substitutions.Apply("{{ x }}", values, html: true, out _));
        Assert.Equal("<b>&\"", Substitutions.Apply("{{ x }}", values, html: false, out _));
        Assert.Null(Substitutions.Apply("Hi {{ last }}", values, html: false, out unknown));
        Assert.Equal("last", unknown);
        // Not placeholders: text as it is.
        Assert.Equal("{{ }} {{a b}} {{", Substitutions.Apply("{{ }} {{a b}} {{", values, html: false, out unknown));
        Assert.Null(unknown);
        Assert.Equal("a {{ first", Substitutions.Apply("a {{ first", values, html: false, out _));
    }

    [Fact]
    public void A_created_token_is_found_by_its_value_only_and_the_file_holds_only_its_hash()
    {
        using var dir = new TempDir("nativerelay-api-unit");
        var (token, line) = TokenStore.Create("news", ["news", "promo"], ["example.com", ".example.org"], 5);
        Assert.DoesNotContain(token, line);
        Assert.StartsWith("news:$sha256$", line);
        File.WriteAllText(dir.File("tokens"), "# comment\n" + line + "\n");
        var store = TokenStore.Load(dir.File("tokens"));
        var found = store.Find(token);
        Assert.NotNull(found);
        Assert.Equal("news", found.Name);
        Assert.Equal(5, found.RequestsPerSecond);
        Assert.True(found.MayUsePool("Promo"));
        Assert.False(found.MayUsePool("other"));
        Assert.True(found.MaySendAs("example.com"));
        Assert.True(found.MaySendAs("mail.example.org"));
        Assert.False(found.MaySendAs("example.net"));
        Assert.False(found.MaySendAs("badexample.com"));
        Assert.Null(store.Find(token[..^1] + (token[^1] == 'A' ? 'B' : 'A')));
        Assert.Null(store.Find("not-a-token"));

        File.WriteAllText(dir.File("bad"), "news:$sha256$00 pools=a\n");
        var e = Assert.Throws<ConfigException>(() => TokenStore.Load(dir.File("bad")));
        Assert.Contains("line 1", e.Message);
        File.WriteAllText(dir.File("twice"), line + "\n" + line + "\n");
        Assert.Contains("appears twice", Assert.Throws<ConfigException>(() => TokenStore.Load(dir.File("twice"))).Message);
    }

    [Fact]
    public void Unsubscribe_links_verify_only_unaltered_and_unexpired()
    {
        var settings = new UnsubscribeSettings(["news"], new Uri("https://relay.test"), "u@example.com", "/dev/null", false, TimeSpan.FromDays(2));
        var links = new UnsubscribeLinks(Enumerable.Range(0, 32).Select(i => (byte)i).ToArray(), settings);
        var other = new UnsubscribeLinks(Enumerable.Range(1, 32).Select(i => (byte)i).ToArray(), settings);
        var now = DateTimeOffset.UtcNow;
        var token = links.CreateToken("ann@example.org", "example.com", "news", now);

        Assert.True(links.TryVerify(token, now, out var recipient, out var domain, out var list));
        Assert.Equal(("ann@example.org", "example.com", "news"), (recipient, domain, list));
        Assert.False(other.TryVerify(token, now, out _, out _, out _)); // another key
        Assert.False(links.TryVerify(token, now.AddDays(3), out _, out _, out _)); // expired
        var flipped = token[..5] + (token[5] == 'A' ? 'B' : 'A') + token[6..];
        Assert.False(links.TryVerify(flipped, now, out _, out _, out _));
        Assert.False(links.TryVerify(token[..^2], now, out _, out _, out _));
        Assert.False(links.TryVerify("garbage", now, out _, out _, out _));

        var fields = links.HeaderFields("ann@example.org", "example.com", "news", now);
        Assert.Matches(@"^List-Unsubscribe: <https://relay\.test/u/[^>]+>,\r\n <mailto:u@example\.com\?subject=unsubscribe>\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n$", fields);
    }

    [Fact]
    public async Task The_idempotency_journal_answers_again_after_a_reopen_and_forgets_after_a_day()
    {
        using var dir = new TempDir("nativerelay-api-unit");
        var now = DateTimeOffset.UtcNow;
        var journal = IdempotencyJournal.Open(dir.Path, now);
        Assert.Null(await journal.BeginAsync("t", "k", now));
        // A second request with the key while the first runs waits for its answer.
        var waiting = journal.BeginAsync("t", "k", now);
        Assert.False(waiting.IsCompleted);
        journal.Complete("t", "k", new IdempotencyRecord { Token = "t", Key = "k", AtUnixMs = now.ToUnixTimeMilliseconds(), Status = 202, Body = "{\"a\":1}" });
        Assert.Equal("{\"a\":1}", (await waiting)!.Body);
        Assert.Null(await journal.BeginAsync("other", "k", now)); // per token
        journal.Complete("other", "k", null);

        var reopened = IdempotencyJournal.Open(dir.Path, now);
        Assert.Equal(202, (await reopened.BeginAsync("t", "k", now))!.Status);
        var later = IdempotencyJournal.Open(dir.Path, now.AddDays(1).AddMinutes(1));
        Assert.Equal(0, later.Count);
        Assert.Null(await later.BeginAsync("t", "k", now.AddDays(1).AddMinutes(1)));
    }

    [Fact]
    public void A_head_record_without_the_injection_part_is_byte_for_byte_the_old_format()
    {
        var envelope = new Envelope { Sender = "a@b"u8.ToArray(), Recipients = ["c@d"u8.ToArray()], ClientAddress = "127.0.0.1", HeloName = "h", ArrivalUnixMs = 1 };
        var withPart = new Envelope { Sender = envelope.Sender, Recipients = envelope.Recipients, ClientAddress = "127.0.0.1", HeloName = "h", ArrivalUnixMs = 1,
            NotBeforeUnixMs = 1_800_000_000_000, Metadata = "{\"token\":\"t\"}"u8.ToArray() };
        var old = Serialize(envelope);
        var extended = Serialize(withPart);
        // The old encoding ends the DSN extension with flag byte 0; the new one sets bit 2 and appends 8 + 4 + n bytes.
        Assert.Equal(old.Length + 8 + 4 + withPart.Metadata.Length, extended.Length);
        var parsed = MessageHead.TryParse(old)!.Envelope;
        Assert.Equal(0, parsed.NotBeforeUnixMs);
        Assert.Null(parsed.Metadata);
        var parsedPart = MessageHead.TryParse(extended)!.Envelope;
        Assert.Equal(1_800_000_000_000, parsedPart.NotBeforeUnixMs);
        // A scheduled message's lifetime and delay warnings count from its time; others' from arrival.
        Assert.Equal(1_800_000_000_000, parsedPart.DueSinceUnixMs);
        Assert.Equal(1, parsed.DueSinceUnixMs);
        Assert.Equal(withPart.Metadata, parsedPart.Metadata);
    }

    private static byte[] Serialize(Envelope envelope)
    {
        var body = MessageBuffer.Rent();
        try
        {
            body.Write(Encoding.ASCII.GetBytes("Subject: x\r\n\r\nbody\r\n"));
            var entry = new MessageHeadEntry();
            entry.Prepare(1, envelope, body, 0);
            var record = new byte[entry.SerializedLength];
            entry.SerializeTo(record);
            return record;
        }
        finally
        {
            body.Release();
        }
    }
}
