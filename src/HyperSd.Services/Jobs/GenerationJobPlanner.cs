using System.Text.RegularExpressions;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Toy;
using HyperSd.Recipes;
using HyperSd.Services.Generator;
using HyperSd.Services.Runs;
using static TorchSharp.torch;

namespace HyperSd.Services.Jobs;

/// <summary>One problem of a job spec: the field, or the prompts file and line, and what is wrong.</summary>
public sealed record JobProblem(string Where, string Message)
{
    public override string ToString() => $"{Where}: {Message}";
}

/// <summary>The job cannot run as submitted; nothing was stored.</summary>
public sealed class JobValidationException(IReadOnlyList<JobProblem> problems)
    : ArgumentException($"{problems.Count} problem(s) in the generation job:\n{string.Join("\n", problems)}")
{
    public IReadOnlyList<JobProblem> Problems { get; } = problems;
}

/// <summary>One image of a job: which prompt, which of its images, and its seed; in a best-of-n job, which of the image's
/// candidates (null in a job without best-of-n).</summary>
public sealed record JobImage(int PromptIndex, int ImageIndex, string Prompt, string NegativePrompt, long Seed, int? Candidate = null)
{
    /// <summary>Its file name in the job's folder.</summary>
    public string File => Candidate is { } c ? $"{PromptIndex:D5}-{ImageIndex:D4}-c{c:D2}.png" : $"{PromptIndex:D5}-{ImageIndex:D4}.png";
}

/// <summary>A validated job: its spec, name, the model as images record it, the requested images, every image it makes
/// (<see cref="Candidates"/>: the requested ones, or best_of candidates of each), and warnings (truncated prompts).</summary>
public sealed record GenerationJobPlan(GenerationJobSpec Spec, string Name, ModelReference Model, IReadOnlyList<JobImage> Images,
    IReadOnlyList<JobImage> Candidates, IReadOnlyList<string> Warnings)
{
    /// <summary>The images to make in chunks of the spec's chunk size, in order (an image's candidates one after another).</summary>
    public IReadOnlyList<JobImage[]> Chunks => Candidates.Chunk(Spec.ChunkSize).ToList();
}

/// <summary>Limits a deployment puts on jobs; <see cref="MaxImages"/> counts best-of-n candidates.</summary>
public sealed record GenerationLimits(int MaxImageSide = 2048, int MaxImages = 1_000_000, int MaxSteps = 1000, int MaxBestOf = 64);

/// <summary>
/// Validates a job spec and plans its images: every problem is collected and reported together, naming the field or the
/// prompts file and line. Prompts longer than the text encoder's 77 tokens (start and end included) are truncated, as
/// diffusers does, with a warning each. A LoRA is checked against the model's UNet by attaching it (a LoRA for another
/// base does not fit), which loads the model once at submission.
/// </summary>
public static partial class GenerationJobPlanner
{
    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
    private static partial Regex NamePattern();

