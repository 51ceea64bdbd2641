using System.Text;
using NativeRelay.Config;
using NativeRelay.Local;
using NativeRelay.Message;
using NativeRelay.Spool;

namespace NativeRelay.Tests.Support;

/// <summary>Envelopes, message buffers and agents for the in-process local delivery tests.</summary>
public static class LocalDeliveryFixtures
{
    public static Envelope Envelope(string sender, params string[] recipients) => new()
    {
        Sender = Encoding.UTF8.GetBytes(sender),
        Recipients = recipients.Select(r => Encoding.UTF8.GetBytes(r)).ToArray(),
        ClientAddress = "127.0.0.1",
        HeloName = "client.test",
        ArrivalUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(),
    };

    public static MessageBuffer Buffer(byte[] content)
    {
        var buffer = MessageBuffer.Rent();
        buffer.Write(content);
        return buffer;
    }

    public static MessageBuffer Buffer(string crlfText) => Buffer(Encoding.Latin1.GetBytes(crlfText));

    public static int[] All(Envelope e) => Enumerable.Range(0, e.Recipients.Length).ToArray();

    public static LocalDeliveryAgent Agent(ILocalForwarder? forwarder = null, params LocalDomainOptions[] domains) =>
        LocalDeliveryAgent.Create(LocalDeliverySettings.Validate(domains), "mx.local.test",
            TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(30), forwarder);

    /// <summary>The files in DIR/new, DIR/tmp or DIR/cur (empty when the folder does not exist).</summary>
    public static string[] Files(string maildir, string sub) =>
        Directory.Exists(System.IO.Path.Combine(maildir, sub)) ? Directory.GetFiles(System.IO.Path.Combine(maildir, sub)) : [];
}
