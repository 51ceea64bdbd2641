using System.Text;
using NativeRelay.Maildrop;

namespace NativeRelay.Tests.Unit;

/// <summary>The maildrop's file format and names: what sendmail writes is read back exactly, and anything else is refused with a reason.</summary>
public sealed class MaildropFileTests
{
    private static readonly byte[] Message = Encoding.ASCII.GetBytes("Subject: hi\r\n\r\nbody\r\n.\r\n");

    [Fact]
    public void What_is_encoded_is_read_back_exactly()
    {
        var file = MaildropFile.Encode("app@example.com", ["a@example.org", "b@example.org"], eightBit: true, Message);

        Assert.True(MaildropFile.TryParse(file, out var entry, out string error), error);
        Assert.Equal("app@example.com", entry!.Sender);
        Assert.Equal(["a@example.org", "b@example.org"], entry.Recipients);
        Assert.True(entry.EightBit);
        Assert.Equal(Message, entry.Message.ToArray());
    }

    [Fact]
    public void The_null_sender_is_kept()
    {
        var file = MaildropFile.Encode("", ["a@example.org"], eightBit: false, Message);

        Assert.True(MaildropFile.TryParse(file, out var entry, out _));
        Assert.Equal("", entry!.Sender);
        Assert.False(entry.EightBit);
    }

    [Theory]
    [InlineData("", "the file is empty")]
    [InlineData("From: x\r\n\r\nbody", "not a NativeRelay maildrop file")]
    [InlineData("NativeRelay-Maildrop: 1\r\nSender: a@b.c\r\nRecipient: d@e.f\r\nEight-Bit: no\r\n", "does not end with an empty line")]
    [InlineData("NativeRelay-Maildrop: 1\r\nSender: a@b.c\r\nEight-Bit: no\r\n\r\nbody", "lacks a Sender, a Recipient")]
    [InlineData("NativeRelay-Maildrop: 1\r\nSender: a@b.c\r\nRecipient: not an address\r\nEight-Bit: no\r\n\r\nbody", "bad envelope line")]
    [InlineData("NativeRelay-Maildrop: 1\r\nSender: a@b.c\r\nRecipient: <d@e.f>\r\nEight-Bit: no\r\n\r\nbody", "bad envelope line")]
    [InlineData("NativeRelay-Maildrop: 1\r\nSender: a@b.c\r\nSender: x@b.c\r\nRecipient: d@e.f\r\nEight-Bit: no\r\n\r\nbody", "bad envelope line")]
    [InlineData("NativeRelay-Maildrop: 1\r\nSender: a@b.c\r\nRecipient: d@e.f\r\nEight-Bit: maybe\r\n\r\nbody", "bad envelope line")]
    [InlineData("NativeRelay-Maildrop: 1\r\nX-Other: 1\r\n\r\nbody", "bad envelope line")]
    [InlineData("NativeRelay-Maildrop: 2\r\n\r\nbody", "not a NativeRelay maildrop file")]
    public void Anything_else_is_refused_with_a_reason(string text, string reason)
    {
        Assert.False(MaildropFile.TryParse(Encoding.Latin1.GetBytes(text), out var entry, out string error));
        Assert.Null(entry);
        Assert.Contains(reason, error);
    }

    [Fact]
    public void An_address_with_a_line_break_cannot_be_written()
    {
        Assert.Throws<ArgumentException>(() => MaildropFile.Encode("a@b.c\r\nRecipient: evil@x.y", ["d@e.f"], false, Message));
    }

    [Theory]
    [InlineData("0123456789abcdef0123456789abcdef", true, 0UL)]
    [InlineData("0123456789abcdef0123456789abcdef.0000000000000ABC", true, 0xABCUL)]
    [InlineData("0123456789ABCDEF0123456789abcdef", false, 0UL)]
    [InlineData("0123456789abcdef", false, 0UL)]
    [InlineData("0123456789abcdef0123456789abcdef.xyz", false, 0UL)]
    [InlineData("0123456789abcdef0123456789abcdef.0000000000000000", false, 0UL)]
    [InlineData("notes.txt", false, 0UL)]
    public void File_names_are_sendmails_or_taken_ones(string name, bool valid, ulong id)
    {
        Assert.Equal(valid, MaildropPickup.TryParseName(name, out _, out ulong parsed));
        if (valid)
            Assert.Equal(id, parsed);
    }
}
