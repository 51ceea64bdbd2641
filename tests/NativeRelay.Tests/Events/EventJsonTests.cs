using System.Text;
using System.Text.Json;
using NativeRelay.Events;

namespace NativeRelay.Tests.Events;

/// <summary>The JSON of events: every field's snake_case name, absent fields left out, the batch with ids.</summary>
public sealed class EventJsonTests
{
    private static JsonElement Parse(ReadOnlySpan<byte> json)
    {
        using var doc = JsonDocument.Parse(json.ToArray());
        return doc.RootElement.Clone();
    }

    [Fact]
    public void Every_field_has_its_snake_case_name()
    {
        var e = new RelayEvent
        {
            Type = RelayEventType.Bounce,
            TimeUnixMs = 1765000000123,
            QueueId = 0x0191F0C2A3B40001,
            MessageId = "<m1@example.test>",
            Recipient = "ann@example.org"u8.ToArray(),
            Sender = "news@example.com"u8.ToArray(),
            Pool = "p1", Source = "s1", Site = "mx.example.org",
            Reply = "550 5.1.1 no such user",
            BounceClass = "invalid_recipient",
            Tags = ["t1", "t2"],
            Metadata = "{\"k\":\"v\",\"n\":[1,2]}"u8.ToArray(),
            Attempt = 2, Host = "mx.example.org", Ip = "192.0.2.1:25",
            DsnQueueId = 0x0191F0C2A3B40002, Action = "held", SenderDomain = "example.com", ListId = "news",
        };
        var j = Parse(EventJson.Serialize(e));
        Assert.Equal("bounce", j.GetProperty("type").GetString());
        Assert.Equal("2025-12-06T05:46:40.123Z", j.GetProperty("time").GetString());
        Assert.Equal("0191F0C2A3B40001", j.GetProperty("queue_id").GetString());
        Assert.Equal("<m1@example.test>", j.GetProperty("message_id").GetString());
        Assert.Equal("ann@example.org", j.GetProperty("recipient").GetString());
        Assert.Equal("news@example.com", j.GetProperty("sender").GetString());
        Assert.Equal("p1", j.GetProperty("pool").GetString());
        Assert.Equal("s1", j.GetProperty("source").GetString());
        Assert.Equal("mx.example.org", j.GetProperty("site").GetString());
        Assert.Equal("550 5.1.1 no such user", j.GetProperty("reply").GetString());
        Assert.Equal("invalid_recipient", j.GetProperty("bounce_class").GetString());
        Assert.Equal(["t1", "t2"], j.GetProperty("tags").EnumerateArray().Select(t => t.GetString()));
        Assert.Equal("v", j.GetProperty("metadata").GetProperty("k").GetString());
        Assert.Equal(2, j.GetProperty("attempt").GetInt32());
        Assert.Equal("192.0.2.1:25", j.GetProperty("ip").GetString());
        Assert.Equal("0191F0C2A3B40002", j.GetProperty("dsn_queue_id").GetString());
        Assert.Equal("held", j.GetProperty("action").GetString());
        Assert.Equal("example.com", j.GetProperty("sender_domain").GetString());
        Assert.Equal("news", j.GetProperty("list_id").GetString());
    }

    [Fact]
    public void Absent_fields_are_left_out_and_a_null_sender_is_an_empty_string()
    {
        var j = Parse(EventJson.Serialize(new RelayEvent { Type = RelayEventType.Reception, Sender = [] }));
        Assert.Equal("", j.GetProperty("sender").GetString());
        Assert.Equal(["type", "time", "sender"], j.EnumerateObject().Select(p => p.Name));
    }

    [Fact]
    public void Metadata_that_is_not_a_json_object_is_kept_as_a_string_and_the_event_stays_valid()
    {
        var j = Parse(EventJson.Serialize(new RelayEvent { Type = RelayEventType.Delivery, Metadata = "{\"k\": broken"u8.ToArray() }));
        Assert.Equal("{\"k\": broken", j.GetProperty("metadata").GetString());
    }

    [Fact]
    public void A_batch_is_an_array_of_the_stored_objects_each_with_its_id_first()
    {
        var records = new List<JournalRecord>();
        for (int i = 0; i < 3; i++)
        {
            var json = EventJson.Serialize(new RelayEvent { Type = RelayEventType.Delivery, QueueId = (ulong)(i + 1) }).ToArray();
            records.Add(new JournalRecord(40 + i, RelayEventType.Delivery, null, json));
        }
        var batch = Parse(EventJson.WriteBatch("0a1b2c3d", records));
        Assert.Equal(3, batch.GetArrayLength());
        for (int i = 0; i < 3; i++)
        {
            var e = batch[i];
            Assert.Equal("id", e.EnumerateObject().First().Name);
            Assert.Equal($"0a1b2c3d{40 + i:x12}", e.GetProperty("id").GetString());
            Assert.Equal($"{i + 1:X16}", e.GetProperty("queue_id").GetString());
        }
        Assert.Equal("[]", Encoding.UTF8.GetString(EventJson.WriteBatch("0a1b2c3d", [])));
    }

    [Fact]
    public void Message_id_is_read_from_the_header_unfolded_and_trimmed()
    {
        var message = "Received: from x\r\n\tby y\r\nMessage-Id:\r\n <abc@example.test> \r\nSubject: s\r\n\r\nMessage-ID: <body@x>\r\n"u8;
        Assert.Equal("<abc@example.test>", MessageIdHeader.Find(message));
        Assert.Null(MessageIdHeader.Find("Subject: s\r\n\r\nMessage-ID: <body@x>\r\n"u8));
    }
}
