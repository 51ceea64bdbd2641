namespace NativeRelay.Api;

/// <summary>
/// What one configuration of the API is: its settings, the tokens file and the unsubscribe key,
/// all loaded (so checked) before a reload swaps it in. Requests read the one current when they start.
/// </summary>
public sealed record ApiConfiguration(HttpSettings Settings, TokenStore Tokens, UnsubscribeLinks? Unsubscribe)
{
    /// <exception cref="NativeRelay.Config.ConfigException">The tokens file or the unsubscribe key cannot be read.</exception>
    public static ApiConfiguration Load(HttpSettings settings) =>
        new(settings, TokenStore.Load(settings.TokensFile), settings.Unsubscribe is { } u ? UnsubscribeLinks.Load(u) : null);
}
