namespace HyperSd.Data.Entities;

/// <summary>What an artifact is; stored as its lower-case name.</summary>
public enum ArtifactKind
{
    Dataset, Trajectories, Lora, Checkpoint, Grid, Report, Images,
    /// <summary>A standalone UNet in the diffusers layout (config.json, diffusion_pytorch_model.safetensors).</summary>
    Unet,
    /// <summary>The learnt reward models a run trained, one folder per reward (config.json and its weights).</summary>
    RewardModels,
}

/// <summary>A file or folder in the artifact store, with its content hash, the stage attempt that made it and the typed
/// metadata that later stages choose their inputs by (never by parsing its path).</summary>
public class Artifact
{
    public Guid Id { get; set; }
    public required ArtifactKind Kind { get; set; }
    /// <summary>Relative to the artifact store's root, '/'-separated; unique.</summary>
    public required string Path { get; set; }
    public required string Sha256 { get; set; }
    public long SizeBytes { get; set; }
    public Guid? RunId { get; set; }
    public Guid? StageId { get; set; }
    /// <summary>The kind of the stage that made it (its entry in the stage catalogue).</summary>
    public string? StageKind { get; set; }
    /// <summary>The stage attempt that made it.</summary>
    public int? Attempt { get; set; }
    /// <summary>TSCD's k, for what a segment-consistency stage made.</summary>
    public int? Segments { get; set; }
    /// <summary>The step count a fixed-step LoRA is made for (Hyper-SD: stage k's LoRA samples k steps).</summary>
    public int? Steps { get; set; }
    public DateTimeOffset CreatedAt { get; set; }

    /// <summary>Lineage: the artifacts this one was made from.</summary>
    public List<ArtifactInput> Inputs { get; set; } = [];
}
