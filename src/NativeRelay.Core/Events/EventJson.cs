using System.Buffers;
using System.Globalization;
using System.Text.Encodings.Web;
using System.Text.Json;
using NativeRelay.Spool;

namespace NativeRelay.Events;

/// <summary>
/// The JSON of an event, written with <see cref="Utf8JsonWriter"/> (no reflection: AOT-clean).
/// The journal stores each event as a JSON object without its id; the sink puts the id in front
/// when it builds a batch (<see cref="WriteBatch"/>), so the stored bytes are sent as they are.
/// </summary>
public static class EventJson
{
    private static readonly JsonWriterOptions Options = new()
    {
        // Addresses, replies and metadata stay readable UTF-8; JSON's own escaping still applies.
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
        SkipValidation = true,
    };

    [ThreadStatic] private static ArrayBufferWriter<byte>? t_buffer;
    [ThreadStatic] private static Utf8JsonWriter? t_writer;

    /// <summary>Writes the event (without id) into a per-thread buffer; the span is valid until the thread's next call.</summary>
    public static ReadOnlySpan<byte> Serialize(RelayEvent e)
    {
        var buffer = t_buffer ??= new ArrayBufferWriter<byte>(1024);
        buffer.ResetWrittenCount();
        var w = t_writer ??= new Utf8JsonWriter(buffer, Options);
        w.Reset(buffer);
        Write(w, e);
        w.Flush();
        return buffer.WrittenSpan;
    }

    private static void Write(Utf8JsonWriter w, RelayEvent e)
    {
        Span<byte> text = stackalloc byte[32];
        w.WriteStartObject();
        w.WriteString("type"u8, RelayEventTypes.Name(e.Type));
        long time = e.TimeUnixMs > 0 ? e.TimeUnixMs : DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        DateTimeOffset.FromUnixTimeMilliseconds(time).UtcDateTime
            .TryFormat(text, out int n, "yyyy-MM-ddTHH:mm:ss.fffZ", CultureInfo.InvariantCulture);
        w.WriteString("time"u8, text[..n]);
        if (e.QueueId != 0)
        {
            n = QueueIdGenerator.Format(e.QueueId, text);
            w.WriteString("queue_id"u8, text[..n]);
        }
        if (e.MessageId is not null)
            w.WriteString("message_id"u8, e.MessageId);
        if (!e.Recipient.IsEmpty)
            w.WriteString("recipient"u8, e.Recipient.Span);
        if (e.Sender is not null)
            w.WriteString("sender"u8, e.Sender);
        if (e.Pool is not null)
            w.WriteString("pool"u8, e.Pool);
        if (e.Source is not null)
            w.WriteString("source"u8, e.Source);
        if (e.Site is not null)
            w.WriteString("site"u8, e.Site);
        if (e.Reply is not null)
            w.WriteString("reply"u8, e.Reply);
        if (e.BounceClass is not null)
            w.WriteString("bounce_class"u8, e.BounceClass);
        if (e.Attempt > 0)
            w.WriteNumber("attempt"u8, e.Attempt);
        if (e.Host is not null)
            w.WriteString("host"u8, e.Host);
        if (e.Ip is not null)
            w.WriteString("ip"u8, e.Ip);
        if (e.DsnQueueId != 0)
        {
            n = QueueIdGenerator.Format(e.DsnQueueId, text);
            w.WriteString("dsn_queue_id"u8, text[..n]);
        }
        if (e.Action is not null)
            w.WriteString("action"u8, e.Action);
        if (e.SenderDomain is not null)
            w.WriteString("sender_domain"u8, e.SenderDomain);
        if (e.ListId is not null)
            w.WriteString("list_id"u8, e.ListId);
        if (e.Tags is { Count: > 0 } tags)
        {
            w.WriteStartArray("tags"u8);
            foreach (var tag in tags)
                w.WriteStringValue(tag);
            w.WriteEndArray();
        }
        if (!e.Metadata.IsEmpty)
        {
            // Given by the injection as a JSON object; anything else is kept as a string rather than
            // breaking the batch it travels in.
            w.WritePropertyName("metadata"u8);
            if (IsJsonObject(e.Metadata.Span))
                w.WriteRawValue(e.Metadata.Span, skipInputValidation: true);
            else
                w.WriteStringValue(e.Metadata.Span);
        }
        w.WriteEndObject();
    }

    private static bool IsJsonObject(ReadOnlySpan<byte> json)
    {
        var reader = new Utf8JsonReader(json);
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
                return false;
            reader.Skip();
            return !reader.Read(); // nothing after the object
        }
        catch (JsonException)
        {
            return false;
        }
    }

    /// <summary>The id of the event with this journal sequence number: the journal's own id and the number, hex.</summary>
    public static string EventId(string journalId, long seq) => journalId + seq.ToString("x12", CultureInfo.InvariantCulture);

    /// <summary>
    /// A batch as the webhook receives it: a JSON array of the stored objects, each with
    /// <c>"id"</c> put first. The stored bytes are JSON objects written by <see cref="Serialize"/>,
    /// so splicing after their opening brace keeps them valid.
    /// </summary>
    public static byte[] WriteBatch(string journalId, IReadOnlyList<JournalRecord> records)
    {
        var buffer = new ArrayBufferWriter<byte>(256 + records.Count * 64);
        Put(buffer, "["u8);
        Span<byte> id = stackalloc byte[40];
        for (int i = 0; i < records.Count; i++)
        {
            var json = records[i].Json.Span;
            Put(buffer, i == 0 ? "{\"id\":\""u8 : ",{\"id\":\""u8);
            int n = System.Text.Encoding.ASCII.GetBytes(EventId(journalId, records[i].Seq), id);
            Put(buffer, id[..n]);
            Put(buffer, json.Length > 2 ? "\","u8 : "\""u8);
            Put(buffer, json[1..]);
        }
        Put(buffer, "]"u8);
        return buffer.WrittenSpan.ToArray();
    }

    private static void Put(ArrayBufferWriter<byte> buffer, ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(buffer.GetSpan(bytes.Length));
        buffer.Advance(bytes.Length);
    }
}
