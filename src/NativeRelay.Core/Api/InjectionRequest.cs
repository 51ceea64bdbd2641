using System.Text.Json;
using System.Text.Json.Serialization;

namespace NativeRelay.Api;

/// <summary>
/// The body of <c>POST /api/v1/messages</c>. The names are fixed by issue 27 (snake_case); an
/// unknown name is refused, so a misspelt field is an error rather than silently ignored.
/// </summary>
public sealed class InjectionRequest
{
    public string? From { get; set; }
    public List<InjectionRecipient>? Recipients { get; set; }
    public string? Subject { get; set; }
    public string? Text { get; set; }
    public string? Html { get; set; }
    public Dictionary<string, string>? Headers { get; set; }
    public List<InjectionAttachment>? Attachments { get; set; }
    /// <summary>A complete RFC 5322 message, instead of subject/text/html/headers/attachments.</summary>
    public string? Raw { get; set; }
    public string? Pool { get; set; }
    public List<string>? Tags { get; set; }
    /// <summary>Any JSON object; it comes back in every event of the message.</summary>
    public JsonElement? Metadata { get; set; }
    /// <summary>RFC 3339 time (e.g. 2026-12-08T10:00:00Z) before which the message is not sent.</summary>
    public string? DeliverAfter { get; set; }
    public string? IdempotencyKey { get; set; }
}

public sealed class InjectionRecipient
{
    public string? Email { get; set; }
    public string? Name { get; set; }
    public Dictionary<string, string>? Substitutions { get; set; }
}

public sealed class InjectionAttachment
{
    public string? Filename { get; set; }
    public string? ContentType { get; set; }
    /// <summary>The content, base64.</summary>
    public string? Data { get; set; }
}

/// <summary>The 202 answer: each recipient either accepted with its queue id or rejected with why.</summary>
public sealed class InjectionResponse
{
    /// <summary>Only when nothing was accepted (422).</summary>
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Error { get; set; }

    public List<AcceptedRecipient> Accepted { get; set; } = [];
    public List<RejectedRecipient> Rejected { get; set; } = [];
}

public sealed class AcceptedRecipient
{
    public required string Email { get; set; }
    public required string QueueId { get; set; }
}

public sealed class RejectedRecipient
{
    public required string Email { get; set; }
    public required string Error { get; set; }
}

/// <summary>Every 4xx/5xx answer: what is wrong and, where it is one field, which (a JSON path such as <c>$.recipients[3].email</c>).</summary>
public sealed class ApiError
{
    public required string Error { get; set; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Field { get; set; }
}

/// <summary>What the spool keeps of an injection for the events (<see cref="Spool.Envelope.Metadata"/>).</summary>
public sealed class InjectionMetadata
{
    public string? Token { get; set; }
    public string? Pool { get; set; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public List<string>? Tags { get; set; }
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public JsonElement? Metadata { get; set; }
}

/// <summary>One line of the idempotency journal (IdempotencyJournal).</summary>
public sealed class IdempotencyRecord
{
    public required string Token { get; set; }
    public required string Key { get; set; }
    public long AtUnixMs { get; set; }
    public int Status { get; set; }
    public required string Body { get; set; }
}

// Source-generated: no reflection in the native binary. Unknown members are refused.
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    DefaultIgnoreCondition = JsonIgnoreCondition.Never)]
[JsonSerializable(typeof(InjectionRequest))]
[JsonSerializable(typeof(InjectionResponse))]
[JsonSerializable(typeof(ApiError))]
[JsonSerializable(typeof(InjectionMetadata))]
[JsonSerializable(typeof(IdempotencyRecord))]
internal sealed partial class ApiJsonContext : JsonSerializerContext;
