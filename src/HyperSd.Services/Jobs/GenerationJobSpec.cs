using System.Text.Json.Serialization;
using HyperSd.Distillation.Evaluation;
using HyperSd.Recipes;

namespace HyperSd.Services.Jobs;

/// <summary>One prompt of a job, as a prompts file row gives it: optional negative prompt, seed (used by the per-row
/// seed policy) and image count (default: the job's images per prompt). <see cref="Line"/>: where it was read, for errors.</summary>
public sealed record PromptRow(string Prompt, string? NegativePrompt = null, long? Seed = null, int? Count = null, string? Line = null);

[JsonConverter(typeof(JsonStringEnumConverter<JobSampler>))]
public enum JobSampler
{
    [JsonStringEnumMemberName("ddim-trailing")] DdimTrailing,
    [JsonStringEnumMemberName("tcd")] Tcd,
    [JsonStringEnumMemberName("lcm")] Lcm,
    [JsonStringEnumMemberName("euler")] Euler,
}

[JsonConverter(typeof(JsonStringEnumConverter<SeedPolicy>))]
public enum SeedPolicy
{
    /// <summary>Image n of the job (prompt-major) has seed = the job's seed + n.</summary>
    [JsonStringEnumMemberName("base-plus-index")] BasePlusIndex,
    /// <summary>Image i of a row has seed = the row's seed + i (every row must give one).</summary>
    [JsonStringEnumMemberName("per-row")] PerRow,
}

/// <summary>A LoRA with its scale: a .safetensors file (<see cref="Path"/>), or a run's (<see cref="Run"/>: its id or name;
/// <see cref="Steps"/>: the step count its fixed-step LoRA is for, default its last), which <see cref="RunLoras"/> resolves
/// at submission to the file in the store, with <see cref="Id"/> "run/stage" for the images to record.</summary>
public sealed record JobLora(string? Path = null, double Scale = 1.0, string? Run = null, int? Steps = null, string? Id = null);

/// <summary>A bulk generation job as submitted (CLI options or the API's JSON body); <see cref="GenerationJobPlanner"/>
/// validates it and plans its images and chunks.</summary>
public sealed record GenerationJobSpec
{
    /// <summary>The job's name and the folder of its images; default: generated.</summary>
    public string? Name { get; init; }
    /// <summary>"toy" (the embedded toy teacher), a diffusers folder, or a single-file SD1.x .safetensors.</summary>
    public required string Model { get; init; }
    /// <summary>CLIP tokenizer folder, for a single-file checkpoint.</summary>
    public string? Tokenizer { get; init; }
    public IReadOnlyList<JobLora> Loras { get; init; } = [];
    public required IReadOnlyList<PromptRow> Prompts { get; init; }
    public int ImagesPerPrompt { get; init; } = 1;
    public int Steps { get; init; } = 4;
    public JobSampler Sampler { get; init; } = JobSampler.DdimTrailing;
    /// <summary>TCD's γ (eta); the other samplers take none.</summary>
    public double Eta { get; init; } = 0.3;
    public double Guidance { get; init; } = 1.0;
    public int Width { get; init; } = 512;
    public int Height { get; init; } = 512;
    /// <summary>Images per forward pass within a chunk.</summary>
    public int BatchSize { get; init; } = 4;
    public long Seed { get; init; }
    public SeedPolicy SeedPolicy { get; init; } = SeedPolicy.BasePlusIndex;
    /// <summary>Images per chunk: the unit a generator worker leases.</summary>
    public int ChunkSize { get; init; } = 16;
    /// <summary>Best-of-n: candidates made per requested image, of which the one <see cref="Reward"/> scores highest is
    /// kept (<see cref="GenerationJobPlanner"/> derives their seeds); 1 = off.</summary>
    public int BestOf { get; init; } = 1;
    /// <summary>The reward model that scores the images, required with best_of above 1 or score: toy-structure or
    /// toy-structure-logp for the toy model, laion-aesthetic or pickscore (with <see cref="RewardFiles"/>) at real scale.</summary>
    public string? Reward { get; init; }
    /// <summary>Score every image with <see cref="Reward"/> even without best-of-n.</summary>
    public bool Score { get; init; }
    /// <summary>The real-scale reward models' files (under the models root), as a recipe's <c>rewards:</c> names them.</summary>
    public RewardsRecipe? RewardFiles { get; init; }

    /// <summary>Whether the job has a scoring stage.</summary>
    [JsonIgnore]
    public bool Scored => BestOf > 1 || Score;

    /// <summary>The sampler as the evaluator and the generate stage build it.</summary>
    public SamplerSpec SamplerSpec() => Sampler switch
    {
        JobSampler.Tcd => Distillation.Evaluation.SamplerSpec.Tcd(Eta, Guidance),
        JobSampler.Lcm => new("lcm", "LCMScheduler", null, null, Guidance),
        JobSampler.Euler => new("euler", "EulerDiscreteScheduler", null, null, Guidance),
        _ => Distillation.Evaluation.SamplerSpec.DdimTrailing(Guidance),
    };
}
