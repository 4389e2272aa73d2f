using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Models.Autoencoders;

/// <summary>diffusers' AutoencoderKL (the Stable Diffusion VAE): encoder → quant_conv → posterior;
/// post_quant_conv → decoder. Images are in [−1, 1]; scaling/shift factors are applied by the caller (pipelines).</summary>
public sealed class AutoencoderKL : nn.Module, IAutoencoder
{
    public AutoencoderKLConfig Config { get; }

    readonly Encoder encoder;
    readonly Decoder decoder;
    readonly Conv2d? quant_conv;
    readonly Conv2d? post_quant_conv;

    public AutoencoderKL(AutoencoderKLConfig config, Device? device = null, ScalarType? dtype = null) : base(nameof(AutoencoderKL))
    {
        config.Validate();
        Config = config;
        var c = config;
        encoder = new Encoder(c.InChannels, c.LatentChannels, c.BlockOutChannels, c.LayersPerBlock, c.NormNumGroups, c.ActFn,
            doubleZ: true, c.MidBlockAddAttention, device, dtype);
        decoder = new Decoder(c.LatentChannels, c.OutChannels, c.BlockOutChannels, c.LayersPerBlock, c.NormNumGroups, c.ActFn,
            c.MidBlockAddAttention, device, dtype);
        if (c.UseQuantConv)
            quant_conv = nn.Conv2d(2 * c.LatentChannels, 2 * c.LatentChannels, 1, stride: 1, padding: 0L, device: device, dtype: dtype);
        if (c.UsePostQuantConv)
            post_quant_conv = nn.Conv2d(c.LatentChannels, c.LatentChannels, 1, stride: 1, padding: 0L, device: device, dtype: dtype);
        RegisterComponents();
    }

    public static AutoencoderKL FromPretrained(string dir, Device? device = null, ScalarType? dtype = null, string? variant = null) =>
        PretrainedModel.Load<AutoencoderKLConfig, AutoencoderKL>(dir, c => new AutoencoderKL(c, device, dtype), variant);

    public void SavePretrained(string dir) => PretrainedModel.Save(this, Config, dir);

    public int LatentChannels => Config.LatentChannels;
    public int ScaleFactor => 1 << (Config.BlockOutChannels.Length - 1);

    public Tensor EncodeLatents(Tensor images, Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        using var posterior = Encode(images * 2 - 1);
        var z = posterior.Sample(generator);
        if (Config.ShiftFactor is { } shift) z = z - shift;
        return (z * Config.ScalingFactor).MoveToOuterDisposeScope();
    }

    public Tensor DecodeLatents(Tensor latents)
    {
        using var scope = NewDisposeScope();
        var z = latents / Config.ScalingFactor;
        if (Config.ShiftFactor is { } shift) z = z + shift;
        return (Decode(z) / 2 + 0.5).clamp(0, 1).MoveToOuterDisposeScope();
    }

    /// <summary>Encodes images (batch, in_channels, H, W) in [−1, 1] to the latent posterior.</summary>
    public DiagonalGaussianDistribution Encode(Tensor image)
    {
        using var scope = NewDisposeScope();
        var moments = encoder.call(image);
        if (quant_conv is not null) moments = quant_conv.call(moments);
        var posterior = new DiagonalGaussianDistribution(moments);
        foreach (var t in new[] { posterior.Mean, posterior.LogVar, posterior.Std, posterior.Var }) t.MoveToOuterDisposeScope();
        return posterior;
    }

    /// <summary>Decodes (unscaled) latents (batch, latent_channels, h, w) to images, roughly in [−1, 1].</summary>
    public Tensor Decode(Tensor latents)
    {
        using var scope = NewDisposeScope();
        var z = post_quant_conv is null ? latents : post_quant_conv.call(latents);
        return decoder.call(z).MoveToOuterDisposeScope();
    }
}
