using System.Text.Json.Serialization;

namespace SandboxRunc.Oci;

/// <summary>Source-generated (AOT-safe) serialisation for every JSON document the runtime reads or writes.</summary>
[JsonSourceGenerationOptions(
    WriteIndented = false,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    ReadCommentHandling = System.Text.Json.JsonCommentHandling.Skip,
    AllowTrailingCommas = true)]
[JsonSerializable(typeof(Spec))]
[JsonSerializable(typeof(Process))]
[JsonSerializable(typeof(OciState))]
[JsonSerializable(typeof(ContainerRecord))]
[JsonSerializable(typeof(List<OciState>), TypeInfoPropertyName = "ListOciState")]
[JsonSerializable(typeof(Features))]
internal sealed partial class OciJson : JsonSerializerContext
{
}

[JsonSourceGenerationOptions(WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(Spec))]
[JsonSerializable(typeof(Features))]
[JsonSerializable(typeof(OciState))]
[JsonSerializable(typeof(List<OciState>))]
internal sealed partial class OciJsonIndented : JsonSerializerContext
{
}
