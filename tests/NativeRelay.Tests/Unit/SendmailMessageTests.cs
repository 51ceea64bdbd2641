using System.Text;
using NativeRelay.Local;

namespace NativeRelay.Tests.Unit;

/// <summary>What sendmail does to an application's message: line ends, the dot line, -t recipients, Bcc, added headers.</summary>
public sealed class SendmailMessageTests
{
    private static readonly DateTimeOffset Now = new(2024, 5, 6, 7, 8, 9, TimeSpan.Zero);

    private static byte[] B(string s) => Encoding.Latin1.GetBytes(s);
    private static string S(byte[] b) => Encoding.Latin1.GetString(b);

    [Fact]
    public void Bare_lf_and_cr_become_crlf_and_crlf_stays()
    {
        Assert.Equal("a\r\nb\r\nc\r\nd\r\n", S(SendmailMessage.NormalizeInput(B("a\nb\r\nc\rd"), ignoreDots: false)));
    }

    [Fact]
    public void A_lone_dot_line_ends_the_input_unless_dots_are_ignored()
    {
        var input = B("Subject: x\n\nbefore\n.\nafter\n");
        Assert.Equal("Subject: x\r\n\r\nbefore\r\n", S(SendmailMessage.NormalizeInput(input, ignoreDots: false)));
        Assert.Equal("Subject: x\r\n\r\nbefore\r\n.\r\nafter\r\n", S(SendmailMessage.NormalizeInput(input, ignoreDots: true)));
        // A line that only starts with a dot is data either way.
        Assert.Equal("..x\r\n.y\r\n", S(SendmailMessage.NormalizeInput(B("..x\n.y\n"), ignoreDots: false)));
    }

    [Fact]
    public void With_t_recipients_come_from_to_cc_and_bcc_and_bcc_is_removed()
    {
        var input = SendmailMessage.NormalizeInput(B(
            "From: App <app@host.test>\n" +
            "To: \"Doe, Jane\" <jane@example.test>, bob@example.test (Bob),\n" +
            "  team: carol@example.test, <dave@example.test>;\n" +
            "Cc: undisclosed-recipients:;, root\n" +
            "Bcc: secret@example.test\n" +
            "Subject: report\n" +
            "\n" +
            "Bcc: this line is body, not a header\n"), ignoreDots: false);

        var p = SendmailMessage.Prepare(input, "app@host.test", null, "host.test", readRecipients: true, Now);

        Assert.Equal(["jane@example.test", "bob@example.test", "carol@example.test", "dave@example.test", "root@host.test", "secret@example.test"],
            p.HeaderRecipients);
        string text = S(p.Message);
        Assert.DoesNotContain("secret@example.test", text.Split("\r\n\r\n")[0]);
        Assert.Contains("\r\n\r\nBcc: this line is body, not a header\r\n", text);
        Assert.StartsWith("From: App <app@host.test>\r\nTo: \"Doe, Jane\" <jane@example.test>, bob@example.test (Bob),\r\n  team:", text);
        Assert.Contains("Date: Mon, 6 May 2024 07:08:09 +0000\r\n", text);
        Assert.Matches(@"\r\nMessage-ID: <\d+\.[0-9a-f]{16}@host\.test>\r\n\r\n", text);
        Assert.False(p.EightBit);
    }

    [Fact]
    public void Without_t_the_header_names_no_recipients_but_bcc_is_still_dropped()
    {
        var input = SendmailMessage.NormalizeInput(B("To: a@example.test\nBcc: b@example.test\nDate: Tue, 1 Jan 2030 00:00:00 +0000\nMessage-ID: <m@x>\n\nhi\n"), false);
        var p = SendmailMessage.Prepare(input, "me@host.test", "Me Myself", "host.test", readRecipients: false, Now);
        Assert.Empty(p.HeaderRecipients);
        Assert.Equal("To: a@example.test\r\nDate: Tue, 1 Jan 2030 00:00:00 +0000\r\nMessage-ID: <m@x>\r\nFrom: Me Myself <me@host.test>\r\n\r\nhi\r\n", S(p.Message));
    }

    [Fact]
    public void A_message_without_a_header_gets_one_and_an_mbox_from_line_is_dropped_and_8bit_is_noticed()
    {
        var input = SendmailMessage.NormalizeInput(B("From someone Mon Jan  1 00:00:00 2024\njust a body line, h\u00e9\n"), false);
        var p = SendmailMessage.Prepare(input, "", "J. \"Q\" Public", "host.test", readRecipients: true, Now);
        string text = S(p.Message);
        Assert.StartsWith("From: \"J. \\\"Q\\\" Public\" <MAILER-DAEMON@host.test>\r\nDate: ", text);
        Assert.EndsWith(">\r\n\r\njust a body line, h\u00e9\r\n", text);
        Assert.DoesNotContain("From someone", text);
        Assert.True(p.EightBit);
    }

    [Theory]
    [InlineData("a@b.test", new[] { "a@b.test" })]
    [InlineData("A <a@b.test>", new[] { "a@b.test" })]
    [InlineData("\"x, y\" <a@b.test>, c@d.test", new[] { "a@b.test", "c@d.test" })]
    [InlineData("a@b.test (comment, with (nested) parens), c@d.test", new[] { "a@b.test", "c@d.test" })]
    [InlineData("group: a@b.test, B <b@b.test>; , c@d.test", new[] { "a@b.test", "b@b.test", "c@d.test" })]
    [InlineData("undisclosed-recipients:;", new string[0])]
    [InlineData("<@route.test:a@b.test>", new[] { "a@b.test" })]
    [InlineData("\"john doe\"@b.test", new[] { "\"john doe\"@b.test" })]
    public void Address_lists_are_parsed(string value, string[] expected)
    {
        Assert.Equal(expected, AddressList.Parse(value));
    }
}