    /// <param name="inputs">The models root that the model, tokenizer, LoRA and reward file paths must resolve under.</param>
    public static GenerationJobPlan Plan(GenerationJobSpec spec, GenerationLimits limits, InputRoots inputs)
    {
        var problems = new List<JobProblem>();
        var warnings = new List<string>();
        void Check(bool ok, string where, string message)
        {
            if (!ok) problems.Add(new(where, message));
        }
        // a path outside the models root is named once, as that, and not looked at further
        string? Confined(string? path, string where)
        {
            try
            {
                return path is null ? null : inputs.Model(path, where);
            }
            catch (InputPathException e)
            {
                problems.Add(new(e.Field, e.Problem));
                return null;
            }
        }
        bool Refused(string where) => problems.Any(p => p.Where == where);
        var (modelId, modelPath) = ImageModels.Resolve(spec.Model);
        if (spec.Model != ImageModels.ToyId) modelPath = Confined(modelPath, "model") ?? "";
        spec = spec with
        {
            Tokenizer = Confined(spec.Tokenizer, "tokenizer") ?? spec.Tokenizer,
            // a run's LoRA was resolved to its file in the artifact store (RunLoras), not named by the submitter
            Loras = [.. spec.Loras.Select((l, i) => l.Run is null ? l with { Path = Confined(l.Path, $"loras[{i}]") ?? l.Path } : l)],
            RewardFiles = spec.RewardFiles?.Resolve((path, field) => Confined(path, $"reward_files.{field}") ?? path),
        };

        var name = spec.Name ?? $"job-{DateTime.UtcNow:yyyyMMdd-HHmmss}-{Guid.NewGuid().ToString("N")[..6]}";
        Check(NamePattern().IsMatch(name) && !name.Contains(".."), "name",
            $"'{name}' is not a folder name (letters, digits, '.', '_', '-'; no '/', '\\\\' or '..'; at most 100 characters)");
        Check(spec.ImagesPerPrompt >= 1, "images_per_prompt", $"must be at least 1, got {spec.ImagesPerPrompt}");
        Check(spec.Steps >= 1 && spec.Steps <= limits.MaxSteps, "steps", $"must be 1 to {limits.MaxSteps}, got {spec.Steps}");
        Check(spec.BatchSize >= 1, "batch_size", $"must be at least 1, got {spec.BatchSize}");
        Check(spec.ChunkSize >= 1, "chunk_size", $"must be at least 1, got {spec.ChunkSize}");
        Check(spec.Guidance >= 0 && double.IsFinite(spec.Guidance), "guidance", $"must be a finite number ≥ 0, got {spec.Guidance}");
        Check(spec.Sampler != JobSampler.Tcd || spec.Eta is >= 0 and <= 1, "eta", $"TCD's gamma must be in [0, 1], got {spec.Eta}");
        foreach (var (field, side) in new[] { ("width", spec.Width), ("height", spec.Height) })
            Check(side >= 8 && side <= limits.MaxImageSide && side % 8 == 0, field,
                $"must be a multiple of 8 from 8 to {limits.MaxImageSide} (this deployment's limit), got {side}");
        Check(spec.Prompts.Count > 0, "prompts", "no prompts");

        // the model: the toy teacher, a diffusers folder or a single .safetensors (never a pickle)
        string? tokenizerDir = null;
        bool modelFound = false;
        if (Directory.Exists(modelPath) && File.Exists(Path.Combine(modelPath, "model_index.json")))
        {
            modelFound = true;
            tokenizerDir = Path.Combine(modelPath, "tokenizer");
        }
        else if (File.Exists(modelPath) && modelPath.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
        {
            modelFound = spec.Tokenizer is not null && Directory.Exists(spec.Tokenizer) && !Refused("tokenizer");
            Check(modelFound || Refused("tokenizer"), "tokenizer", "a single-file checkpoint needs a CLIP tokenizer folder");
            tokenizerDir = spec.Tokenizer;
        }
        else
            Check(Refused("model"), "model",
                $"unknown model '{spec.Model}': not 'toy', a diffusers folder (with model_index.json) or a .safetensors file");

        for (int i = 0; i < spec.Loras.Count; i++)
        {
            var lora = spec.Loras[i];
            if (lora.Path is null)
                Check(false, $"loras[{i}]", lora.Run is null ? "give a path or a run" : $"run '{lora.Run}': not resolved in a store");
            else
            {
                bool safetensors = File.Exists(lora.Path) && lora.Path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase);
                Check(safetensors || Refused($"loras[{i}]"), $"loras[{i}]", $"unknown LoRA '{lora.Path}': not a .safetensors file");
            }
            Check(double.IsFinite(lora.Scale), $"loras[{i}].scale", $"must be finite, got {lora.Scale}");
        }

        var images = Images(spec, problems);
        Check(images.Count <= limits.MaxImages, "prompts", $"{images.Count} images; a job makes at most {limits.MaxImages}");
        var candidates = BestOf(spec, images, limits, problems);
        if (modelFound && tokenizerDir is not null && Directory.Exists(tokenizerDir)) warnings.AddRange(LongPrompts(spec, tokenizerDir));
        if (problems.Count == 0 && spec.Loras.Count > 0) problems.AddRange(LorasThatDoNotFit(spec, modelPath, tokenizerDir));
        if (problems.Count > 0) throw new JobValidationException(problems);

        var model = ImageModels.DescribeAsync(modelId, modelPath, spec.Tokenizer).GetAwaiter().GetResult();
        return new GenerationJobPlan(spec with { Name = name }, name, model, images, candidates, warnings);
    }

