using System.Text;
using NativeRelay.Smtp;

namespace NativeRelay.Tests.Unit;

public class MailboxPathTests
{
    private static (PathError Error, string Address, string Parameters) Parse(
        string argument, string prefix = "FROM:", bool allowUtf8 = false, bool allowBareAddress = false) =>
        Parse(Encoding.UTF8.GetBytes(argument), prefix, allowUtf8, allowBareAddress);

    private static (PathError Error, string Address, string Parameters) Parse(
        byte[] argument, string prefix = "FROM:", bool allowUtf8 = false, bool allowBareAddress = false)
    {
        PathError error = MailboxPath.Parse(argument, Encoding.ASCII.GetBytes(prefix), allowUtf8, allowBareAddress,
            out ReadOnlySpan<byte> address, out ReadOnlySpan<byte> parameters);
        return (error, Encoding.UTF8.GetString(address), Encoding.UTF8.GetString(parameters));
    }

    // A syntactically valid domain of exactly `length` octets: 'd' labels of at most 50 octets.
    private static string Domain(int length)
    {
        var builder = new StringBuilder(length);
        while (builder.Length < length)
        {
            builder.Append(builder.Length % 51 == 50 && builder.Length != length - 1 ? '.' : 'd');
        }

        return builder.ToString();
    }

    [Fact]
    public void DomainHelperBuildsValidDomainsOfTheRequestedLength()
    {
        Assert.Equal(189, Domain(189).Length);
        Assert.Equal(PathError.None, MailboxPath.ValidateDomain(Encoding.ASCII.GetBytes(Domain(189)), allowUtf8: false));
    }

    [Fact]
    public void NullPathIsValidWithEmptyAddress()
    {
        Assert.Equal((PathError.None, "", ""), Parse("FROM:<>"));
    }

    [Fact]
    public void NullPathMayCarryParameters()
    {
        Assert.Equal((PathError.None, "", "SIZE=10 BODY=7BIT"), Parse("FROM:<> SIZE=10 BODY=7BIT"));
    }

    [Theory]
    [InlineData("FROM:<user@example.com>", "FROM:", "user@example.com")]
    [InlineData("from:<user@example.com>", "FROM:", "user@example.com")]
    [InlineData("TO:<first.last+tag@mail.example.co.uk>", "TO:", "first.last+tag@mail.example.co.uk")]
    [InlineData("To:<a!#$%&'*+-/=?^_`{|}~@x-y.example>", "TO:", "a!#$%&'*+-/=?^_`{|}~@x-y.example")]
    [InlineData("TO:<u@localhost>", "TO:", "u@localhost")]
    [InlineData("TO:<u@123.example>", "TO:", "u@123.example")]
    public void SimpleAddresses(string argument, string prefix, string expectedAddress)
    {
        Assert.Equal((PathError.None, expectedAddress, ""), Parse(argument, prefix));
    }

    [Fact]
    public void QuotedLocalPartMayHoldAtSignAndSpaces()
    {
        var result = Parse("FROM:<\"john doe@home\"@example.com>");

        Assert.Equal((PathError.None, "\"john doe@home\"@example.com", ""), result);
        Assert.True(MailboxPath.TrySplit(Encoding.ASCII.GetBytes(result.Address), out var local, out var domain));
        Assert.Equal("\"john doe@home\"", Encoding.ASCII.GetString(local));
        Assert.Equal("example.com", Encoding.ASCII.GetString(domain));
    }

    [Fact]
    public void QuotedLocalPartMayHoldEscapedQuoteAndClosingBracket()
    {
        Assert.Equal((PathError.None, "\"a\\\"b>c\"@x.example", "SIZE=1"), Parse("FROM:<\"a\\\"b>c\"@x.example> SIZE=1"));
    }

    [Fact]
    public void EmptyQuotedLocalPartIsAllowedByTheGrammar()
    {
        Assert.Equal(PathError.None, Parse("FROM:<\"\"@x.example>").Error);
    }

    [Theory]
    [InlineData("FROM:<\"unterminated@x.example>")]
    [InlineData("FROM:<\"a\"b@x.example>")]
    [InlineData("FROM:<\"tab\there\"@x.example>")]
    [InlineData("FROM:<\"a\\")]
    public void BadQuotedLocalPartsAreSyntaxErrors(string argument)
    {
        Assert.Equal(PathError.Syntax, Parse(argument).Error);
    }

    [Theory]
    [InlineData("TO:<@relay1.example,@relay2.example:user@example.com>", "user@example.com")]
    [InlineData("TO:<@relay.example:user@example.com>", "user@example.com")]
    [InlineData("TO:<@[IPv6:2001:db8::1],@[192.0.2.1]:user@example.com>", "user@example.com")]
    public void SourceRouteIsRemoved(string argument, string expectedAddress)
    {
        Assert.Equal((PathError.None, expectedAddress, ""), Parse(argument, "TO:"));
    }

