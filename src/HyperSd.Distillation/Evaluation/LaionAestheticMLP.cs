using HyperSd.Diffusion.IO;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Evaluation;

/// <summary>
/// The LAION aesthetic predictor's head (christophschuhmann/improved-aesthetic-predictor, <c>MLP</c> in
/// simple_inference.py): Linear(768, 1024), Dropout(0.2), Linear(1024, 128), Dropout(0.2), Linear(128, 64), Dropout(0.1),
/// Linear(64, 16), Linear(16, 1), no activations, in an <c>nn.Sequential</c> named <c>layers</c>; so its state-dict keys
/// are layers.0, .2, .4, .6 and .7 (the dropouts hold nothing). The released weights
/// (<c>sac+logos+ava1-l14-linearMSE.pth</c>) are a pickle: convert them to safetensors with their key names unchanged.
/// </summary>
public sealed class LaionAestheticMLP : nn.Module<Tensor, Tensor>
{
    /// <summary>CLIP ViT-L/14's image embedding width, which the released predictor takes.</summary>
    public const int ViTL14Width = 768;

    readonly Sequential layers;

    public int InputSize { get; }

    public LaionAestheticMLP(int inputSize = ViTL14Width, Device? device = null) : base(nameof(LaionAestheticMLP))
    {
        InputSize = inputSize;
        layers = nn.Sequential(
            nn.Linear(inputSize, 1024, device: device), nn.Dropout(0.2),
            nn.Linear(1024, 128, device: device), nn.Dropout(0.2),
            nn.Linear(128, 64, device: device), nn.Dropout(0.1),
            nn.Linear(64, 16, device: device),
            nn.Linear(16, 1, device: device));
        RegisterComponents();
    }

    /// <param name="embeddings">[N, input_size] L2-normalised CLIP image embeddings.</param>
    /// <returns>[N, 1] predicted aesthetic ratings (roughly 1–10).</returns>
    public override Tensor forward(Tensor embeddings) => layers.call(embeddings);

    /// <summary>Loads the predictor from a safetensors file with the original key names, in eval mode; missing, unexpected
    /// or misshapen keys are reported with the file and both shapes.</summary>
    public static LaionAestheticMLP FromPretrained(string path, int inputSize = ViTL14Width, Device? device = null)
    {
        var model = new LaionAestheticMLP(inputSize, device);
        var tensors = SafeTensors.Load(path);
        try
        {
            StateDict.Load(model, tensors, new WeightSource(path));
        }
        catch
        {
            model.Dispose();
            throw;
        }
        finally
        {
            foreach (var t in tensors.Values) t.Dispose();
        }
        model.eval();
        return model;
    }
}
