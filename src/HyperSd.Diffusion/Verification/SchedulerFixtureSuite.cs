using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using HyperSd.Diffusion.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Verification;

/// <summary>Checks the schedulers against diffusers' sampling chains in <c>schedulers/</c>, driven entirely by its
/// fixture.json: per case the scheduler class and config, set_timesteps and step arguments, the timesteps (and
/// sigmas), then every step from <c>x_init</c> with <c>model_output_{i mod M}</c>, replaying the recorded noise draws
/// <c>{tag}_noise_{j}</c> and comparing <c>{tag}_prev_{i}</c> and whichever side outputs are recorded. Also the
/// forward process on the top-level config: alphas_cumprod, add_noise and get_velocity.</summary>
public sealed partial class SchedulerFixtureSuite : IFixtureSuite
{
    public string Folder => "schedulers";

    public IEnumerable<FixtureCheck> Run(string folder)
    {
        var fixture = new FixtureFolder(folder);
        var io = fixture.Io();
        foreach (var check in ForwardProcess(fixture, io)) yield return check;
        foreach (var node in fixture.Json["cases"]?.AsArray() ?? [])
        {
            var c = node!.AsObject();
            var tag = c["tag"]?.GetValue<string>() ?? "case";
            List<FixtureCheck> checks;
            try
            {
                using var scope = NewDisposeScope();
                checks = RunCase(fixture, c, tag, io);
            }
            catch (Exception e)
            {
                checks = [new FixtureCheck(tag, double.NaN, "-", false, $"error: {e.Message}")];
            }
            foreach (var check in checks) yield return check;
        }
    }

    static IEnumerable<FixtureCheck> ForwardProcess(FixtureFolder fixture, Dictionary<string, Tensor> io)
    {
        string[] recorded = ["alphas_cumprod", "addnoise_expected", "velocity_expected"];
        if (!recorded.Any(io.ContainsKey)) yield break;
        var configJson = fixture.Json["config"] as JsonObject
            ?? throw new InvalidDataException($"{fixture.Dir}/fixture.json: no top-level config for the forward process");
        var ddpm = new DDPMScheduler(SchedulerConfig.FromJson(configJson, nameof(DDPMScheduler), $"{fixture.Dir}/fixture.json config"));
        if (io.TryGetValue("alphas_cumprod", out var alphasCumprod))
            yield return FixtureCheck.Compare("alphas_cumprod", ddpm.AlphasCumprod, alphasCumprod, fixture.Atol, fixture.Rtol);
        if (io.TryGetValue("addnoise_expected", out var noised))
            yield return FixtureCheck.Compare("add_noise", ddpm.AddNoise(io["addnoise_x0"], io["addnoise_noise"], io["addnoise_t"]),
                noised, fixture.Atol, fixture.Rtol);
        if (io.TryGetValue("velocity_expected", out var velocity))
            yield return FixtureCheck.Compare("get_velocity", ddpm.GetVelocity(io["addnoise_x0"], io["addnoise_noise"], io["addnoise_t"]),
                velocity, fixture.Atol, fixture.Rtol);
    }

