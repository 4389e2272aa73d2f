using System.Security.Cryptography;
using System.Text;

namespace HyperSd.Recipes;

/// <summary>The recipe back to YAML, and its hash.</summary>
public sealed partial record Recipe
{
    /// <summary>The normalised YAML: every field, defaults filled in, fixed key order, no comments.</summary>
    public string ToYaml() => RecipeLoader.Serializer.Serialize(this with
    {
        // descending k, as the stages run, whatever order the file gave
        Tscd = Tscd with { Weights = Tscd.Weights.OrderByDescending(kv => kv.Key).ToDictionary() },
    });

    /// <summary>SHA-256 (lower-case hex) of <see cref="ToYaml"/>: equal for recipes that mean the same run.</summary>
    public string Sha256() => Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(ToYaml())));
}