    /// <summary>
    /// Checks best_of, reward, score and reward_files against the model's world (the toy model's rewards read the toy
    /// recognizer; the real-scale ones need their files under the models root) and returns the images to make. Candidate j
    /// of an image with seed s has seed s + j·span, span = the largest image seed − the smallest + 1: candidate 0 is the
    /// image best_of 1 makes, and the candidates of each j lie in their own seed range, so no candidate repeats another
    /// image's seed (images given the same seed per row keep equal candidate seeds).
    /// </summary>
    static List<JobImage> BestOf(GenerationJobSpec spec, List<JobImage> images, GenerationLimits limits, List<JobProblem> problems)
    {
        void Check(bool ok, string where, string message)
        {
            if (!ok) problems.Add(new(where, message));
        }
        bool toy = spec.Model == ImageModels.ToyId;
        var world = toy ? "the toy model" : "a real-scale model";
        var known = toy ? Recipe.ToyRewards : Recipe.RealRewards;
        Check(spec.BestOf >= 1 && spec.BestOf <= limits.MaxBestOf, "best_of",
            $"must be 1 (off) to {limits.MaxBestOf} (this deployment's limit), got {spec.BestOf}");
        if (spec.Scored && spec.Reward is null)
            problems.Add(new("reward", $"required with best_of {spec.BestOf}{(spec.Score ? " and score" : "")}: the reward that " +
                                       $"scores the images (for {world}: {string.Join(", ", known)})"));
        if (spec.BestOf == 1 && !spec.Score && spec.Reward is not null)
            problems.Add(new("reward", $"'{spec.Reward}' scores nothing: set best_of above 1 or score true"));
        if (spec.Reward is { } reward && spec.Scored)
        {
            if (!known.Contains(reward))
                problems.Add(new("reward", $"unknown reward '{reward}' for {world} (allowed: {string.Join(", ", known)})"));
            else if (toy) ToyRewardInputs(spec, reward, problems);
            else RewardFiles(spec, reward, problems);
        }
        Check(spec.RewardFiles is null || (spec.Scored && !toy), "reward_files",
            toy ? "the toy rewards read no files (the worker's toy recognizer)" : "no reward scores the images");
        long candidates = (long)images.Count * spec.BestOf;
        Check(spec.BestOf <= 1 || images.Count > limits.MaxImages || candidates <= limits.MaxImages, "best_of",
            $"{images.Count} images × best_of {spec.BestOf} = {candidates} candidates; a job makes at most {limits.MaxImages}");
        if (spec.BestOf <= 1 || images.Count == 0 || problems.Count > 0) return images;
        long low = images.Min(i => i.Seed), high = images.Max(i => i.Seed);
        try
        {
            long span = checked(high - low + 1);
            _ = checked(high + (spec.BestOf - 1) * span);
            return [.. images.SelectMany(i => Enumerable.Range(0, spec.BestOf)
                .Select(j => i with { Seed = i.Seed + j * span, Candidate = j }))];
        }
        catch (OverflowException)
        {
            problems.Add(new("best_of",
                $"the candidates' seeds (image seeds {low} to {high}, best_of {spec.BestOf}) overflow a 64-bit seed"));
            return images;
        }
    }

    /// <summary>The toy rewards read 32 × 32 images and captions of the toy world.</summary>
    static void ToyRewardInputs(GenerationJobSpec spec, string reward, List<JobProblem> problems)
    {
        foreach (var (field, side) in new[] { ("width", spec.Width), ("height", spec.Height) })
            if (side != ToyShapes.Resolution)
                problems.Add(new(field, $"the {reward} reward reads {ToyShapes.Resolution} × {ToyShapes.Resolution} images, got {side}"));
        for (int p = 0; p < spec.Prompts.Count; p++)
        {
            try
            {
                ToyShapes.ParseCaption(spec.Prompts[p].Prompt);
            }
            catch (FormatException e)
            {
                problems.Add(new(spec.Prompts[p].Line ?? $"prompts[{p}]", $"prompt: the {reward} reward reads toy captions: {e.Message}"));
            }
        }
    }

