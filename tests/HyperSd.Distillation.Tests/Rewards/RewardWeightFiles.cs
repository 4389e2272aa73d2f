using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Models;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Rewards;

/// <summary>Checks shared by the reward models' save/load tests.</summary>
static class RewardWeightFiles
{
    /// <summary>Breaks a saved model folder, one key misshapen and one missing, and checks that loading it names the file, both
    /// keys and both shapes of the misshapen one.</summary>
    public static void AssertBrokenWeightsAreNamed(string dir, string misshapenKey, string missingKey, Action<string> load)
    {
        var file = Path.Combine(dir, PretrainedModel.WeightsName + ".safetensors");
        var tensors = SafeTensors.Load(file);
        try
        {
            var shape = $"[{string.Join(", ", tensors[misshapenKey].shape)}]";
            tensors[misshapenKey].Dispose();
            tensors[misshapenKey] = zeros(3, 5);
            tensors.Remove(missingKey, out var missing);
            missing?.Dispose();
            SafeTensors.Save(file, tensors);
            var e = Assert.Throws<WeightLoadException>(() => load(dir));
            Assert.Contains($"key '{misshapenKey}' in {file} has shape [3, 5], the model expects {shape}", e.Message);
            Assert.Contains($"missing key '{missingKey}'", e.Message);
            Assert.Contains(e.Problems, p => p.Contains(missingKey) && p.Contains(file));
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
    }
}
