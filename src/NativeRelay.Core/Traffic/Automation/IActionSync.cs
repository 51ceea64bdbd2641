namespace NativeRelay.Traffic.Automation;

/// <summary>
/// The automation's way to the rest of a fleet (the cluster stage's <c>SharedActions</c>): an
/// action this node put in force, or an operator's resume, is told to the other nodes, which put
/// it into their own <see cref="ActionTable"/>. Without a fleet there is none and nothing changes.
/// Both calls return at once (a loop's thread or the control socket calls them); the sending
/// happens in the background and never waits for Redis.
/// </summary>
public interface IActionSync
{
    /// <summary>This node's automation put <paramref name="action"/> in force on the path (new, or extended when <paramref name="added"/> is false).</summary>
    void Applied(string source, string site, TrafficAction action, bool added);

    /// <summary>The operator lifted the actions on <paramref name="site"/> (from every source, or from <paramref name="source"/>) on this node.</summary>
    void Resumed(string site, string? source);
}
