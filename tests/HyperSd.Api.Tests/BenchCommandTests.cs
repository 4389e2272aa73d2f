using System.Text.Json;
using HyperSd.Cli.Commands;
using HyperSd.Diffusion;

namespace HyperSd.Api.Tests;

/// <summary><c>hypersd bench</c> at the tiny preset: every component measured, each ratio against the row it names, and bad
/// options refused by name.</summary>
[Collection(nameof(ToyRunTests))]
public sealed class BenchCommandTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("bench-").FullName;

    public void Dispose() => Directory.Delete(dir, true);

    [Fact]
    public void Every_component_is_timed_against_a_baseline_of_the_same_run()
    {
        var json = Path.Combine(dir, "bench.json");
        CliRun.Succeeds(["bench", "--preset", "tiny", "--repeats", "1", "--batches", "1", "2", "--decode-batches", "1",
            "--train-batch", "2", "--memory-steps", "20", "--out", json]);
        var report = JsonSerializer.Deserialize<BenchCommand.Report>(File.ReadAllText(json))!;
        Assert.Equal(NativeAllocator.Tuned, report.AllocatorTuned);
        Assert.Equal([
            "unet forward, batch 1", "unet forward, batch 2", "text encoder, batch 1", "vae decode, batch 1",
            "text to image, 1 step (TCDScheduler), batch 1", "text to image, 4 steps (TCDScheduler), batch 1",
            "discriminator: teacher features of fake and real, batch 2",
            "discriminator: 4 heads per feature map, a call per head (fwd+bwd), batch 4",
            "discriminator: 4 heads per feature map, fused (fwd+bwd), batch 4",
            "LoRA training step (rank 8 on 278 modules, AdamW), batch 2",
        ], report.Rows.Select(r => r.Name));
        var byName = report.Rows.ToDictionary(r => r.Name);
        foreach (var row in report.Rows)
        {
            Assert.True(row.MedianMs > 0 && double.IsFinite(row.MedianMs), $"{row.Name}: {row.MedianMs} ms");
            Assert.Equal(row.MedianMs / byName[row.Baseline].MedianMs, row.Ratio, 9);
        }
        Assert.Equal("unet forward, batch 1", report.Rows[1].Baseline);
        Assert.Equal("discriminator: 4 heads per feature map, a call per head (fwd+bwd), batch 4", report.Rows[^2].Baseline);
        Assert.Equal(20, report.Memory!.Steps);
    }

    [Theory]
    [InlineData("--repeats", "0")]
    [InlineData("--train-batch", "0")]
    [InlineData("--memory-steps", "5")]
    [InlineData("--batches", "0")]
    public void A_bad_option_is_refused_by_name(string option, string value)
    {
        var (code, error) = CliRun.Run(["bench", option, value]);
        Assert.Equal(2, code);
        Assert.Contains(option, error);
    }
}
