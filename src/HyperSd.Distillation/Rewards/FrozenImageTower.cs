using HyperSd.Diffusion.IO;
using HyperSd.Distillation.Toy;

namespace HyperSd.Distillation.Rewards;

/// <summary>The frozen image tower that the learnt rewards read images with, as CLIP under the LAION predictor.</summary>
static class FrozenImageTower
{
    /// <summary>Copies <paramref name="weights"/> (if given) into <paramref name="tower"/> and freezes it.</summary>
    public static void Init(ToyRecognizer tower, ToyRecognizer? weights)
    {
        if (weights is not null)
            StateDict.Load(tower, StateDict.Of(weights), new("the given image encoder"));
        foreach (var p in tower.parameters()) p.requires_grad = false;
    }
}
