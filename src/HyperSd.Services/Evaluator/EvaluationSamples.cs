using System.Text.Json;
using HyperSd.Diffusion.Images;
using static TorchSharp.torch;

namespace HyperSd.Services.Evaluator;

/// <summary>One model's images under one sampler at one step count: <see cref="Dir"/> (relative to the samples folder) holds
/// one PNG per prompt, named by the prompt's index.</summary>
public sealed record EvaluationSampleSet(string Model, string Sampler, int Steps, string Dir);

/// <summary>
/// The images an evaluation made, kept so that another role can score them (the reward-scorer's score-evaluation stage): the
/// prompt set and one folder of PNGs per (model, sampler, steps), listed in samples.json. Scores are of the 8-bit images a
/// user would see.
/// </summary>
public sealed class EvaluationSamples(string root, IReadOnlyList<string> prompts)
{
    public const string ManifestFile = "samples.json";
    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower, WriteIndented = true };

    public string Root => root;
    public IReadOnlyList<string> Prompts => prompts;
    public List<EvaluationSampleSet> Sets { get; } = [];

    public static string ImageFile(int promptIndex) => $"{promptIndex:D5}.png";

    /// <summary>Saves images [N, 3, H, W] (one per prompt, in the prompt set's order) as a set.</summary>
    public void Add(string model, string sampler, int steps, Tensor images)
    {
        if (images.shape[0] != prompts.Count)
            throw new ArgumentException($"{model} {sampler}@{steps}: {images.shape[0]} images for {prompts.Count} prompts");
        var dir = $"{FileName(model)}/{FileName(sampler)}/{steps}";
        for (int i = 0; i < prompts.Count; i++)
            ImageFiles.SavePng(images[i], Path.Combine(root, dir, ImageFile(i)));
        Sets.Add(new(model, sampler, steps, dir));
        // written after each set, so the manifest never lists a set whose images are not all there
        File.WriteAllText(Path.Combine(root, ManifestFile), JsonSerializer.Serialize(new Manifest(prompts, Sets), Json));
    }

    public static EvaluationSamples Read(string root)
    {
        var path = Path.Combine(root, ManifestFile);
        var manifest = JsonSerializer.Deserialize<Manifest>(File.ReadAllText(path), Json)
            ?? throw new InvalidDataException($"{path}: empty manifest");
        var samples = new EvaluationSamples(root, manifest.Prompts);
        samples.Sets.AddRange(manifest.Sets);
        return samples;
    }

    /// <summary>A model or sampler name as a file name.</summary>
    public static string FileName(string name) => string.Concat(name.Select(c => char.IsLetterOrDigit(c) || c is '-' or '.' ? c : '_'));

    sealed record Manifest(IReadOnlyList<string> Prompts, IReadOnlyList<EvaluationSampleSet> Sets);
}
