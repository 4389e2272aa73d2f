using HyperSd.Diffusion.Models.Resnets;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Unets;

/// <summary>diffusers' UNetMidBlock2D: resnet, then (self-attention with group norm and residual → resnet) per
/// layer. The VAE's mid block; in a UNet (mid_block_type "UNetMidBlock2D") a single resnet without attention.</summary>
public sealed class UNetMidBlock2D : UNetMidBlock
{
    readonly ModuleList<Attention.Attention> attentions;
    readonly ModuleList<ResnetBlock2D> resnets;

    public UNetMidBlock2D(long inChannels, long? tembChannels, int numLayers = 1, double resnetEps = 1e-6, string resnetActFn = "swish",
        int resnetGroups = 32, bool addAttention = true, long attentionHeadDim = 1, double outputScaleFactor = 1.0, double dropout = 0.0,
        Device? device = null, ScalarType? dtype = null) : base(nameof(UNetMidBlock2D))
    {
        resnets = nn.ModuleList(Enumerable.Range(0, numLayers + 1).Select(_ => new ResnetBlock2D(inChannels, inChannels, tembChannels,
            resnetGroups, resnetEps, dropout, resnetActFn, outputScaleFactor, device, dtype)).ToArray());
        attentions = nn.ModuleList(Enumerable.Range(0, addAttention ? numLayers : 0).Select(_ => new Attention.Attention(inChannels,
            heads: inChannels / attentionHeadDim, dimHead: attentionHeadDim, bias: true, normNumGroups: resnetGroups, eps: resnetEps,
            residualConnection: true, rescaleOutputFactor: outputScaleFactor, device: device, dtype: dtype)).ToArray());
        RegisterComponents();
    }

    public Tensor forward(Tensor hiddenStates, Tensor? temb = null) => forward(hiddenStates, temb, null);

    public override Tensor forward(Tensor hiddenStates, Tensor? temb, Tensor? encoderHiddenStates)
    {
        hiddenStates = resnets[0].call(hiddenStates, temb);
        for (int i = 1; i < resnets.Count; i++)
        {
            if (attentions.Count > 0) hiddenStates = attentions[i - 1].call(hiddenStates, null);
            hiddenStates = resnets[i].call(hiddenStates, temb);
        }
        return hiddenStates;
    }
}
