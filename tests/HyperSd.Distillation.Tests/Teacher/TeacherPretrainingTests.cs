using HyperSd.Diffusion.Models.Autoencoders;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Diffusion.TextEncoders;
using HyperSd.Distillation.Teacher;
using HyperSd.Distillation.Tests.Evaluation;
using HyperSd.Distillation.Toy;
using static TorchSharp.torch;

namespace HyperSd.Distillation.Tests.Teacher;

[Collection(GlobalRngCollection.Name)]
public class TeacherPretrainingTests
{
    [Fact]
    public void The_denoising_loss_falls_and_the_run_is_reproducible()
    {
        var tokenizer = ToyVocabulary.CreateTokenizer();
        using var data = ToyWorld.CreateDataset(256, 1, tokenizer, new PixelUnshuffleAutoencoder(ToyWorld.AutoencoderConfig));
        var schedule = new DDPMScheduler(ToyWorld.Schedule("DDPMScheduler"));
        var options = new TeacherPretrainingOptions { Steps = 60, BatchSize = 16, WarmupSteps = 5, ProgressEvery = 10, LearningRate = 3e-3 };
        IReadOnlyList<double> Run()
        {
            manual_seed(0);
            using var text = new CLIPTextModel(ToyVocabulary.TextConfig(tokenizer));
            using var unet = new UNet2DConditionModel(TinyToyPipeline.UnetConfig);
            return TeacherPretraining.Train(unet, text, tokenizer, data, schedule, options).Select(p => p.Losses["mse"]).ToList();
        }
        var losses = Run();
        // Measured: ≈1.0 over the first 10 steps, ≈0.8 over the last 10; asserted with margin.
        Assert.True(losses[^1] < 0.9 * losses[0], $"loss {losses[0]:F3} → {losses[^1]:F3}");
        Assert.Equal(losses, Run());
    }

    [Fact]
    public void An_interrupted_run_resumes_exactly_and_a_trained_text_encoder_learns()
    {
        var tokenizer = ToyVocabulary.CreateTokenizer();
        using var data = ToyWorld.CreateDataset(64, 2, tokenizer, new PixelUnshuffleAutoencoder(ToyWorld.AutoencoderConfig));
        var schedule = new DDPMScheduler(ToyWorld.Schedule("DDPMScheduler"));
        var dir = Directory.CreateTempSubdirectory("teacher-resume-").FullName;
        try
        {
            var options = new TeacherPretrainingOptions
            {
                Steps = 6, BatchSize = 4, WarmupSteps = 2, ProgressEvery = 1, CheckpointEvery = 3, Seed = 5,
                CheckpointDir = Path.Combine(dir, "checkpoint"),
            };
            var reported = new List<int>();
            (Dictionary<string, Tensor> Unet, Dictionary<string, Tensor> Text) Run(TeacherPretrainingOptions o, int? stopAfter = null)
            {
                manual_seed(0);
                using var text = new CLIPTextModel(ToyVocabulary.TextConfig(tokenizer));
                using var unet = new UNet2DConditionModel(TinyToyPipeline.UnetConfig);
                using var cancel = new CancellationTokenSource();
                reported.Clear();
                try
                {
                    TeacherPretraining.Train(unet, text, tokenizer, data, schedule, o, p =>
                    {
                        reported.Add(p.Step);
                        if (p.Step == stopAfter) cancel.Cancel();
                    }, cancel.Token);
                }
                catch (OperationCanceledException) when (stopAfter is not null) { }
                return (Copy(unet), Copy(text));
            }
            static Dictionary<string, Tensor> Copy(nn.Module m) =>
                m.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
            static bool Same(Tensor a, Tensor b) => a.eq(b).all().item<bool>();

            var straight = Run(options with { CheckpointDir = null });
            Run(options, stopAfter: 4); // stopped after step 4: the checkpoint holds step 3
            Assert.Equal([1, 2, 3, 4], reported);
            Assert.True(File.Exists(Path.Combine(dir, "checkpoint", "state.json")));
            var resumed = Run(options);
            Assert.Equal([4, 5, 6], reported); // continues after the checkpoint's step
            foreach (var (name, value) in straight.Unet)
                Assert.True(Same(value, resumed.Unet[name]), name);
            // a checkpoint of another run is refused, not silently continued
            var e = Assert.Throws<InvalidDataException>(() => Run(options with { Seed = 6 }));
            Assert.Contains("another run", e.Message);

            // the text encoder stays at its initialisation unless trained; trained, it learns
            manual_seed(0);
            Dictionary<string, Tensor> initialText;
            using (var text = new CLIPTextModel(ToyVocabulary.TextConfig(tokenizer))) initialText = Copy(text);
            Assert.All(straight.Text, p => Assert.True(Same(p.Value, initialText[p.Key]), p.Key));
            var trained = Run(options with { CheckpointDir = null, TrainTextEncoder = true });
            Assert.Contains(trained.Text, p => !Same(p.Value, initialText[p.Key]));
            var again = Run(options with { CheckpointDir = null, TrainTextEncoder = true });
            Assert.All(trained.Text, p => Assert.True(Same(p.Value, again.Text[p.Key]), p.Key));
        }
        finally { Directory.Delete(dir, true); }
    }
}
