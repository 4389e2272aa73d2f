using HyperSd.Diffusion.Images;
using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Data;
using HyperSd.Distillation.Tests.Evaluation;
using HyperSd.Distillation.Toy;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Data;

public sealed class DatasetPreparationTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("dataprep-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    static readonly CLIPTokenizer Tokenizer = ToyVocabulary.CreateTokenizer();
    static readonly PixelUnshuffleAutoencoder Vae = new(ToyWorld.AutoencoderConfig); // pipelines get their own: they dispose it
    static readonly Rgb24 Red = new(255, 0, 0), Blue = new(0, 0, 255);

    static void Png(string path, int width, int height, Func<int, int, Rgb24> pixel)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        using var image = new Image<Rgb24>(width, height);
        for (int y = 0; y < height; y++)
            for (int x = 0; x < width; x++) image[x, y] = pixel(x, y);
        image.SaveAsPng(path);
    }

    static Rgb24 Noise(int x, int y) => new((byte)(x * 37 + y * 11), (byte)(x * 5 + y * 71), (byte)(x * y * 13 + 7));

    static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    /// <summary>Three usable images (one wide, one tall in a subfolder) and four bad ones, in a folder with a stray file.</summary>
    string ImageFolder()
    {
        var images = Path.Combine(dir, "images");
        void Caption(string name, string text) => File.WriteAllText(Path.Combine(images, name), text);
        Png(Path.Combine(images, "a.png"), 8, 8, Noise);
        Caption("a.txt", "a red circle at the top left\n");
        Png(Path.Combine(images, "b.png"), 16, 8, (x, _) => x < 8 ? Red : Blue);
        Caption("b.txt", "a blue square in the center");
        File.WriteAllBytes(Path.Combine(images, "c.png"), [0x89, (byte)'P', (byte)'N', (byte)'G', 1, 2, 3, 4, 5]);
        Caption("c.txt", "a broken file");
        Png(Path.Combine(images, "d.png"), 8, 8, Noise);
        Png(Path.Combine(images, "e.png"), 4, 4, Noise);
        Caption("e.txt", "too small");
        Png(Path.Combine(images, "f.png"), 8, 8, Noise);
        Caption("f.txt", "  \n");
        Png(Path.Combine(images, "sub", "g.png"), 8, 16, (_, y) => y < 8 ? Red : Blue);
        File.WriteAllText(Path.Combine(images, "sub", "g.txt"), "a small green triangle at the bottom right");
        Caption("notes.md", "not an image");
        return images;
    }

    static LatentDataset[] LoadShards(string output, DatasetSummary summary) =>
        summary.Shards.Select(s => LatentDataset.Load(Path.Combine(output, s))).ToArray();

    [Fact]
    public void Image_folder_is_prepared_into_shards_with_bad_items_reported()
    {
        var images = ImageFolder();
        var output = Path.Combine(dir, "out");
        var progress = new List<PreparationProgress>();
        var summary = new DatasetPreparation(Vae, Tokenizer).Prepare(new ImageFolderSource(images), output,
            new DatasetPreparationOptions { Resolution = 8, ShardSize = 2, BatchSize = 3 }, progress.Add);

        Assert.Equal(3, summary.Count);
        Assert.Equal(4, summary.BadCount);
        Assert.Equal(["shard-00000", "shard-00001"], summary.Shards);
        Assert.Equal(["c.png", "d.png", "e.png", "f.png"], summary.BadItems.Select(b => b.Id));
        Assert.StartsWith("unreadable image: ", summary.BadItems[0].Reason);
        Assert.Equal("missing caption: no d.txt beside the image", summary.BadItems[1].Reason);
        Assert.Equal("too small: 4×4, the shorter side must be at least 8 px", summary.BadItems[2].Reason);
        Assert.Equal("empty caption in f.txt", summary.BadItems[3].Reason);
        Assert.Equal(Enumerable.Range(1, 7), progress.Select(p => p.Done));
        Assert.All(progress, p => Assert.Equal(7, p.Total));
        Assert.Equal(4, progress[^1].Bad);
        Assert.False(Directory.Exists(output + ".partial"));

        var read = DatasetSummary.Read(output);
        Assert.Equal((summary.Source, 3, 4, 8, false), (read.Source, read.Count, read.BadCount, read.Resolution, read.TextEmbeddings));
        Assert.Equal(summary.Shards, read.Shards);
        Assert.Equal(summary.BadItems, read.BadItems);
        Assert.Contains(Path.GetFullPath(images), read.Source);

        var shards = LoadShards(output, summary);
        Assert.Equal([2, 1], shards.Select(s => s.Count));
        var captions = shards.SelectMany(s => s.Captions).ToList();
        Assert.Equal(["a red circle at the top left", "a blue square in the center", "a small green triangle at the bottom right"], captions);
        Assert.All(shards, s => Assert.True(s.InputIds2 is null && s.PromptEmbeds is null && s.PooledPromptEmbeds is null));
        using var ids = cat(shards.Select(s => s.InputIds).ToArray());
        using var expectedIds = Tokenizer.Encode(captions);
        Assert.True(Same(expectedIds, ids));

        // a square image at the resolution is encoded as it is
        using var direct = Vae.EncodeLatents(ImageFiles.LoadRgb(Path.Combine(images, "a.png")).unsqueeze(0));
        Assert.True(direct[0].allclose(shards[0].Latents[0], rtol: 0, atol: 1e-6));

        // the wide image's centre square holds the inner half of each colour; the tall one's likewise, top and bottom
        var pixels = Vae.DecodeLatents(cat([shards[0].Latents[1..2], shards[1].Latents]));
        var red = tensor(new[] { 1f, 0, 0 }).view(3, 1, 1);
        var blue = tensor(new[] { 0f, 0, 1 }).view(3, 1, 1);
        Assert.True(pixels[0, .., .., ..4].allclose(red.expand(3, 8, 4), atol: 1e-5));
        Assert.True(pixels[0, .., .., 4..].allclose(blue.expand(3, 8, 4), atol: 1e-5));
        Assert.True(pixels[1, .., ..4, ..].allclose(red.expand(3, 4, 8), atol: 1e-5));
        Assert.True(pixels[1, .., 4.., ..].allclose(blue.expand(3, 4, 8), atol: 1e-5));
        foreach (var s in shards) s.Dispose();

        var again = Assert.Throws<IOException>(() => new DatasetPreparation(Vae, Tokenizer).Prepare(new ImageFolderSource(images), output,
            new DatasetPreparationOptions { Resolution = 8 }));
        Assert.Contains(output, again.Message);
    }

    [Fact]
    public void A_missing_folder_is_an_error_naming_it()
    {
        var missing = Path.Combine(dir, "nowhere");
        Assert.Contains(missing, Assert.Throws<DirectoryNotFoundException>(() => new ImageFolderSource(missing)).Message);
    }

    [Fact]
    public void Manifest_items_with_missing_images_are_bad_not_fatal()
    {
        Png(Path.Combine(dir, "imgs", "a.png"), 8, 8, Noise);
        var manifest = Path.Combine(dir, "m.jsonl");
        File.WriteAllLines(manifest, ["{\"file_name\": \"imgs/gone.png\", \"text\": \"a red circle\"}", "{\"file_name\": \"imgs/a.png\", \"text\": \"a blue square\"}"]);
        var summary = new DatasetPreparation(Vae, Tokenizer).Prepare(new JsonlManifestSource(manifest), Path.Combine(dir, "out"),
            new DatasetPreparationOptions { Resolution = 8 });
        Assert.Equal((1, 1), (summary.Count, summary.BadCount));
        Assert.Equal(new BadItem("imgs/gone.png", "image file not found"), summary.BadItems[0]);
    }

    [Fact]
    public void Centre_square_crops_the_middle_and_resizes_bicubically()
    {
        using var wide = new Image<Rgb24>(64, 32);
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 64; x++) wide[x, y] = x < 32 ? Red : Blue;
        using var square = DatasetPreparation.CenterSquare(wide, 8);
        Assert.Equal([3L, 8, 8], square.shape);
        Assert.True(square.min().item<float>() >= 0 && square.max().item<float>() <= 1);
        // the crop spans x 16..48: red up to its middle. Output columns whose bicubic support (±8 source px) stays on one
        // side are pure; the two beside the edge mix, each mostly its own side's colour.
        var red = tensor(new[] { 1f, 0, 0 }).view(3, 1, 1).expand(3, 8, 2);
        var blue = tensor(new[] { 0f, 0, 1 }).view(3, 1, 1).expand(3, 8, 2);
        Assert.True(square[.., .., ..2].allclose(red, atol: 1e-5));
        Assert.True(square[.., .., 6..].allclose(blue, atol: 1e-5));
        Assert.True(square[0, .., 3].gt(square[2, .., 3]).all().item<bool>());
        Assert.True(square[2, .., 4].gt(square[0, .., 4]).all().item<bool>());
        using var swapped = square[.., .., 4..].index_select(0, tensor(new long[] { 2, 1, 0 }));
        Assert.True(square[.., .., ..4].flip(2).allclose(swapped, atol: 1e-5)); // mirror-symmetric, red and blue swapped
    }

    [Fact]
    public void Toy_source_gives_the_toy_worlds_dataset()
    {
        var output = Path.Combine(dir, "toy");
        var summary = new DatasetPreparation(Vae, Tokenizer).Prepare(new ToySource(10, seed: 3), output,
            new DatasetPreparationOptions { Resolution = ToyShapes.Resolution, ShardSize = 4, BatchSize = 3 });
        Assert.Equal((10, 0, 3), (summary.Count, summary.BadCount, summary.Shards.Count));
        Assert.Equal("toy shapes (seed 3, 10 scenes)", summary.Source);

        using var expected = ToyWorld.CreateDataset(10, 3, Tokenizer, Vae);
        var shards = LoadShards(output, summary);
        using var latents = cat(shards.Select(s => s.Latents).ToArray());
        using var ids = cat(shards.Select(s => s.InputIds).ToArray());
        Assert.True(Same(expected.Latents, latents));
        Assert.True(Same(expected.InputIds, ids));
        Assert.Equal(expected.Captions, shards.SelectMany(s => s.Captions));
        Assert.Equal(expected.Labels, shards.SelectMany(s => s.Labels));
        foreach (var s in shards) s.Dispose();
    }

    [Fact]
    public void A_toy_dataset_holds_no_held_out_caption()
    {
        var output = Path.Combine(dir, "toy-split");
        var summary = new DatasetPreparation(Vae, Tokenizer).Prepare(new ToySource(600, seed: 21), output,
            new DatasetPreparationOptions { Resolution = ToyShapes.Resolution, ShardSize = 256, BatchSize = 64 });
        var shards = LoadShards(output, summary);
        var captions = shards.SelectMany(s => s.Captions).ToList();
        var labels = shards.SelectMany(s => s.Labels).Select(l => ToyScene.FromJson(l!)).ToList();
        foreach (var s in shards) s.Dispose();
        Assert.Equal(600, captions.Count);
        Assert.All(captions, c => Assert.False(ToyCaptions.IsHeldOut(c), c));
        Assert.All(labels, l => Assert.Equal(ToyCaptionSplit.Train, ToyCaptions.SplitOf(l)));
        // the same seed over the whole caption space would have drawn held-out scenes: the source filters them
        Assert.Contains(ToyShapes.RandomScenes(600, seed: 21), ToyCaptions.IsHeldOut);
        using var teacherData = ToyWorld.CreateDataset(600, 21, Tokenizer, Vae);
        Assert.All(teacherData.Captions, c => Assert.False(ToyCaptions.IsHeldOut(c), c));
    }

    [Fact]
    public void SD_text_embeddings_are_the_pipelines_own()
    {
        using var pipeline = new StableDiffusionPipeline(new UNet2DConditionModel(TinyToyPipeline.UnetConfig), new PixelUnshuffleAutoencoder(ToyWorld.AutoencoderConfig),
            new CLIPTextModel(ToyVocabulary.TextConfig(Tokenizer)), Tokenizer, SchedulerFactory.FromConfig(ToyWorld.Schedule()));
        var (summary, shard) = PrepareToy(DatasetPreparation.For(pipeline, textEmbeddings: true));
        using var _ = shard;
        Assert.True(summary.TextEmbeddings);
        using var embeds = pipeline.EncodePrompt(shard.Captions);
        Assert.True(embeds.allclose(shard.PromptEmbeds!, atol: 1e-5));
        Assert.Null(shard.InputIds2);
        Assert.Null(shard.PooledPromptEmbeds);
    }

    [Fact]
    public void SDXL_stores_both_tokenizers_ids_and_the_pipelines_prompt_and_pooled_embeddings()
    {
        var text = ToyVocabulary.TextConfig(Tokenizer);
        var tokenizer2 = ToyVocabulary.CreateTokenizer();
        var unet = TinyToyPipeline.UnetConfig with
        {
            CrossAttentionDim = 2 * text.HiddenSize, AdditionEmbedType = "text_time", AdditionTimeEmbedDim = 4,
            ProjectionClassEmbeddingsInputDim = 6 * 4 + text.ProjectionDim,
        };
        using var pipeline = new StableDiffusionXLPipeline(new UNet2DConditionModel(unet), new PixelUnshuffleAutoencoder(ToyWorld.AutoencoderConfig), new CLIPTextModel(text),
            new CLIPTextModelWithProjection(text), Tokenizer, tokenizer2, SchedulerFactory.FromConfig(ToyWorld.Schedule()));
        var (summary, shard) = PrepareToy(DatasetPreparation.For(pipeline, textEmbeddings: true));
        using var _ = shard;
        Assert.True(summary.TextEmbeddings);
        using var ids2 = tokenizer2.Encode(shard.Captions);
        Assert.True(Same(ids2, shard.InputIds2!));
        var (embeds, pooled) = pipeline.EncodePrompt(shard.Captions);
        Assert.Equal([6L, Tokenizer.ModelMaxLength, 2 * text.HiddenSize], shard.PromptEmbeds!.shape);
        Assert.True(embeds.allclose(shard.PromptEmbeds!, atol: 1e-5));
        Assert.True(pooled.allclose(shard.PooledPromptEmbeds!, atol: 1e-5));

        // without text embeddings the SDXL shard still has the second tokenizer's ids
        var (_, plain) = PrepareToy(DatasetPreparation.For(pipeline), "plain");
        using var __ = plain;
        Assert.True(Same(ids2, plain.InputIds2!));
        Assert.Null(plain.PromptEmbeds);
    }

    /// <summary>Six toy scenes in batches of four, one shard.</summary>
    (DatasetSummary, LatentDataset) PrepareToy(DatasetPreparation preparation, string name = "toy")
    {
        var output = Path.Combine(dir, name);
        var summary = preparation.Prepare(new ToySource(6, seed: 1), output,
            new DatasetPreparationOptions { Resolution = ToyShapes.Resolution, BatchSize = 4 });
        return (summary, LatentDataset.Load(Path.Combine(output, Assert.Single(summary.Shards))));
    }
}
