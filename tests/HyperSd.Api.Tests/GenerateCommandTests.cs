using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Testing;
using static TorchSharp.torch;

namespace HyperSd.Api.Tests;

/// <summary><c>hypersd generate --lora</c> with a LoRA made for another base: a clear error naming the file and the key (or the
/// shapes), exit code 2, and no image written.</summary>
[Collection(nameof(ToyRunTests))]
public sealed class GenerateCommandTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("generate-lora-").FullName;

    public void Dispose() => Directory.Delete(dir, true);

    [Theory]
    [InlineData("sdxl", "key 'lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.")]
    [InlineData("narrower", "has down [4, ")]
    public void A_lora_for_another_base_is_refused_naming_the_file_and_the_key(string made, string what)
    {
        var lora = Path.Combine(dir, $"{made}.safetensors");
        if (made == "sdxl")
        {
            // an SDXL LoRA's keys in kohya's layout name modules an SD1.5-layout UNet does not have
            const string key = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q";
            SafeTensors.Save(lora, new Dictionary<string, Tensor>
            {
                [$"{key}.lora_down.weight"] = zeros(4, 640), [$"{key}.lora_up.weight"] = zeros(640, 4), [$"{key}.alpha"] = tensor(4f),
            });
        }
        else
        {
            // the same module names as the toy teacher's, made for a narrower UNet
            var (teacher, _) = TinyToy.WriteModels(Path.Combine(dir, "models"));
            using var unet = UNet2DConditionModel.FromPretrained(Path.Combine(teacher, "unet"));
            using var adapter = LoraAdapter.Create(unet, new LoraConfig(Rank: 4, Alpha: 4));
            LoraFormats.Save(adapter, lora, LoraFileFormat.Kohya);
        }
        var output = Path.Combine(dir, "out");
        var (code, error) = CliRun.Run(["generate", "--model", "toy", "-p", "a red circle", "--steps", "1", "--size", "32",
            "--lora", $"{lora}:0.8", "--out", output]);
        Assert.True(code == 2, $"exit code {code}: {error}");
        Assert.StartsWith($"hypersd: error: {lora}: ", error);
        Assert.Contains(what, error);
        Assert.Contains("(a LoRA for another base model?)", error);
        Assert.False(Directory.Exists(output) && Directory.EnumerateFiles(output).Any(), "an image was written");
    }
}