    [Theory]
    [InlineData("TO:<@relay.example:>", PathError.Syntax)]
    [InlineData("TO:<@relay.example>", PathError.Syntax)]
    [InlineData("TO:<@relay.example,relay2.example:u@x.example>", PathError.Syntax)]
    [InlineData("TO:<@relay.example;u@x.example>", PathError.Syntax)]
    [InlineData("TO:<@-relay.example:u@x.example>", PathError.BadDomain)]
    [InlineData("TO:<@:u@x.example>", PathError.BadDomain)]
    [InlineData("TO:<@[1.2.3:u@x.example>", PathError.BadDomain)]
    public void BadSourceRoutesAreRejected(string argument, PathError expected)
    {
        Assert.Equal(expected, Parse(argument, "TO:").Error);
    }

    [Theory]
    [InlineData("FROM: <a@b.example>")]
    [InlineData("FROM:   <a@b.example>")]
    public void SpacesAfterThePrefixAreTolerated(string argument)
    {
        Assert.Equal((PathError.None, "a@b.example", ""), Parse(argument));
    }

    [Theory]
    [InlineData("<a@b.example>", "FROM:")]
    [InlineData("TO:<a@b.example>", "FROM:")]
    [InlineData("FROM <a@b.example>", "FROM:")]
    [InlineData("FRO", "FROM:")]
    [InlineData("", "TO:")]
    public void MissingPrefix(string argument, string prefix)
    {
        Assert.Equal(PathError.MissingPrefix, Parse(argument, prefix).Error);
    }

    [Theory]
    [InlineData("FROM:")]
    [InlineData("FROM:   ")]
    public void NothingAfterThePrefixIsEmpty(string argument)
    {
        Assert.Equal(PathError.Empty, Parse(argument).Error);
    }

    [Fact]
    public void MissingBracketsAreRejectedByDefault()
    {
        Assert.Equal(PathError.Syntax, Parse("FROM:a@b.example").Error);
    }

    [Fact]
    public void BareAddressIsAcceptedWhenAllowed()
    {
        Assert.Equal((PathError.None, "a@b.example", ""), Parse("FROM:a@b.example", allowBareAddress: true));
        Assert.Equal((PathError.None, "a@b.example", "SIZE=5"), Parse("FROM: a@b.example SIZE=5", allowBareAddress: true));
        Assert.Equal((PathError.None, "\"x y\"@b.example", ""), Parse("FROM:\"x y\"@b.example", allowBareAddress: true));
        Assert.Equal(PathError.BadDomain, Parse("FROM:a@-b.example", allowBareAddress: true).Error);
    }

    [Fact]
    public void BareAddressCountsAsIfBracketed()
    {
        string address = new string('l', 64) + "@" + Domain(189); // 254 octets; with brackets 256
        Assert.Equal(PathError.None, Parse("FROM:" + address, allowBareAddress: true).Error);
        Assert.Equal(PathError.TooLong, Parse("FROM:" + address + "d", allowBareAddress: true).Error);
    }

    [Theory]
    [InlineData("FROM:<a@b.example")]
    [InlineData("FROM:<a@b.example>SIZE=1")]
    [InlineData("FROM:<a@b.example>>")]
    [InlineData("FROM:<<a@b.example>>")]
    public void BracketErrorsAreSyntaxErrors(string argument)
    {
        Assert.Equal(PathError.Syntax, Parse(argument).Error);
    }

    [Theory]
    [InlineData("FROM:<a@b.example> SIZE=1000 BODY=8BITMIME", "SIZE=1000 BODY=8BITMIME")]
    [InlineData("FROM:<a@b.example>   SIZE=1000", "SIZE=1000")]
    [InlineData("FROM:<a@b.example> ", "")]
    [InlineData("FROM:<a@b.example> SMTPUTF8", "SMTPUTF8")]
    public void ParametersAreReturnedRaw(string argument, string expectedParameters)
    {
        Assert.Equal((PathError.None, "a@b.example", expectedParameters), Parse(argument));
    }

