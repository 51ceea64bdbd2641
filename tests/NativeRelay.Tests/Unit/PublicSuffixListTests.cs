using System.Globalization;
using System.Text.RegularExpressions;
using NativeRelay.MailAuth;

namespace NativeRelay.Tests.Unit;

/// <summary>The Public Suffix List: the list shipped in the binary, publicsuffix.org's test cases, a list loaded from a file.</summary>
public sealed class PublicSuffixListTests
{
    private static readonly IdnMapping Idn = new();

    public static TheoryData<string?, string?> OfficialCases()
    {
        // Lines like: checkPublicSuffix('www.example.co.uk', 'example.co.uk');  (null where there is none)
        var data = new TheoryData<string?, string?>();
        var line = new Regex(@"^checkPublicSuffix\((null|'[^']*'), (null|'[^']*')\);");
        foreach (var text in File.ReadLines(Path.Combine(AppContext.BaseDirectory, "Data", "test_psl.txt")))
        {
            var m = line.Match(text);
            if (!m.Success)
                continue;
            data.Add(Unquote(m.Groups[1].Value), Unquote(m.Groups[2].Value));
        }
        return data;

        static string? Unquote(string s) => s == "null" ? null : s[1..^1];
    }

    [Theory]
    [MemberData(nameof(OfficialCases))]
    public void Registrable_domain_matches_publicsuffix_org_test_list(string? domain, string? expected)
    {
        string? actual = domain is null ? null : PublicSuffixList.Default.GetRegistrableDomain(domain);
        // The list answers in A-labels; the test list writes IDNs as they were asked.
        string? expectedALabel = expected is null ? null : Idn.GetAscii(expected).ToLowerInvariant();
        Assert.Equal(expectedALabel, actual);
    }

    [Fact]
    public void The_test_list_is_really_read()
    {
        Assert.True(OfficialCases().Count > 60);
        Assert.True(PublicSuffixList.Default.RuleCount > 5000);
    }

    [Theory]
    [InlineData("mail.example.co.uk", "example.co.uk")]
    [InlineData("example.co.uk", "example.co.uk")]
    [InlineData("co.uk", "co.uk")]                    // a public suffix is its own organizational domain
    [InlineData("a.b.example.com.", "example.com")]   // trailing dot
    [InlineData("WWW.Example.COM", "example.com")]
    [InlineData("foo.city.kobe.jp", "city.kobe.jp")]  // exception to *.kobe.jp
    [InlineData("x.y.z.kobe.jp", "y.z.kobe.jp")]      // *.kobe.jp: z.kobe.jp is a public suffix
    public void Organizational_domain(string domain, string expected)
    {
        Assert.Equal(expected, PublicSuffixList.Default.GetOrganizationalDomain(domain));
    }

    [Fact]
    public void Public_suffix_of_names()
    {
        Assert.Equal("co.uk", PublicSuffixList.Default.GetPublicSuffix("www.example.co.uk"));
        Assert.Equal("com", PublicSuffixList.Default.GetPublicSuffix("com"));
        Assert.Equal("example", PublicSuffixList.Default.GetPublicSuffix("a.example"));
        Assert.Null(PublicSuffixList.Default.GetPublicSuffix(".com"));
        Assert.Null(PublicSuffixList.Default.GetPublicSuffix("a..com"));
    }

    [Fact]
    public void A_list_from_a_file_replaces_the_built_in_one()
    {
        string path = Path.Combine(Path.GetTempPath(), $"psl-{Guid.NewGuid():N}.dat");
        File.WriteAllText(path, "// ===BEGIN ICANN DOMAINS===\ntest\n*.wild.test\n!open.wild.test\nbücher.test  ignored text\n// comment\n");
        try
        {
            var list = PublicSuffixList.LoadFile(path);
            Assert.Equal(4, list.RuleCount);
            Assert.Equal("example.test", list.GetRegistrableDomain("www.example.test"));
            Assert.Null(list.GetRegistrableDomain("x.wild.test"));
            Assert.Equal("a.x.wild.test", list.GetRegistrableDomain("b.a.x.wild.test"));
            Assert.Equal("open.wild.test", list.GetRegistrableDomain("www.open.wild.test"));
            Assert.Equal("shop.xn--bcher-kva.test", list.GetRegistrableDomain("www.shop.bücher.test"));
            // Not in this list: the default rule "*" (so "co.uk" is registrable here).
            Assert.Equal("co.uk", list.GetRegistrableDomain("www.co.uk"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void An_empty_list_file_is_refused()
    {
        Assert.Throws<FormatException>(() => PublicSuffixList.Parse(new StringReader("// nothing\n\n")));
    }
}
