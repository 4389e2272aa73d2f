using HyperSd.Diffusion.IO;
using HyperSd.Distillation.Evaluation;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Evaluation;

/// <summary>Builds modules, whose initialisation draws from LibTorch's global generator: run alone so that seeded
/// trainings in parallel tests (the shared toy recognizer) draw what they expect.</summary>
[Collection(GlobalRngCollection.Name)]
public class ClipMetricsTests : IDisposable

{
    static readonly string[] Prompts = ["a red circle", "two blue squares", "a cat on a mat", "night sky"];

    readonly string dir = Directory.CreateTempSubdirectory("clip-metrics-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    static Tensor Images(int count = 4) => rand([count, 3, 12, 10], generator: new Generator(5));

    static void AssertClose(Tensor expected, Tensor actual, double atol = 1e-4)
    {
        Assert.Equal(expected.shape, actual.shape);
        double error = (expected - actual).abs().max().item<float>();
        Assert.True(error <= atol, $"max error {error}");
    }

    [Fact]
    public void Clip_score_is_100_cos_floored_at_zero()
    {
        using var clip = TinyClip.Embedder();
        using var score = new ClipScore(clip);
        using var _ = no_grad();
        using var images = Images();
        using var cosine = TinyClip.Cosine(clip, Prompts, images);
        using var similarity = score.Similarity(Prompts, images);
        AssertClose(cosine * 100, similarity);
        using var scores = score.Score(Prompts, images);
        AssertClose(similarity.clamp_min(0), scores, 0);

        // Negating the image projection flips every cosine: each pair scores zero in one of the two models.
        clip.ImageEncoder.state_dict()["visual_projection.weight"].neg_();
        using var flipped = score.Score(Prompts, images);
        AssertClose(similarity.abs(), scores + flipped);
        Assert.True((scores * flipped).eq(0).all().item<bool>());
        Assert.Equal("clip-score", score.Name);
    }

    [Fact]
    public void Towers_with_different_projection_widths_are_refused_naming_both_shapes()
    {
        var e = Assert.Throws<ArgumentException>(() => TinyClip.Embedder(textProjection: 12, visionProjection: 10));
        Assert.Contains("text_projection.weight [12, 8]", e.Message);
        Assert.Contains("visual_projection.weight [10, 16]", e.Message);

        using var clip = TinyClip.Embedder();
        using var images = Images(3);
        var count = Assert.Throws<ArgumentException>(() => new ClipScore(clip).Score(Prompts, images));
        Assert.Contains("4 prompts for 3 images", count.Message);

    }

    [Fact]
    public void Clip_image_features_are_the_projected_or_pooled_embeddings_and_give_fd_clip_rows()
    {
        using var clip = TinyClip.Embedder();
        using var images = Images(6);
        using var _ = no_grad();
        using var pixels = TinyClip.Processor.Preprocess(images);
        using var output = clip.ImageEncoder.forward(pixels);
        var projected = new ClipImageFeatures(clip);
        var pooled = new ClipImageFeatures(clip, projected: false);
        using (var features = projected.Features(images)) AssertClose(output.ImageEmbeds!, features, 0);
        using (var features = pooled.Features(images)) AssertClose(output.PoolerOutput, features, 0);
        Assert.Equal("fd-clip", projected.MetricName);

        using var real = projected.Features(images);
        var prompts = Enumerable.Repeat("x", 6).ToList();
        var rows = new ModelEvaluator(projected, real).Measure("m", "ddim", 1, prompts, images).ToList();
        Assert.Equal(["fd-clip", "kid-clip"], rows.Select(r => r.Metric));
        Assert.InRange(rows[0].Value, -1e-6, 1e-6);
    }

    static Dictionary<string, Tensor> AestheticWeights(int inputSize)
    {
        using var mlp = new LaionAestheticMLP(inputSize);
        TinyClip.Randomize(mlp, 9);
        return StateDict.Of(mlp);
    }

    [Fact]
    public void Aesthetic_predictor_keeps_the_original_keys_and_matches_a_hand_forward()
    {
        var weights = AestheticWeights(12);
        Assert.Equal(
            new[] { "layers.0", "layers.2", "layers.4", "layers.6", "layers.7" }.SelectMany(l => new[] { l + ".bias", l + ".weight" }),
            weights.Keys.Order(StringComparer.Ordinal));
        var path = Path.Combine(dir, "sac+logos+ava1-l14-linearMSE.safetensors");
        SafeTensors.Save(path, weights);

        using var clip = TinyClip.Embedder();
        using var predictor = new LaionAestheticPredictor(clip, LaionAestheticMLP.FromPretrained(path, inputSize: 12));
        using var _ = no_grad();
        using var images = Images();
        using var pixels = TinyClip.Processor.Preprocess(images);
        using var output = clip.ImageEncoder.forward(pixels);
        var embeds = output.ImageEmbeds!;
        var h = embeds / embeds.norm(-1, keepdim: true);
        foreach (var layer in new[] { 0, 2, 4, 6, 7 }) // linear layers only: the released predictor has no activations
            h = h.matmul(weights[$"layers.{layer}.weight"].t()) + weights[$"layers.{layer}.bias"];
        using var scores = predictor.Score(Prompts, images);
        AssertClose(h.squeeze(-1), scores);
        Assert.Equal("laion-aesthetic", predictor.Name);
    }

    [Fact]
    public void Aesthetic_predictor_weights_and_widths_are_checked_naming_keys_and_shapes()
    {
        var weights = AestheticWeights(12);
        weights["layers.2.weight"] = zeros(128, 1000);
        weights.Remove("layers.7.bias");
        var path = Path.Combine(dir, "bad.safetensors");
        SafeTensors.Save(path, weights);
        var e = Assert.Throws<WeightLoadException>(() => LaionAestheticMLP.FromPretrained(path, inputSize: 12));
        Assert.Contains($"key 'layers.2.weight' in {path} has shape [128, 1000], the model expects [128, 1024]", e.Message);
        Assert.Contains($"missing key 'layers.7.bias' (expected shape [1]) in {path}", e.Message);

        using var clip = TinyClip.Embedder();
        using var released = new LaionAestheticMLP();
        var width = Assert.Throws<ArgumentException>(() => new LaionAestheticPredictor(clip, released));
        Assert.Contains("layers.0.weight [1024, 768]", width.Message);
        Assert.Contains("visual_projection.weight [12, 16]", width.Message);

        // from files: a predictor for another CLIP (as a 512-wide one beside ViT-L/14's 768) names both files and both widths
        var model = Path.Combine(dir, "clip");
        TinyClip.SaveFullModel(clip, model, logitScale: null);
        var narrow = Path.Combine(dir, "narrow.safetensors");
        SafeTensors.Save(narrow, AestheticWeights(8));
        var files = Assert.Throws<ArgumentException>(() => LaionAestheticPredictor.FromPretrained(model, narrow));
        Assert.Contains($"the aesthetic predictor {narrow} takes 8-wide embeddings (layers.0.weight [1024, 8])", files.Message);
        Assert.Contains($"the CLIP image tower of {model} gives 12 (visual_projection.weight [12, 16])", files.Message);
    }

    [Fact]
    public void Preference_score_is_the_models_exp_logit_scale_times_cos_from_a_full_clip_folder()
    {
        var model = Path.Combine(dir, "pickscore");
        using (var clip = TinyClip.Embedder()) TinyClip.SaveFullModel(clip, model, logitScale: 2.0);

        using var preference = PreferenceScore.FromPretrained(model);
        using var clipScore = ClipScore.FromPretrained(model);
        using var _ = no_grad();
        using var images = Images();
        using var similarity = clipScore.Similarity(Prompts, images);
        using var scores = preference.Score(Prompts, images);
        Assert.Equal(2.0, preference.LogitScale, 6);
        AssertClose(similarity / 100 * Math.Exp(2.0), scores);
        Assert.Equal("pickscore", preference.Name);

        // The aesthetic predictor reads the vision tower of the same folder.
        var path = Path.Combine(dir, "aesthetic.safetensors");
        SafeTensors.Save(path, AestheticWeights(12));
        using var aesthetic = LaionAestheticPredictor.FromPretrained(model, path);
        using var aestheticScores = aesthetic.Score(Prompts, images);
        Assert.Equal([4L], aestheticScores.shape);

        var noScale = Path.Combine(dir, "plain");
        using (var clip = TinyClip.Embedder()) TinyClip.SaveFullModel(clip, noScale, logitScale: null);
        var e = Assert.Throws<InvalidDataException>(() => PreferenceScore.FromPretrained(noScale));
        Assert.Contains(Path.Combine(noScale, "model.safetensors"), e.Message);
        Assert.Contains("logit_scale", e.Message);
    }
}