    [Theory]
    [InlineData("u@[192.0.2.1]")]
    [InlineData("u@[0.0.0.0]")]
    [InlineData("u@[255.255.255.255]")]
    [InlineData("u@[IPv6:2001:db8::1]")]
    [InlineData("u@[ipv6:::1]")]
    [InlineData("u@[IPv6:::]")]
    [InlineData("u@[IPv6:fe80::]")]
    [InlineData("u@[IPv6:1:2:3:4:5:6:7:8]")]
    [InlineData("u@[IPv6:1:2:3:4:5:6::8]")]
    [InlineData("u@[IPv6:::ffff:192.0.2.1]")]
    [InlineData("u@[IPv6:1:2:3:4:5:6:192.0.2.1]")]
    public void AddressLiteralsAreAccepted(string address)
    {
        Assert.Equal((PathError.None, address, ""), Parse("TO:<" + address + ">", "TO:"));
    }

    [Theory]
    [InlineData("u@[256.1.1.1]")]
    [InlineData("u@[1.2.3]")]
    [InlineData("u@[1.2.3.4.5]")]
    [InlineData("u@[1.2.3.]")]
    [InlineData("u@[1.2.3.0004]")]
    [InlineData("u@[]")]
    [InlineData("u@[1.2.3.4")]
    [InlineData("u@[IPv6:]")]
    [InlineData("u@[IPv6:1:2:3:4:5:6:7:8:9]")]
    [InlineData("u@[IPv6:1:2:3:4:5:6:7]")]
    [InlineData("u@[IPv6:1::2::3]")]
    [InlineData("u@[IPv6:12345::]")]
    [InlineData("u@[IPv6:1:]")]
    [InlineData("u@[IPv6::1]")]
    [InlineData("u@[IPv6:g::1]")]
    [InlineData("u@[IPv6:1:2:3:4:5:6:7:192.0.2.1]")]
    [InlineData("u@[IPv6:192.0.2.1::]")]
    [InlineData("u@[x-tag:whatever]")]
    [InlineData("u@[192.0.2.1]x")]
    public void BadAddressLiteralsAreBadDomains(string address)
    {
        Assert.Equal(PathError.BadDomain, Parse("TO:<" + address + ">", "TO:").Error);
    }

    [Theory]
    [InlineData("u@-example.com")]
    [InlineData("u@example-.com")]
    [InlineData("u@sub.-example.com")]
    [InlineData("u@a..b")]
    [InlineData("u@.example.com")]
    [InlineData("u@example.com.")] // trailing dot: no root label in RFC 5321 paths
    [InlineData("u@")]
    [InlineData("u@exa_mple.com")]
    [InlineData("u@exa mple.com")]
    [InlineData("u@a@b.example")]
    public void BadDomains(string address)
    {
        Assert.Equal(PathError.BadDomain, Parse("TO:<" + address + ">", "TO:").Error);
    }

    [Fact]
    public void LabelsAreLimitedTo63Octets()
    {
        Assert.Equal(PathError.None, Parse("TO:<u@" + new string('a', 63) + ".example>", "TO:").Error);
        Assert.Equal(PathError.BadDomain, Parse("TO:<u@" + new string('a', 64) + ".example>", "TO:").Error);
    }

    [Theory]
    [InlineData("FROM:<.a@b.example>")]
    [InlineData("FROM:<a.@b.example>")]
    [InlineData("FROM:<a..b@b.example>")]
    [InlineData("FROM:<a b@b.example>")]
    [InlineData("FROM:<a(comment)@b.example>")]
    [InlineData("FROM:<a\r@b.example>")]
    [InlineData("FROM:<user>")]
    [InlineData("FROM:<@b.example>")]
    public void BadLocalPartsAreSyntaxErrors(string argument)
    {
        Assert.Equal(PathError.Syntax, Parse(argument).Error);
    }

    [Fact]
    public void LocalPartLimitIs64Octets()
    {
        Assert.Equal(PathError.None, Parse("FROM:<" + new string('l', 64) + "@x.example>").Error);
        Assert.Equal(PathError.LocalPartTooLong, Parse("FROM:<" + new string('l', 65) + "@x.example>").Error);
    }

    [Fact]
    public void QuotedLocalPartLimitCountsTheQuotes()
    {
        Assert.Equal(PathError.None, Parse("FROM:<\"" + new string('q', 62) + "\"@x.example>").Error);
        Assert.Equal(PathError.LocalPartTooLong, Parse("FROM:<\"" + new string('q', 63) + "\"@x.example>").Error);
    }

    [Fact]
    public void DomainLimitIs255Octets()
    {
        // A 255-octet domain is within the domain limit, but no path can hold it ("<x@" + 255 + ">" = 259 > 256),
        // so it is refused for the path length; one octet more is refused for the domain length.
        Assert.Equal(PathError.None, MailboxPath.ValidateDomain(Encoding.ASCII.GetBytes(Domain(255)), allowUtf8: false));
        Assert.Equal(PathError.TooLong, Parse("TO:<x@" + Domain(255) + ">", "TO:").Error);
        Assert.Equal(PathError.DomainTooLong, Parse("TO:<x@" + Domain(256) + ">", "TO:").Error);
        Assert.Equal(PathError.DomainTooLong, MailboxPath.ValidateDomain(Encoding.ASCII.GetBytes(Domain(256)), allowUtf8: false));
    }

