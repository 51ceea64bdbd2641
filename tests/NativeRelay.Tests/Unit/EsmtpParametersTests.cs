using System.Buffers;
using System.Text;
using NativeRelay.Smtp;

namespace NativeRelay.Tests.Unit;

public class EsmtpParametersTests
{
    private static (List<(string Keyword, string Value)> Parameters, bool Malformed) Enumerate(string text, bool allowUtf8 = false)
    {
        var parameters = new List<(string, string)>();
        var enumerator = new EsmtpParameters(Encoding.UTF8.GetBytes(text), allowUtf8);
        while (enumerator.MoveNext())
        {
            parameters.Add((Encoding.UTF8.GetString(enumerator.Keyword), Encoding.UTF8.GetString(enumerator.Value)));
        }

        return (parameters, enumerator.IsMalformed);
    }

    [Fact]
    public void EnumeratesKeywordValueAndBareKeywordParameters()
    {
        var (parameters, malformed) = Enumerate("SIZE=1000 BODY=8BITMIME SMTPUTF8 ENVID=QQ314159");

        Assert.False(malformed);
        Assert.Equal(
            [("SIZE", "1000"), ("BODY", "8BITMIME"), ("SMTPUTF8", ""), ("ENVID", "QQ314159")],
            parameters);
    }

    [Fact]
    public void ToleratesRunsOfSpaces()
    {
        var (parameters, malformed) = Enumerate("  SIZE=1   BODY=7BIT  ");

        Assert.False(malformed);
        Assert.Equal([("SIZE", "1"), ("BODY", "7BIT")], parameters);
    }

    [Fact]
    public void EmptyTextHasNoParametersAndIsNotMalformed()
    {
        var (parameters, malformed) = Enumerate("");

        Assert.Empty(parameters);
        Assert.False(malformed);
    }

    [Theory]
    [InlineData("=x")]
    [InlineData("SIZE=")]
    [InlineData("SIZE=1=2")]
    [InlineData("-X=1")]
    [InlineData("SI_ZE=1")]
    [InlineData("SIZE=a\u0001b")]
    [InlineData("SIZE=a\u007fb")]
    [InlineData("BODY=8BIT\u00e4")]
    [InlineData("KEY\u00e4")]
    public void MalformedParametersStopTheEnumeration(string text)
    {
        var (parameters, malformed) = Enumerate(text);

        Assert.Empty(parameters);
        Assert.True(malformed);
    }

    [Fact]
    public void GoodParametersBeforeAMalformedOneAreStillYielded()
    {
        var (parameters, malformed) = Enumerate("SIZE=1 =x BODY=7BIT");

        Assert.Equal([("SIZE", "1")], parameters);
        Assert.True(malformed);
    }

    [Fact]
    public void MoveNextStaysFalseAfterAnError()
    {
        var enumerator = new EsmtpParameters("=x SIZE=1"u8);

        Assert.False(enumerator.MoveNext());
        Assert.False(enumerator.MoveNext());
        Assert.True(enumerator.IsMalformed);
        Assert.True(enumerator.Keyword.IsEmpty);
    }

    [Fact]
    public void Utf8ValuesAreAllowedOnlyWithSmtpUtf8()
    {
        Assert.True(Enumerate("ORCPT=utf-8;jösé@example.com").Malformed);

        var (parameters, malformed) = Enumerate("ORCPT=utf-8;jösé@example.com", allowUtf8: true);
        Assert.False(malformed);
        Assert.Equal([("ORCPT", "utf-8;jösé@example.com")], parameters);
    }

    [Fact]
    public void MalformedUtf8ValueIsMalformedEvenWithSmtpUtf8()
    {
        byte[] text = [.. "X=a"u8, 0xFF, .. "b"u8];
        var enumerator = new EsmtpParameters(text, allowUtf8: true);

        Assert.False(enumerator.MoveNext());
        Assert.True(enumerator.IsMalformed);
    }

    [Fact]
    public void ForeachYieldsEveryParameter()
    {
        int count = 0;
        long size = 0;
        foreach (EsmtpParameter parameter in new EsmtpParameters("size=42 BODY=8BITMIME"u8))
        {
            count++;
            if (EsmtpParameters.KeywordEquals(parameter.Keyword, "SIZE"u8))
            {
                Assert.True(EsmtpParameters.TryParseSize(parameter.Value, out size));
            }
        }

        Assert.Equal(2, count);
        Assert.Equal(42, size);
    }

