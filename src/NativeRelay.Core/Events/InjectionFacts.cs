using System.Text;
using System.Text.Json;
using NativeRelay.Spool;

namespace NativeRelay.Events;

/// <summary>
/// What an HTTP injection kept with its message for the events (<see cref="Envelope.Metadata"/>:
/// <c>{"token", "pool", "tags", "metadata"}</c>, written by the API): the pool, the tags, and the
/// client's metadata object as raw JSON, passed through untouched. SMTP mail has none. Read only
/// when an event is published (events on, an injected message), so the parse stays off the hot path.
/// </summary>
public readonly record struct InjectionFacts(string? Pool, IReadOnlyList<string>? Tags, ReadOnlyMemory<byte> Metadata)
{
    public static InjectionFacts Of(Envelope? envelope)
    {
        if (envelope?.Metadata is not { Length: > 0 } blob)
            return default;
        try
        {
            using var document = JsonDocument.Parse(blob);
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                return default;
            string? pool = root.TryGetProperty("pool", out var p) && p.ValueKind == JsonValueKind.String ? p.GetString() : null;
            List<string>? tags = null;
            if (root.TryGetProperty("tags", out var t) && t.ValueKind == JsonValueKind.Array)
            {
                tags = new List<string>(t.GetArrayLength());
                foreach (var tag in t.EnumerateArray())
                    if (tag.ValueKind == JsonValueKind.String)
                        tags.Add(tag.GetString()!);
            }
            ReadOnlyMemory<byte> metadata = root.TryGetProperty("metadata", out var m) && m.ValueKind == JsonValueKind.Object
                ? Encoding.UTF8.GetBytes(m.GetRawText())
                : default;
            return new InjectionFacts(pool, tags, metadata);
        }
        catch (JsonException)
        {
            // Written by this relay, so never expected; a damaged blob costs the event its extras, not the event.
            return default;
        }
    }
}