    [Fact]
    public void PathLimitIs256OctetsCountingTheBrackets()
    {
        string local = new string('l', 64);
        string atLimit = "<" + local + "@" + Domain(189) + ">";
        string overLimit = "<" + local + "@" + Domain(190) + ">";
        Assert.Equal(256, atLimit.Length);
        Assert.Equal(257, overLimit.Length);

        Assert.Equal(PathError.None, Parse("FROM:" + atLimit).Error);
        Assert.Equal(PathError.TooLong, Parse("FROM:" + overLimit).Error);
    }

    [Fact]
    public void PathLimitIncludesTheSourceRoute()
    {
        string mailbox = new string('l', 64) + "@" + Domain(150); // 215 octets
        string route = "@" + Domain(40) + ":"; // 42 octets; "<" + route + mailbox + ">" = 259
        Assert.Equal(PathError.None, Parse("TO:<" + mailbox + ">", "TO:").Error);
        Assert.Equal(PathError.TooLong, Parse("TO:<" + route + mailbox + ">", "TO:").Error);
    }

    [Theory]
    [InlineData("FROM:<jösé@example.com>")]
    [InlineData("FROM:<user@exämple.com>")]
    [InlineData("FROM:<\"jö sé\"@example.com>")]
    public void NonAsciiIsRejectedWithoutSmtpUtf8(string argument)
    {
        Assert.Equal(PathError.NonAscii, Parse(argument).Error);
    }

    [Theory]
    [InlineData("FROM:<jösé@example.com>", "jösé@example.com")]
    [InlineData("FROM:<user@exämple.com>", "user@exämple.com")]
    [InlineData("FROM:<\"jö sé\"@example.com>", "\"jö sé\"@example.com")]
    [InlineData("FROM:<用户@例子.广告>", "用户@例子.广告")]
    public void Utf8IsAcceptedWithSmtpUtf8(string argument, string expectedAddress)
    {
        Assert.Equal((PathError.None, expectedAddress, ""), Parse(argument, allowUtf8: true));
    }

    [Fact]
    public void Utf8LabelsAreNotHeldToTheAsciiOctetLimit()
    {
        // 40 'ä' are 80 octets, but the A-label ("xn--...") is what must fit in 63 octets, and that is the router's job.
        Assert.Equal(PathError.None, Parse("FROM:<u@" + new string('ä', 40) + ".example>", allowUtf8: true).Error);
    }

    [Fact]
    public void MalformedUtf8IsASyntaxErrorEvenWithSmtpUtf8()
    {
        byte[] argument = [.. "FROM:<a"u8, 0xC3, 0x28, .. "@b.example>"u8];

        Assert.Equal(PathError.Syntax, Parse(argument, allowUtf8: true).Error);
        Assert.Equal(PathError.NonAscii, Parse(argument, allowUtf8: false).Error);
    }

    [Theory]
    [InlineData("TO:<postmaster>", "postmaster")]
    [InlineData("TO:<PostMaster>", "PostMaster")]
    [InlineData("to: <POSTMASTER> NOTIFY=NEVER", "POSTMASTER")]
    public void DomainlessPostmasterIsAccepted(string argument, string expectedAddress)
    {
        var (error, address, _) = Parse(argument, "TO:");
        byte[] addressBytes = Encoding.ASCII.GetBytes(address);

        Assert.Equal(PathError.None, error);
        Assert.Equal(expectedAddress, address);
        Assert.True(MailboxPath.IsPostmaster(addressBytes));
        Assert.False(MailboxPath.TrySplit(addressBytes, out _, out _));
    }

    [Theory]
    [InlineData("postmaster@example.com")]
    [InlineData("postmasters")]
    [InlineData("postmaste")]
    [InlineData("")]
    public void IsPostmasterOnlyForTheBareName(string address)
    {
        Assert.False(MailboxPath.IsPostmaster(Encoding.ASCII.GetBytes(address)));
    }

    [Fact]
    public void TrySplitSplitsAtTheLastAtSign()
    {
        Assert.True(MailboxPath.TrySplit("user@example.com"u8, out var local, out var domain));
        Assert.Equal("user", Encoding.ASCII.GetString(local));
        Assert.Equal("example.com", Encoding.ASCII.GetString(domain));

        Assert.False(MailboxPath.TrySplit(ReadOnlySpan<byte>.Empty, out _, out _));
    }
}
