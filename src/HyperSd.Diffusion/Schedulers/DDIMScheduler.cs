using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Schedulers;

/// <summary>diffusers' DDIMScheduler (arXiv 2010.02502): leading / trailing / linspace spacing, epsilon / sample /
/// v_prediction, and η-scaled noise. With "trailing" spacing it is the sampler of fixed-step Hyper-SD LoRAs.</summary>
public sealed class DDIMScheduler : DDPMScheduler, IScheduler
{
    public DDIMScheduler(SchedulerConfig config) : base(config)
    {
        Timesteps = TimestepSpacing.AllTrainTimesteps(config.NumTrainTimesteps);
    }

    public Tensor Timesteps { get; private set; }
    public int? NumInferenceSteps { get; private set; }

    /// <summary>η of formula 16: 0 is deterministic DDIM, 1 is DDPM-like (diffusers' step argument <c>eta</c>).</summary>
    public double Eta { get; set; }

    public void SetTimesteps(int numInferenceSteps, Device? device = null)
    {
        var values = TimestepSpacing.Compute(Config, numInferenceSteps).Select(t => (long)Math.Round(t)).ToArray();
        Timesteps = tensor(values, int64, device).DetachFromDisposeScope();
        NumInferenceSteps = numInferenceSteps;
    }

    public Tensor ScaleModelInput(Tensor sample, double timestep) => sample;

    public SchedulerOutput Step(Tensor modelOutput, double timestep, Tensor sample, Generator? generator = null, Tensor? noise = null,
        IReadOnlyList<Generator>? generators = null)
    {
        int steps = NumInferenceSteps ?? throw new InvalidOperationException("call SetTimesteps before Step");
        long t = TimestepIndex.Integral(timestep);
        long prev = t - NumTrainTimesteps / steps;
        var drawn = Eta > 0 ? StepNoise.Take(modelOutput, generator, noise, generators) : null;

        using var scope = NewDisposeScope();
        using var tt = tensor(t);
        using var tp = tensor(prev);
        var (x0, eps) = ConvertModelOutput(modelOutput, tt, sample);
        x0 = ClipOrThreshold(x0);
        var aPrev = PerSample(AlphaProd(tp, sample.device), sample);
        var std = Eta * PerSample(GetVariance(tt, tp, sample.device), sample).sqrt();
        var prevSample = Jump(x0, eps, aPrev, std);
        if (drawn is not null) prevSample = prevSample + std * drawn;
        return new(prevSample.MoveToOuterDisposeScope(), x0.MoveToOuterDisposeScope()) { Noise = drawn };
    }
}
