using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.SegmentConsistency;

/// <summary>
/// The model TSCD trains: a LoRA on the frozen teacher UNet (attached only while the student predicts, so the same
/// UNet serves as teacher and discriminator backbone otherwise), or a full trainable copy of the teacher.
/// </summary>
public sealed class SegmentStudent : IDisposable
{
    public UNet2DConditionModel Teacher { get; }
    public LoraAdapter? Lora { get; }

    /// <summary>The fully fine-tuned copy (null for a LoRA student).</summary>
    public UNet2DConditionModel? Unet { get; }

    /// <summary>The module whose parameters train: the adapter or the UNet copy.</summary>
    public nn.Module Trainable => Lora ?? (nn.Module)Unet!;

    SegmentStudent(UNet2DConditionModel teacher, LoraAdapter? lora, UNet2DConditionModel? unet)
    {
        Teacher = teacher; Lora = lora; Unet = unet;
        LoraAdapter.FreezeBase(teacher);
        teacher.eval();
    }

    /// <summary>Trains <paramref name="lora"/> (in place; the student now owns it) on <paramref name="teacher"/>;
    /// freezes the teacher.</summary>
    public static SegmentStudent WithLora(UNet2DConditionModel teacher, LoraAdapter lora)
    {
        if (lora.IsAttached)
            throw new ArgumentException("the student's LoRA must not be attached: it is attached only while the student predicts");
        return new SegmentStudent(teacher, lora, null);
    }

    /// <summary>A new LoRA whose down weights are drawn (PEFT's Kaiming-uniform, bound 1/√fan_in) from
    /// <paramref name="generator"/> and whose up weights are zero, so the student starts as the teacher.</summary>
    public static SegmentStudent WithLora(UNet2DConditionModel teacher, LoraConfig config, Generator generator)
    {
        var device = teacher.parameters().First().device;
        var lora = LoraAdapter.Create(teacher, config, device);
        using (no_grad())
            foreach (var layer in lora.Layers.Values)
            {
                var down = layer.DownWeight;
                double bound = 1 / Math.Sqrt(down.numel() / down.shape[0]);
                down.uniform_(-bound, bound, generator);
            }
        return new SegmentStudent(teacher, lora, null);
    }

    /// <summary>A trainable copy of the teacher (full fine-tuning).</summary>
    public static SegmentStudent FullCopy(UNet2DConditionModel teacher)
    {
        var device = teacher.parameters().First().device;
        var copy = new UNet2DConditionModel(teacher.Config, device, teacher.parameters().First().dtype);
        using (no_grad())
        {
            var source = teacher.state_dict();
            foreach (var (key, value) in copy.state_dict()) value.copy_(source[key]);
        }
        copy.eval();
        return new SegmentStudent(teacher, null, copy);
    }

    /// <summary>The student's model output at (x, t) for the condition; <paramref name="features"/> collects its block outputs
    /// (a discriminator's backbone).</summary>
    public Tensor Predict(Tensor sample, Tensor timesteps, PromptCondition condition, UNetFeatures? features = null)
    {
        if (Unet is not null) return condition.Predict(Unet, sample, timesteps, features);
        Lora!.Attach(Teacher);
        try { return condition.Predict(Teacher, sample, timesteps, features); }
        finally { Lora.Detach(); }
    }

    /// <summary>Disposes what trains (the LoRA or the UNet copy); the teacher belongs to the caller.</summary>
    public void Dispose()
    {
        Lora?.Dispose();
        Unet?.Dispose();
    }
}
