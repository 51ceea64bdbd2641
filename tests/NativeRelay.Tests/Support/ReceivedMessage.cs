using System.Text;

namespace NativeRelay.Tests.Support;

/// <summary>One message the sink accepted with a 2xx reply to the end of DATA.</summary>
public sealed record ReceivedMessage(
    int Sequence,
    int ConnectionNumber,
    string HeloName,
    string MailFrom,
    IReadOnlyList<string> Recipients,
    byte[] Data)
{
    /// <summary>The client address of the connection it came on (for a relay: the egress source it bound).</summary>
    public string PeerAddress { get; init; } = "";

    /// <summary>When the end of its data was answered 2xx (UTC).</summary>
    public DateTime ReceivedAt { get; init; } = DateTime.UtcNow;

    /// <summary>The data as text; Latin-1 keeps one char per byte, so offsets match.</summary>
    public string DataText => Encoding.Latin1.GetString(Data);

    /// <summary>The value of the first header with this name in the data, unfolded, or null.</summary>
    public string? Header(string name) => MessageText.Header(DataText, name);

    public override string ToString() =>
        $"#{Sequence} conn {ConnectionNumber} from <{MailFrom}> to [{string.Join(", ", Recipients.Select(r => "<" + r + ">"))}] " +
        $"{Data.Length} bytes, Message-ID {Header("Message-ID") ?? "(none)"}";
}

/// <summary>The end of one DATA phase, given to <see cref="TestSmtpSink.DataReply"/>.</summary>
public sealed record DataAttempt(int Number, string MailFrom, IReadOnlyList<string> Recipients, byte[] Data)
{
    /// <summary>The client address of the connection.</summary>
    public string PeerAddress { get; init; } = "";

    /// <summary>The EHLO name the client gave on the connection.</summary>
    public string HeloName { get; init; } = "";
}
