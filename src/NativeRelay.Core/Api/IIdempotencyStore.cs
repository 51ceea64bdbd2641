namespace NativeRelay.Api;

/// <summary>
/// Idempotency keys held for a whole fleet (the cluster stage's <c>SharedIdempotency</c>), beside
/// this node's <see cref="IdempotencyJournal"/>: a key sent to two nodes injects once. Without a
/// fleet there is none and the journal alone decides. Neither call fails for want of Redis: the
/// node then decides alone (its own journal), as without a fleet.
/// </summary>
public interface IIdempotencyStore
{
    /// <summary>
    /// Null when this request holds the key for the fleet now (it must then call
    /// <see cref="CompleteAsync"/>), or when the fleet cannot be asked; otherwise the answer the
    /// fleet kept for it (after waiting while another node's request with the key is under way).
    /// </summary>
    Task<IdempotencyRecord?> ClaimAsync(string token, string key, DateTimeOffset now);

    /// <summary>Keeps the answer for the fleet (null: the request kept nothing, and the key is free again).</summary>
    Task CompleteAsync(string token, string key, IdempotencyRecord? answer);
}
