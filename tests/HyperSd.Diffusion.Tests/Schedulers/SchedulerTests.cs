using System.Text.Json.Nodes;
using HyperSd.Diffusion.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Tests.Schedulers;

public class SchedulerTests
{
    // Stable Diffusion's noise schedule
    static SchedulerConfig Config(string className, params (string Key, JsonNode? Value)[] overrides)
    {
        var json = new JsonObject
        {
            ["beta_start"] = 0.00085, ["beta_end"] = 0.012, ["beta_schedule"] = "scaled_linear",
            ["set_alpha_to_one"] = false, ["steps_offset"] = 1, ["clip_sample"] = false,
        };
        foreach (var (key, value) in overrides) json[key] = value;
        return SchedulerConfig.FromJson(json, className, "test config");
    }

    static long[] Values(Tensor t) => t.to(int64).data<long>().ToArray();

    static void AssertClose(Tensor expected, Tensor actual, double atol = 1e-5) =>
        Assert.True(actual.allclose(expected, rtol: 1e-5, atol: atol), $"max |diff| {(actual - expected).abs().max().item<float>()}");

    [Theory]
    [InlineData("DDIMScheduler")]
    [InlineData("TCDScheduler")]
    [InlineData("LCMScheduler")]
    [InlineData("EulerDiscreteScheduler")]
    public void More_steps_than_training_timesteps_fail_clearly(string className)
    {
        var scheduler = SchedulerFactory.FromConfig(Config(className));
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => scheduler.SetTimesteps(1001));
        Assert.Contains("between 1 and num_train_timesteps 1000, got 1001", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => scheduler.SetTimesteps(0));
    }

    [Fact]
    public void Consistency_schedules_cannot_have_more_steps_than_original_inference_steps()
    {
        var e = Assert.ThrowsAny<ArgumentException>(() => new LCMScheduler(Config("LCMScheduler")).SetTimesteps(51));
        Assert.Contains("original_inference_steps × strength = 50 × 1 leaves 50 timesteps, fewer than num_inference_steps 51", e.Message);
        e = Assert.ThrowsAny<ArgumentException>(() => new TCDScheduler(Config("TCDScheduler")).SetTimesteps(60, null, originalInferenceSteps: 50));
        Assert.Contains("num_inference_steps 60 is larger than original_inference_steps 50", e.Message);
    }

    [Fact]
    public void Step_before_SetTimesteps_fails_clearly()
    {
        using var x = randn(1, 4, 2, 2);
        var e = Assert.Throws<InvalidOperationException>(() => new DDIMScheduler(Config("DDIMScheduler")).Step(x, 999, x));
        Assert.Contains("SetTimesteps", e.Message);
    }

    [Fact]
    public void A_timestep_outside_the_schedule_names_the_schedule()
    {
        var tcd = new TCDScheduler(Config("TCDScheduler"));
        tcd.SetTimesteps(2);
        using var x = randn(1, 4, 2, 2);
        var e = Assert.Throws<ArgumentException>(() => tcd.Step(x, 500, x));
        Assert.Contains("timestep 500 is not in the schedule [999, 499]", e.Message);
    }

    [Theory]
    [InlineData("epsilon")]
    [InlineData("sample")]
    [InlineData("v_prediction")]
    public void Model_outputs_convert_back_to_the_x0_and_noise_that_made_x_t(string predictionType)
    {
        var ddpm = new DDPMScheduler(Config("DDPMScheduler", ("prediction_type", predictionType)));
        using var scope = NewDisposeScope();
        var x0 = randn(3, 4, 8, 8);
        var eps = randn(3, 4, 8, 8);
        var t = tensor(new long[] { 0, 500, 999 });
        var xt = ddpm.AddNoise(x0, eps, t);
        var modelOutput = predictionType switch
        {
            "epsilon" => eps,
            "sample" => x0,
            _ => ddpm.GetVelocity(x0, eps, t),
        };
        var (predX0, predEps) = ddpm.ConvertModelOutput(modelOutput, t, xt);
        AssertClose(x0, predX0, 1e-3);  // x̂0 = (x_t − √(1−ᾱ)ε)/√ᾱ amplifies rounding at t = 999
        AssertClose(eps, predEps, 1e-3);
    }

    [Fact]
    public void The_ddim_jump_is_the_deterministic_ddim_step()
    {
        var ddim = new DDIMScheduler(Config("DDIMScheduler", ("timestep_spacing", "trailing")));
        ddim.SetTimesteps(4);
        Assert.Equal([999, 749, 499, 249], Values(ddim.Timesteps));
        using var scope = NewDisposeScope();
        var sample = randn(2, 4, 8, 8);
        var modelOutput = randn(2, 4, 8, 8);
        foreach (var (t, prev) in new[] { (999L, 749L), (249L, -1L) })
        {
            var step = ddim.Step(modelOutput, t, sample);
            var (x0, eps) = ddim.ConvertModelOutput(modelOutput, t, sample);
            AssertClose(step.PredOriginalSample, x0, 0);
            AssertClose(step.PrevSample, ddim.DdimJump(x0, eps, prev), 0);
        }
    }

    [Fact]
    public void Jumping_below_zero_reaches_the_data_with_final_alpha_cumprod()
    {
        var ddpm = new DDPMScheduler(Config("DDPMScheduler", ("set_alpha_to_one", true)));
        using var scope = NewDisposeScope();
        var x0 = randn(2, 4, 4, 4);
        var eps = randn(2, 4, 4, 4);
        AssertClose(x0, ddpm.DdimJump(x0, eps, -1), 0);
        // per-sample targets: one to the data, one to t = 0 (ᾱ_0 < 1)
        var jumped = ddpm.DdimJump(x0, eps, tensor(new long[] { -1, 0 }));
        AssertClose(x0[0], jumped[0], 0);
        AssertClose(ddpm.AddNoise(x0.narrow(0, 1, 1), eps.narrow(0, 1, 1), tensor(new long[] { 0 }))[0], jumped[1], 0);
    }

    [Fact]
    public void Replayed_noise_gives_what_the_generator_draws()
    {
        var ddim = new DDIMScheduler(Config("DDIMScheduler")) { Eta = 1.0 };
        ddim.SetTimesteps(10);
        using var scope = NewDisposeScope();
        var sample = randn(1, 4, 8, 8);
        var modelOutput = randn(1, 4, 8, 8);
        var drawn = ddim.Step(modelOutput, 901, sample, new Generator(7, CPU));
        var replayed = ddim.Step(modelOutput, 901, sample, noise: randn(new long[] { 1, 4, 8, 8 }, generator: new Generator(7, CPU)));
        AssertClose(drawn.PrevSample, replayed.PrevSample, 0);
        AssertClose(drawn.Noise!, replayed.Noise!, 0);
        ddim.Eta = 0;
        Assert.Null(ddim.Step(modelOutput, 901, sample).Noise);

        ddim.Eta = 1;
        Assert.Throws<ArgumentException>(() => ddim.Step(modelOutput, 901, sample, new Generator(7, CPU), randn(1, 4, 8, 8)));
        var e = Assert.Throws<ArgumentException>(() => ddim.Step(modelOutput, 901, sample, noise: randn(2, 4, 8, 8)));
        Assert.Contains("noise has shape [2, 4, 8, 8] but the model output has [1, 4, 8, 8]", e.Message);
    }

    [Fact]
    public void Tcd_takes_custom_timesteps_and_adds_no_noise_on_its_last_step()
    {
        var tcd = new TCDScheduler(Config("TCDScheduler")) { Eta = 1.0 };
        tcd.SetTimesteps([800]);
        Assert.Equal([800], Values(tcd.Timesteps));
        using var scope = NewDisposeScope();
        var sample = randn(1, 4, 8, 8);
        var output = tcd.Step(randn(1, 4, 8, 8), 800, sample);
        Assert.Null(output.Noise);
        AssertClose(output.PredNoisedSample!, output.PrevSample, 0);
        Assert.Throws<ArgumentException>(() => tcd.SetTimesteps([500, 800]));
    }

    [Fact]
    public void Tcd_and_lcm_pick_from_the_origin_grid()
    {
        var lcm = new LCMScheduler(Config("LCMScheduler"));
        lcm.SetTimesteps(4);
        Assert.Equal([999, 759, 499, 259], Values(lcm.Timesteps));
        lcm.SetTimesteps(4, null, originalInferenceSteps: 100);
        Assert.Equal([999, 749, 499, 249], Values(lcm.Timesteps));
        // diffusers' TCD picks from every training timestep when original_inference_steps is given explicitly
        var tcd = new TCDScheduler(Config("TCDScheduler"));
        tcd.SetTimesteps(3, null, originalInferenceSteps: 50);
        Assert.Equal([999, 666, 333], Values(tcd.Timesteps));
        // strength keeps the lower part of the grid (img2img)
        tcd.SetTimesteps(2, null, null, strength: 0.5);
        Assert.Equal([499, 259], Values(tcd.Timesteps));
    }

    [Fact]
    public void Tcd_refuses_gamma_outside_0_to_1()
    {
        var tcd = new TCDScheduler(Config("TCDScheduler")) { Eta = 1.5 };
        tcd.SetTimesteps(2);
        using var x = randn(1, 4, 2, 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => tcd.Step(x, 999, x));
    }

    [Fact]
    public void Beta_schedules_follow_diffusers()
    {
        using var scope = NewDisposeScope();
        var linear = NoiseSchedule.Betas(Config("DDPMScheduler", ("beta_schedule", "linear"), ("beta_start", 0.0001), ("beta_end", 0.02)));
        Assert.Equal(0.0001f, linear[0].item<float>());
        Assert.Equal(0.02f, linear[999].item<float>());

        var cosine = NoiseSchedule.Betas(Config("DDPMScheduler", ("beta_schedule", "squaredcos_cap_v2")));
        static double AlphaBar(double t) => Math.Pow(Math.Cos((t + 0.008) / 1.008 * Math.PI / 2), 2);
        Assert.Equal((float)(1 - AlphaBar(1 / 1000.0) / AlphaBar(0)), cosine[0].item<float>());
        Assert.Equal(0.999f, cosine[999].item<float>());

        var zeroSnr = new DDPMScheduler(Config("DDPMScheduler", ("rescale_betas_zero_snr", true)));
        Assert.Equal(0f, zeroSnr.AlphasCumprod[999].item<float>(), 1e-7f);
        var plain = new DDPMScheduler(Config("DDPMScheduler"));
        Assert.Equal(plain.AlphasCumprod[0].item<float>(), zeroSnr.AlphasCumprod[0].item<float>(), 1e-6f);
        // Euler keeps σ_T finite
        var euler = new EulerDiscreteScheduler(Config("EulerDiscreteScheduler", ("rescale_betas_zero_snr", true)));
        Assert.Equal(MathF.Pow(2, -24), euler.AlphasCumprod[999].item<float>());
    }

    [Fact]
    public void Thresholding_clamps_each_sample_at_its_quantile()
    {
        var ddpm = new DDPMScheduler(Config("DDPMScheduler", ("thresholding", true), ("dynamic_thresholding_ratio", 0.5), ("sample_max_value", 3.0)));
        using var scope = NewDisposeScope();
        // |x| medians: 2.5 (→ s = 2.5) and 0.5 (→ s = 1, a plain clamp to [−1, 1])
        var x = tensor(new float[] { 1, -2, 3, -4, 0.1f, 0.2f, -0.8f, 5 }).reshape(2, 1, 2, 2);
        var expected = tensor(new float[] { 0.4f, -0.8f, 1, -1, 0.1f, 0.2f, -0.8f, 1 }).reshape(2, 1, 2, 2);
        AssertClose(expected, ddpm.ThresholdSample(x), 1e-6);
    }

    [Fact]
    public void Euler_interpolates_fractional_linspace_timesteps_and_scales_its_input()
    {
        var euler = new EulerDiscreteScheduler(Config("EulerDiscreteScheduler"));
        euler.SetTimesteps(7);
        var timesteps = euler.Timesteps.data<float>().ToArray();
        Assert.Equal([999f, 832.5f, 666f, 499.5f, 333f, 166.5f, 0f], timesteps);
        using var scope = NewDisposeScope();
        var ac = euler.AlphasCumprod;
        float Sigma(int t) => MathF.Sqrt((1 - ac[t].item<float>()) / ac[t].item<float>());
        var sigmas = euler.Sigmas.data<float>().ToArray();
        Assert.Equal(8, sigmas.Length);
        Assert.Equal(Sigma(999), sigmas[0], 1e-5f);
        Assert.Equal((Sigma(832) + Sigma(833)) / 2, sigmas[1], 1e-5f);
        Assert.Equal(0f, sigmas[7]);
        Assert.Equal(sigmas[0], euler.InitNoiseSigma, 1e-6);

        var sample = randn(1, 4, 2, 2);
        AssertClose(sample / MathF.Sqrt(sigmas[1] * sigmas[1] + 1), euler.ScaleModelInput(sample, 832.5), 1e-6);
        var noise = randn(1, 4, 2, 2);
        AssertClose(sample + sigmas[1] * noise, euler.AddNoise(sample, noise, tensor(new[] { 832.5f })), 1e-6);

        var leading = new EulerDiscreteScheduler(Config("EulerDiscreteScheduler", ("timestep_spacing", "leading")));
        leading.SetTimesteps(4);
        Assert.Equal([751f, 501f, 251f, 1f], leading.Timesteps.data<float>().ToArray());
        float max = leading.Sigmas.max().item<float>();
        Assert.Equal(MathF.Sqrt(max * max + 1), leading.InitNoiseSigma, 1e-5);
    }
}
