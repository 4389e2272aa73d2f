using System.Globalization;
using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using HyperSd.Distillation.Training;

namespace HyperSd.Distillation.SegmentConsistency;

/// <summary>
/// The folder one TSCD stage trains in: <c>checkpoint/</c> (rotated through <c>checkpoint.tmp</c> and
/// <c>checkpoint.old</c>, so a crash leaves one whole checkpoint) while it runs, and <c>final/</c> when it is done, with
/// the student's trainable weights and its LoRA file (Hyper-SD's fixed k-step LoRA).
/// </summary>
public sealed record SegmentStageLayout(string Dir)
{
    /// <summary>File names in <see cref="Final"/> (which is what a stage's "lora" artifact holds).</summary>
    public const string StudentFile = "student.safetensors", LoraFile = "lora.safetensors", MetricsFile = "metrics.json";

    public string Checkpoint => Path.Combine(Dir, "checkpoint");
    public string Final => Path.Combine(Dir, "final");
    /// <summary>The student's trainable weights (the LoRA's, or the whole UNet's) as a state dict.</summary>
    public string FinalStudent => Path.Combine(Final, StudentFile);
    /// <summary>The finished stage's metrics, written last: their presence marks the stage done.</summary>
    public string FinalMetrics => Path.Combine(Final, MetricsFile);
    /// <summary>The LoRA in the stage's file format (kohya or PEFT).</summary>
    public string FinalLora => Path.Combine(Final, LoraFile);

    /// <summary>Writes a finished stage (TSCD, ReFL, DMD): the student's weights, its LoRA file tagged with the method and
    /// its k (a full UNet copy in <c>unet/</c> instead), what <paramref name="extra"/> adds, then the metrics, last, since
    /// their presence marks the stage done; the checkpoints go.</summary>
    public void SaveFinal<TMetrics>(SegmentStudent student, LoraFileFormat format, string method, int segments, TMetrics metrics,
        Action<string>? extra = null)
    {
        Directory.CreateDirectory(Final);
        SafeTensors.Save(FinalStudent, StateDict.Of(student.Trainable));
        if (student.Lora is { } lora)
            LoraFormats.Save(lora, FinalLora, format, new Dictionary<string, string>
            {
                ["hypersd_method"] = method, ["hypersd_segments"] = segments.ToString(CultureInfo.InvariantCulture),
            });
        else
            student.Unet!.SavePretrained(Path.Combine(Final, "unet"));
        extra?.Invoke(Final);
        CheckpointFiles.WriteJson(FinalMetrics, metrics);
        if (Directory.Exists(Checkpoint)) Directory.Delete(Checkpoint, true);
    }

    /// <summary>Stage k's folder under a root holding several stages (<see cref="SegmentConsistencyTrainer.TrainStages"/>).</summary>
    public static SegmentStageLayout ForStage(string root, int segments) => new(Path.Combine(root, $"stage-k{segments}"));
}
