using System.Text.Json.Serialization;

namespace NativeRelay.Config;

// Source-generated so the native-AOT binary reads its configuration without reflection. Unknown
// keys are an error: a misspelt option silently ignored is how relays end up open.
[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    UnmappedMemberHandling = JsonUnmappedMemberHandling.Disallow,
    ReadCommentHandling = System.Text.Json.JsonCommentHandling.Skip,
    AllowTrailingCommas = true,
    WriteIndented = true)]
[JsonSerializable(typeof(RelayOptions))]
internal sealed partial class RelayOptionsJsonContext : JsonSerializerContext;