    /// <summary>A real-scale reward's files (resolved under the models root with the job's other paths).</summary>
    static void RewardFiles(GenerationJobSpec spec, string reward, List<JobProblem> problems)
    {
        var needed = reward switch
        {
            "laion-aesthetic" => new[] { ("reward_files.clip", spec.RewardFiles?.Clip),
                ("reward_files.aesthetic_predictor", spec.RewardFiles?.AestheticPredictor) },
            "pickscore" => [("reward_files.pickscore", spec.RewardFiles?.Pickscore)],
            _ => [],
        };
        foreach (var (field, path) in needed.Where(n => n.Item2 is null))
            problems.Add(new(field, $"required by the {reward} reward"));
    }

    static List<JobImage> Images(GenerationJobSpec spec, List<JobProblem> problems)
    {
        var images = new List<JobImage>();
        for (int p = 0; p < spec.Prompts.Count; p++)
        {
            var row = spec.Prompts[p];
            var where = row.Line ?? $"prompts[{p}]";
            if (row.Prompt.Trim().Length == 0) problems.Add(new(where, "prompt: empty"));
            int count = row.Count ?? spec.ImagesPerPrompt;
            if (count < 1) { problems.Add(new(where, $"count: must be at least 1, got {count}")); continue; }
            if (spec.SeedPolicy == SeedPolicy.PerRow && row.Seed is null)
            {
                problems.Add(new(where, "seed: required by the per-row seed policy"));
                continue;
            }
            for (int i = 0; i < count; i++)
                images.Add(new JobImage(p, i, row.Prompt.Trim(), row.NegativePrompt ?? "",
                    spec.SeedPolicy == SeedPolicy.PerRow ? row.Seed!.Value + i : spec.Seed + images.Count));
        }
        return images;
    }

    /// <summary>The text encoder reads 77 tokens with the start and end tokens: longer prompts lose their tail.</summary>
    static IEnumerable<string> LongPrompts(GenerationJobSpec spec, string tokenizerDir)
    {
        var tokenizer = CLIPTokenizer.FromPretrained(tokenizerDir);
        int room = tokenizer.ModelMaxLength - 2;
        for (int p = 0; p < spec.Prompts.Count; p++)
        {
            var row = spec.Prompts[p];
            foreach (var (field, text) in new[] { ("prompt", row.Prompt), ("negative_prompt", row.NegativePrompt ?? "") })
            {
                int n = tokenizer.TokenIds(text).Count;
                if (n > room)
                    yield return $"{row.Line ?? $"prompts[{p}]"}: {field}: {n} tokens; the text encoder reads {tokenizer.ModelMaxLength} " +
                                 $"with its start and end tokens, so it is truncated to the first {room} (as diffusers does)";
            }
        }
    }

    /// <summary>Attaches each LoRA to the model's UNet as a worker will; one that does not fit is for another base.</summary>
    static IEnumerable<JobProblem> LorasThatDoNotFit(GenerationJobSpec spec, string modelPath, string? tokenizerDir)
    {
        using var pipeline = ImageModels.Open(modelPath, tokenizerDir, CPU, ScalarType.Float32);
        var problems = new List<JobProblem>();
        for (int i = 0; i < spec.Loras.Count; i++)
        {
            try
            {
                using var adapter = LoraFormats.Load(spec.Loras[i].Path!, pipeline.Unet);
            }
            catch (Exception e) when (e is InvalidDataException or ArgumentException or NotSupportedException)
            {
                // the loader names the key or shapes, and a LoRA for another base model as the likely cause
                problems.Add(new($"loras[{i}]", $"'{spec.Loras[i].Path}' does not fit this model's UNet: {e.Message}"));
            }
        }
        return problems;
    }
}
