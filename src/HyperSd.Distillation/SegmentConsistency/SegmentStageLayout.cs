namespace HyperSd.Distillation.SegmentConsistency;

/// <summary>
/// The folder one TSCD stage trains in: <c>checkpoint/</c> (rotated through <c>checkpoint.tmp</c> and
/// <c>checkpoint.old</c>, so a crash leaves one whole checkpoint) while it runs, and <c>final/</c> when it is done, with
/// the student's trainable weights and its LoRA file (Hyper-SD's fixed k-step LoRA).
/// </summary>
public sealed record SegmentStageLayout(string Dir)
{
    /// <summary>File names in <see cref="Final"/> (which is what a stage's "lora" artifact holds).</summary>
    public const string StudentFile = "student.safetensors", LoraFile = "lora.safetensors";

    public string Checkpoint => Path.Combine(Dir, "checkpoint");
    public string Final => Path.Combine(Dir, "final");
    /// <summary>The student's trainable weights (the LoRA's, or the whole UNet's) as a state dict.</summary>
    public string FinalStudent => Path.Combine(Final, StudentFile);
    /// <summary>The LoRA in the stage's file format (kohya or PEFT).</summary>
    public string FinalLora => Path.Combine(Final, LoraFile);

    /// <summary>Stage k's folder under a root holding several stages (<see cref="SegmentConsistencyTrainer.TrainStages"/>).</summary>
    public static SegmentStageLayout ForStage(string root, int segments) => new(Path.Combine(root, $"stage-k{segments}"));
}