    static List<FixtureCheck> RunCase(FixtureFolder fixture, JsonObject c, string tag, Dictionary<string, Tensor> io)
    {
        var className = c["scheduler"]?.GetValue<string>() ?? throw new InvalidDataException($"case {tag}: no scheduler");
        var configJson = c["config"] as JsonObject ?? fixture.Json["config"] as JsonObject ?? [];
        var scheduler = SchedulerFactory.FromConfig(
            SchedulerConfig.FromJson(configJson, className, $"{fixture.Dir}/fixture.json case {tag}"));
        SetTimesteps(scheduler, c["steps"]!.GetValue<int>(), c["set_timesteps_kwargs"] as JsonObject);
        ApplyStepKwargs(scheduler, c["step_kwargs"] as JsonObject);
        double atol = c["atol"]?.GetValue<double>() ?? fixture.Atol, rtol = c["rtol"]?.GetValue<double>() ?? fixture.Rtol;

        var timesteps = scheduler.Timesteps.to(float64).cpu().data<double>().ToArray();
        var checks = new List<FixtureCheck>
        {
            FixtureCheck.Exact($"{tag}/timesteps", timesteps, c["timesteps"]!.AsArray().Select(t => t!.GetValue<double>())),
        };
        if (c["sigmas"] is JsonArray sigmas)
            checks.Add(scheduler is EulerDiscreteScheduler euler
                ? FixtureCheck.Compare(
                    $"{tag}/sigmas", euler.Sigmas, tensor(sigmas.Select(s => s!.GetValue<double>()).ToArray()), atol, rtol)
                : new FixtureCheck($"{tag}/sigmas", double.NaN, "-", false, $"{className} has no sigmas"));

        int modelOutputs = io.Keys.Count(k => ModelOutputKey().IsMatch(k));
        if (modelOutputs == 0) throw new InvalidDataException($"{fixture.Dir}/io.safetensors: no model_output_{{i}} tensors");
        // side outputs recorded for this tag: {tag}_{kind}_{i} (kind without '_', so "ddim_4" skips "ddim_4_vpred_…")
        var kinds = io.Keys.Where(k => k.StartsWith(tag + "_", StringComparison.Ordinal))
            .Select(k => StepKey().Match(k[(tag.Length + 1)..])).Where(m => m.Success)
            .Select(m => m.Groups["kind"].Value).Where(k => k != "noise").Distinct().Order().ToList();
        var results = kinds.ToDictionary(k => k, _ => new List<(int Step, FixtureCheck Check)>());

        var sample = io["x_init"];
        int draws = 0;
        for (int i = 0; i < timesteps.Length; i++)
        {
            scheduler.ScaleModelInput(sample, timesteps[i]);
            var output = scheduler.Step(io[$"model_output_{i % modelOutputs}"], timesteps[i], sample,
                noise: io.GetValueOrDefault($"{tag}_noise_{draws}"));
            if (output.Noise is not null) draws++;
            foreach (var kind in kinds)
                if (io.TryGetValue($"{tag}_{kind}_{i}", out var expected))
                    results[kind].Add((i, SideOutput(output, kind) is { } actual
                        ? FixtureCheck.Compare(kind, actual, expected, atol, rtol)
                        : new FixtureCheck(kind, double.NaN, "-", false, $"{className} has no output '{kind}'")));
            sample = output.PrevSample;
        }
        foreach (var (kind, steps) in results)
        {
            var failed = steps.FirstOrDefault(s => !s.Check.Passed);
            checks.Add(new FixtureCheck($"{tag}/{kind} ×{steps.Count}", steps.Count == 0 ? 0 : steps.Max(s => s.Check.MaxError),
                steps.FirstOrDefault().Check?.Tolerance ?? "-", steps.Count > 0 && failed.Check is null,
                steps.Count == 0 ? "no step ran"
                : failed.Check is null ? null
                : $"first failing step {failed.Step}{(failed.Check.Detail is { } d ? ": " + d : "")}"));
        }
        checks.Add(FixtureCheck.Exact($"{tag}/noise_draws", [draws], [c["noise_draws"]?.GetValue<int>() ?? 0]));
        return checks;
    }

    static Tensor? SideOutput(SchedulerOutput output, string kind) => kind switch
    {
        "prev" => output.PrevSample,
        "x0" => output.PredOriginalSample,
        "denoised" => output.Denoised,
        "noised" => output.PredNoisedSample,
        _ => null,
    };

    static void SetTimesteps(IScheduler scheduler, int steps, JsonObject? kwargs)
    {
        if (kwargs is null || kwargs.Count == 0) { scheduler.SetTimesteps(steps); return; }
        string[] known = ["original_inference_steps", "strength", "timesteps"];
        if (scheduler is not ConsistencyScheduler consistency || kwargs.Any(kv => !known.Contains(kv.Key)))
            throw new NotSupportedException(
                $"set_timesteps arguments {string.Join(", ", kwargs.Select(kv => kv.Key))} " +
                $"are not supported for {scheduler.GetType().Name}");
        double strength = kwargs["strength"]?.GetValue<double>() ?? 1.0;
        if (kwargs["timesteps"] is JsonArray custom)
            consistency.SetTimesteps(custom.Select(t => t!.GetValue<long>()).ToList(), null, strength);
        else
            consistency.SetTimesteps(steps, null, kwargs["original_inference_steps"]?.GetValue<int>(), strength);
    }

    static void ApplyStepKwargs(IScheduler scheduler, JsonObject? kwargs)
    {
        foreach (var (key, node) in kwargs ?? [])
        {
            double value = node!.GetValue<double>();
            switch (scheduler, key)
            {
                case (DDIMScheduler ddim, "eta"): ddim.Eta = value; break;
                case (TCDScheduler tcd, "eta"): tcd.Eta = value; break;
                case (EulerDiscreteScheduler euler, "s_churn"): euler.SChurn = value; break;
                case (EulerDiscreteScheduler euler, "s_tmin"): euler.STmin = value; break;
                case (EulerDiscreteScheduler euler, "s_tmax"): euler.STmax = value; break;
                case (EulerDiscreteScheduler euler, "s_noise"): euler.SNoise = value; break;
                default: throw new NotSupportedException($"step argument '{key}' of {scheduler.GetType().Name} is not supported");
            }
        }
    }

    [GeneratedRegex(@"^model_output_\d+$")]
    private static partial Regex ModelOutputKey();

    [GeneratedRegex(@"^(?<kind>[a-z0-9]+)_(?<i>\d+)$")]
    private static partial Regex StepKey();
}