    [Theory]
    [InlineData("SIZE=1 BODY=7BIT", true)]
    [InlineData("", true)]
    [InlineData("SIZE=1 BODY=", false)]
    public void IsWellFormedChecksTheWholeList(string text, bool expected)
    {
        Assert.Equal(expected, EsmtpParameters.IsWellFormed(Encoding.ASCII.GetBytes(text)));
    }

    [Theory]
    [InlineData("size", "SIZE", true)]
    [InlineData("SiZe", "SIZE", true)]
    [InlineData("BODY", "BODY", true)]
    [InlineData("body", "BODY", true)]
    [InlineData("SIZ", "SIZE", false)]
    [InlineData("SIZEX", "SIZE", false)]
    [InlineData("SMTPUTF8", "SIZE", false)]
    public void KeywordComparisonIsCaseInsensitive(string keyword, string expected, bool equal)
    {
        Assert.Equal(equal, EsmtpParameters.KeywordEquals(Encoding.ASCII.GetBytes(keyword), Encoding.ASCII.GetBytes(expected)));
    }

    [Theory]
    [InlineData("0", 0L)]
    [InlineData("1000", 1000L)]
    [InlineData("00000000000000000001", 1L)]
    [InlineData("9223372036854775807", long.MaxValue)]
    public void SizeParsesDecimalDigits(string value, long expected)
    {
        Assert.True(EsmtpParameters.TryParseSize(Encoding.ASCII.GetBytes(value), out long size));
        Assert.Equal(expected, size);
    }

    [Theory]
    [InlineData("")]
    [InlineData("-1")]
    [InlineData("+1")]
    [InlineData("1k")]
    [InlineData(" 1")]
    [InlineData("1.5")]
    [InlineData("9223372036854775808")]
    [InlineData("18446744073709551616")]
    [InlineData("99999999999999999999")]
    [InlineData("000000000000000000001")]
    public void SizeRejectsNonDigitsAndOverflow(string value)
    {
        Assert.False(EsmtpParameters.TryParseSize(Encoding.ASCII.GetBytes(value), out long size));
        Assert.Equal(0, size);
    }

    private static (OperationStatus Status, byte[] Decoded) Decode(string xtext, int destinationLength = 64)
    {
        byte[] destination = new byte[destinationLength];
        OperationStatus status = EsmtpParameters.DecodeXtext(Encoding.Latin1.GetBytes(xtext), destination, out int written);
        return (status, destination[..written]);
    }

    [Theory]
    [InlineData("a+2Bb", "a+b")]
    [InlineData("a+2bb", "a+b")]
    [InlineData("+3D", "=")]
    [InlineData("rfc822;user+40example.com", "rfc822;user@example.com")]
    [InlineData("plain", "plain")]
    [InlineData("<>", "<>")]
    [InlineData("", "")]
    public void XtextDecodes(string xtext, string expected)
    {
        var (status, decoded) = Decode(xtext);

        Assert.Equal(OperationStatus.Done, status);
        Assert.Equal(expected, Encoding.Latin1.GetString(decoded));
    }

    [Fact]
    public void XtextDecodesControlOctetsFaithfully()
    {
        var (status, decoded) = Decode("a+0D+0Ab+FF");

        Assert.Equal(OperationStatus.Done, status);
        Assert.Equal(new byte[] { (byte)'a', 13, 10, (byte)'b', 0xFF }, decoded);
    }

    [Theory]
    [InlineData("+")]
    [InlineData("a+2")]
    [InlineData("+G0")]
    [InlineData("+2G")]
    [InlineData("+ 2")]
    [InlineData("a=b")]
    [InlineData("a b")]
    [InlineData("a\u007f")]
    [InlineData("a\u0001")]
    [InlineData("\u00e4")]
    public void XtextRejectsBadHexAndForbiddenCharacters(string xtext)
    {
        Assert.Equal(OperationStatus.InvalidData, Decode(xtext).Status);
    }

    [Fact]
    public void XtextReportsASmallDestination()
    {
        var (status, decoded) = Decode("abc+2Bd", destinationLength: 3);

        Assert.Equal(OperationStatus.DestinationTooSmall, status);
        Assert.Equal("abc", Encoding.ASCII.GetString(decoded));
    }
}
