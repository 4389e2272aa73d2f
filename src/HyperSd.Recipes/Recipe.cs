namespace HyperSd.Recipes;

// A recipe is read from YAML with snake_case keys (steps_per_stage) and hyphenated enum values (single-file,
// ddim-trailing). Where a field has a default it is the paper's or PCM's setting for SD1.5 (see METHOD-NOTES), or the
// default of the Distillation type it maps onto.

/// <summary>A whole distillation run: the teacher, the data, the teacher trajectories, the TSCD schedule and the
/// evaluation. Plain data: the services resolve it into each stage's typed settings once, at submission
/// (HyperSd.Services.Runs.RecipeMapping). Paths must lie under the deployment's roots, links followed (model paths under
/// the models root, data paths under the data root; relative ones against their root: HyperSd.Services.Runs.InputRoots);
/// prompts files are read and stored with the run at submission.</summary>
public sealed partial record Recipe
{

    /// <summary>The run's name (shown in run lists and artifact paths).</summary>
    public string Name { get; init; } = "";

    /// <summary>Seed of the trajectory sampling and of every TSCD stage.</summary>
    public long Seed { get; init; }

    /// <summary>The teacher.</summary>
    public ModelRecipe Model { get; init; } = new();

    /// <summary>The image–caption pairs.</summary>
    public DatasetRecipe Dataset { get; init; } = new();

    /// <summary>The teacher's guided ODE steps.</summary>
    public TrajectoriesRecipe Trajectories { get; init; } = new();

    /// <summary>The TSCD stages.</summary>
    public TscdRecipe Tscd { get; init; } = new();

    /// <summary>The measurements of teacher and student.</summary>
    public EvaluationRecipe Evaluation { get; init; } = new();

    /// <summary>The LoRA merger: one unified LoRA from the stages' LoRAs, evaluated beside them; absent = none.</summary>
    public MergeRecipe? Merge { get; init; }

    /// <summary>Reward feedback learning after TSCD (Hyper-SD §3.2); absent = none.</summary>
    public ReflRecipe? Refl { get; init; }

    /// <summary>One-step enhancement by distribution matching after ReFL (Hyper-SD §3.3); absent = none.</summary>
    public DmdRecipe? Dmd { get; init; }

    /// <summary>Where the real-scale reward models are (the toy world's come with the project).</summary>
    public RewardsRecipe? Rewards { get; init; }

    /// <summary>Images to make with the distilled student once it is trained (the generator service); absent = none.</summary>
    public GenerationRecipe? Generation { get; init; }
}

public enum ModelSource { Toy, Diffusers, SingleFile }

public enum ModelArchitecture { Sd15, Sdxl }

public enum ModelDType { Float32, Float16, Bfloat16 }

/// <summary>The teacher (frozen base model) and where it runs.</summary>
public sealed record ModelRecipe
{
    /// <summary>toy: the embedded toy teacher; diffusers: a pipeline folder; single-file: one SD1.x .safetensors checkpoint.</summary>
    public ModelSource Source { get; init; } = ModelSource.Toy;

    /// <summary>The weights' folder or file (under the models root); required unless toy (there, optionally a trained toy
    /// teacher folder).</summary>
    public string? Path { get; init; }

    /// <summary>sd15 or sdxl; the built-in toy teacher has the SD1.5 topology (an SDXL toy model comes with its path).</summary>
    public ModelArchitecture Architecture { get; init; } = ModelArchitecture.Sd15;

    /// <summary>CLIP tokenizer folder; single-file checkpoints only (they carry no tokenizer).</summary>
    public string? Tokenizer { get; init; }

    /// <summary>cpu, cuda or cuda:N.</summary>
    public string Device { get; init; } = "cpu";

    /// <summary>float32, float16 or bfloat16: the teacher's weights and activations.</summary>
    public ModelDType Dtype { get; init; } = ModelDType.Float32;
}

public enum DatasetSource { Toy, Folder, Jsonl, Csv }

/// <summary>The image–caption pairs the trajectories start from.</summary>
public sealed record DatasetRecipe
{
    /// <summary>toy: generated scenes; folder: images with same-named .txt captions; jsonl / csv: a manifest of image paths
    /// and captions.</summary>
    public DatasetSource Source { get; init; } = DatasetSource.Toy;

    /// <summary>The folder or manifest (under the data root); required unless toy. A manifest's image paths are relative to
    /// its folder, never absolute or with '..'.</summary>
    public string? Path { get; init; }

    /// <summary>toy: the number of scenes (required); otherwise the most pairs to use (null = all).</summary>
    public int? Count { get; init; }

    /// <summary>Side of the square training images in pixels; null = the model's (toy 32, sd15 512, sdxl 1024).</summary>
    public int? Resolution { get; init; }

    /// <summary>Seed of the toy scenes and of any subsampling.</summary>
    public long Seed { get; init; } = 1;

    /// <summary>Encoded pairs per latent shard written by dataset preparation.</summary>
    public int ShardSize { get; init; } = 1024;
}

/// <summary>The teacher's ODE steps with classifier-free guidance that TSCD trains on.</summary>
public sealed record TrajectoriesRecipe
{
    /// <summary>Number of (x_t, x_{t−s}) samples to generate; the stages draw from them with replacement.</summary>
    public int Count { get; init; }

    /// <summary>DDIM solver grid: s = 1000 / solver_steps (PCM: 50 for SD1.5, 40 for SDXL).</summary>
    public int SolverSteps { get; init; } = 50;

    /// <summary>LCM-form guidance w ~ U[guidance_min, guidance_max] (PCM SD1.5: [4, 5]; SDXL: [6, 7]).</summary>
    public double GuidanceMin { get; init; } = 4;

    /// <summary>Upper end of the guidance range.</summary>
    public double GuidanceMax { get; init; } = 5;

    /// <summary>Samples per teacher forward pass.</summary>
    public int BatchSize { get; init; } = 16;

    /// <summary>Share of captions replaced by the empty prompt (PCM: 0 by default; 0.1 only in its run without the CFG
    /// solver).</summary>
    public double EmptyPromptProbability { get; init; }
}

public enum ConsistencyLoss { Huber, Mse }

/// <summary>alternate (PCM): even steps update only the discriminator, odd steps only the student, each on its own batch;
/// joint: every step updates both on one batch.</summary>
public enum AdversarialSteps { Alternate, Joint }

/// <summary>The noise that re-noises student output and target to t_adv: independent draws (PCM) or one shared draw.</summary>
public enum NoiseDraw { Independent, Shared }

/// <summary>The learning rate after warm-up.</summary>
public enum LrScheduler { Constant, Cosine }

/// <summary>The layout of saved LoRA files: kohya (sd-scripts, A1111) or peft (diffusers).</summary>
public enum LoraFormat { Kohya, Peft }

/// <summary>Trajectory segmented consistency distillation: one stage per entry of <see cref="Segments"/>, each from
/// the last stage's weights.</summary>
public sealed record TscdRecipe
{
    /// <summary>k of each stage, strictly decreasing, each at most solver_steps (Hyper-SD: 8 → 4 → 2 → 1).</summary>
    public IReadOnlyList<int> Segments { get; init; } = [8, 4, 2, 1];

    /// <summary>Optimiser steps of each stage.</summary>
    public int StepsPerStage { get; init; } = 1000;

    /// <summary>Trajectory samples per step.</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>AdamW learning rate of the student (PCM: 5e-6 SD1.5, 2e-6 SDXL).</summary>
    public double LearningRate { get; init; } = 5e-6;

    /// <summary>Learning rate after warm-up: constant (diffusers' scripts' default) or cosine (decays to 0 by each
    /// stage's last step).</summary>
    public LrScheduler LrScheduler { get; init; } = LrScheduler.Constant;

    /// <summary>Linear warm-up at the start of every stage (each stage starts a fresh AdamW), in student updates (every step,
    /// or every other one when alternating). PCM: 0 in effect (its argparse's 500 is ignored by its constant scheduler).
    /// </summary>
    public int LrWarmupSteps { get; init; }

    /// <summary>AdamW weight decay (PCM: 1e-3).</summary>
    public double WeightDecay { get; init; } = 1e-3;

    /// <summary>Gradient clipping norm.</summary>
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>EMA of the student used for targets; 0 = the online student under no-grad (PCM).</summary>
    public double EmaDecay { get; init; }

    /// <summary>ζ: the student sees x_t + ζ·z (Hyper-SD's noise perturbation; its value is not public); 0 = off.</summary>
    public double PerturbationScale { get; init; }

    /// <summary>huber (pseudo-Huber with huber_c) or mse.</summary>
    public ConsistencyLoss Loss { get; init; } = ConsistencyLoss.Huber;

    /// <summary>Pseudo-Huber c (PCM, LCM: 0.001); used with loss huber.</summary>
    public double HuberC { get; init; } = 0.001;

    /// <summary>The LoRA to train (PCM: rank 64, PEFT's default alpha 8); null (or left empty) = full fine-tuning of a
    /// teacher copy.</summary>
    public LoraRecipe? Lora { get; init; } = new();

    /// <summary>kohya or peft: the layout of the saved LoRA files.</summary>
    public LoraFormat LoraFormat { get; init; } = LoraFormat.Kohya;

    /// <summary>Loss weights per k; every stage needs an entry (default: MSE only at k = 8, PCM's 0.1 adversarial by k = 1).</summary>
    public IReadOnlyDictionary<int, LossWeightsRecipe> Weights { get; init; } = DefaultWeights();

    /// <summary>Adam learning rate of the discriminator heads (PCM: 1e-5).</summary>
    public double DiscriminatorLearningRate { get; init; } = 1e-5;

    /// <summary>Inner width of the discriminator heads; null = the width of the feature each reads.</summary>
    public int? DiscriminatorChannels { get; init; }

    /// <summary>Independent discriminator heads on each UNet feature map (PCM: 4, 36 for SD1.5).</summary>
    public int DiscriminatorHeadsPerFeature { get; init; } = 4;

    /// <summary>AdamW weight decay of the discriminator heads (PCM: 1e-3).</summary>
    public double DiscriminatorWeightDecay { get; init; } = 1e-3;

    /// <summary>Gradient clipping norm of the discriminator heads (PCM: 1.0); null = no clipping.</summary>
    public double? DiscriminatorMaxGradNorm { get; init; } = 1.0;

    /// <summary>alternate (PCM) or joint student and discriminator updates, in stages with an adversarial weight.</summary>
    public AdversarialSteps AdversarialSchedule { get; init; } = AdversarialSteps.Alternate;

    /// <summary>independent (PCM) or shared noise re-noising fake and real to t_adv.</summary>
    public NoiseDraw AdversarialNoise { get; init; } = NoiseDraw.Independent;

    /// <summary>Student updates of a stage with k segments: every step, or the odd ones when alternating.</summary>
    public int StudentUpdates(int k) =>
        AdversarialSchedule == AdversarialSteps.Alternate && Weights.TryGetValue(k, out var w) && w.Adversarial > 0
            ? StepsPerStage / 2 : StepsPerStage;

    /// <summary>Steps between checkpoints (a stage resumes from its last one).</summary>
    public int CheckpointEvery { get; init; } = 500;

    /// <summary>Pure MSE/Huber at k = 8, then PCM's 0.1 adversarial weight reached by k = 1.</summary>
    static Dictionary<int, LossWeightsRecipe> DefaultWeights() => new()
    {
        [8] = new() { Mse = 1.0, Adversarial = 0.0 }, [4] = new() { Mse = 1.0, Adversarial = 0.02 },
        [2] = new() { Mse = 0.8, Adversarial = 0.05 }, [1] = new() { Mse = 0.6, Adversarial = 0.1 },
    };
}

/// <summary>The LoRA of the student.</summary>
public sealed record LoraRecipe
{
    /// <summary>Rank r of each adapter.</summary>
    public int Rank { get; init; } = 64;

    /// <summary>Scale alpha / r is applied to the adapter's output.</summary>
    public double Alpha { get; init; } = 8;

    /// <summary>Module name patterns to adapt (PEFT's rule; "re:" for a regular expression); null = the LCM/PCM list.</summary>
    public IReadOnlyList<string>? TargetModules { get; init; }
}

/// <summary>The weights of TSCD's two loss terms at one k.</summary>
public sealed record LossWeightsRecipe
{
    /// <summary>Weight of the consistency (Huber/MSE) term.</summary>
    public double Mse { get; init; }

    /// <summary>Weight of the adversarial (hinge) term.</summary>
    public double Adversarial { get; init; }
}

/// <summary>
/// Hyper-SD's unified LoRA (the lora-merger service): the weighted sum of the stages' LoRA deltas, re-factorised per
/// module by truncated SVD to a target rank (alpha = rank), as kohya's svd_merge_lora.py does. Each stage starts from
/// the last stage's weights, so every stage's LoRA is a whole model: weights summing to 1 average them.
/// </summary>
public sealed record MergeRecipe
{
    /// <summary>false keeps the section but plans no merge stage.</summary>
    public bool Enabled { get; init; } = true;

    /// <summary>Weight of each stage's LoRA by stage name (tscd-k8, …); every LoRA-making stage needs an entry (0 leaves
    /// it out). Absent = equal weights, 1/n each (neither Hyper-SD nor its model card gives the weights).</summary>
    public IReadOnlyDictionary<string, double>? Weights { get; init; }

    /// <summary>Target rank of every module; null = tscd.lora.rank (the released Hyper-SD LoRAs: 64).</summary>
    public int? Rank { get; init; }

    /// <summary>Target rank of k×k convolutions (kohya's conv rank); null = rank.</summary>
    public int? ConvRank { get; init; }

    /// <summary>true lowers a rank above a module's maximum to that maximum (as kohya does); false makes it an error.</summary>
    public bool ClampRank { get; init; }

    /// <summary>The files written: kohya (lora.safetensors, for A1111/ComfyUI and hypersd generate --lora) and peft
    /// (pytorch_lora_weights.safetensors, the file diffusers' load_lora_weights reads from a folder).</summary>
    public IReadOnlyList<LoraFormat> Formats { get; init; } = [LoraFormat.Kohya, LoraFormat.Peft];

    /// <summary>Also fuse the unified LoRA into the base UNet and store it in the diffusers layout (unet/).</summary>
    public bool Fuse { get; init; }
}

/// <summary>
/// Reward feedback learning (Hyper-SD §3.2, ImageReward's ReFL) on TSCD's students: one stage per entry of
/// <see cref="Students"/>, each continuing TSCD stage k's LoRA. Defaults are ImageReward's ReFL settings.
/// </summary>
public sealed record ReflRecipe
{
    /// <summary>false keeps the section but plans no ReFL stage.</summary>
    public bool Enabled { get; init; } = true;

    /// <summary>The k of each TSCD stage whose student learns from the rewards (Hyper-SD: the 1-step model and more); each
    /// must be in tscd.segments.</summary>
    public IReadOnlyList<int> Students { get; init; } = [1];

    /// <summary>The graded step is one of the student's steps from this fraction of its schedule on, the last always
    /// included; 0 = any step (ImageReward's stop index in [30, 39] of 40 is 0.75).</summary>
    public double StopFrom { get; init; }

    public int Steps { get; init; } = 1000;
    public int BatchSize { get; init; } = 8;
    public double LearningRate { get; init; } = 1e-5;
    public double WeightDecay { get; init; } = 1e-2;
    public double MaxGradNorm { get; init; } = 1.0;

    /// <summary>α in mean(relu(α − r)): ImageReward's 2 on its normalised reward.</summary>
    public double Alpha { get; init; } = 2.0;

    /// <summary>The reward loss's weight (ImageReward's grad_scale 1e-3).</summary>
    public double RewardScale { get; init; } = 1e-3;

    /// <summary>Weight of the MSE between the student's x̂0 and its TSCD start's, which keeps it from drifting; 0 = off.</summary>
    public double AnchorWeight { get; init; } = 1.0;

    /// <summary>Weight of each reward by name (0 leaves one out): toy-structure, toy-structure-logp (the toy recognizer's
    /// reading of the caption) for the toy model; laion-aesthetic and pickscore (rewards: paths) at real scale. Absent:
    /// toy-structure-logp for the toy model, laion-aesthetic at real scale.</summary>
    public IReadOnlyDictionary<string, double>? Rewards { get; init; }

    /// <summary>The reward weights used: the given ones, or the model's world's default.</summary>
    public IReadOnlyDictionary<string, double> RewardWeights(bool toy) =>
        Rewards ?? new Dictionary<string, double> { [toy ? "toy-structure-logp" : "laion-aesthetic"] = 1.0 };

    public int CheckpointEvery { get; init; } = 500;
}

/// <summary>
/// One-step enhancement (Hyper-SD §3.3, DMD2's settings where Hyper-SD is silent): the 1-step student (ReFL's k = 1 LoRA if
/// there is one, else TSCD's) is the generator; a second LoRA on the base learns the fake score; the teacher with CFG is the
/// real score. The loss adds MSE regression to teacher ODE pairs and, optionally, the rewards.
/// </summary>
public sealed record DmdRecipe
{
    /// <summary>false keeps the section but plans no DMD stage.</summary>
    public bool Enabled { get; init; } = true;

    /// <summary>Training iterations: the fake score updates every one, the generator every <see cref="GeneratorUpdateEvery"/>th.</summary>
    public int Steps { get; init; } = 4000;
    public int BatchSize { get; init; } = 8;
    public double GeneratorLearningRate { get; init; } = 1e-5;
    public double FakeScoreLearningRate { get; init; } = 1e-5;
    public double WeightDecay { get; init; } = 1e-2;
    public double MaxGradNorm { get; init; } = 10;
    public int WarmupSteps { get; init; } = 500;

    /// <summary>Two time scales: DMD2's 10 for SD1.5 (5 for SDXL).</summary>
    public int GeneratorUpdateEvery { get; init; } = 10;

    /// <summary>The distribution-matching timestep range as fractions of the schedule (DMD2: 2 %–98 %).</summary>
    public double MinTimestep { get; init; } = 0.02;
    public double MaxTimestep { get; init; } = 0.98;

    /// <summary>The real score's CFG scale (DMD2: 1.75 for SD1.5, 8 for SDXL).</summary>
    public double RealGuidance { get; init; } = 1.75;

    public double DistributionMatchingWeight { get; init; } = 1.0;

    /// <summary>Weight of the MSE to teacher ODE pairs (Hyper-SD adds it for stability); 0 = off.</summary>
    public double RegressionWeight { get; init; } = 0.25;

    /// <summary>How many (noise, teacher x0) pairs, each from the teacher's DDIM at this many steps with the real guidance.</summary>
    public int RegressionPairs { get; init; } = 1024;
    public int RegressionTeacherSteps { get; init; } = 25;

    /// <summary>Rewards kept in this phase (names and weights as in refl.rewards); absent = none.</summary>
    public IReadOnlyDictionary<string, double>? Rewards { get; init; }

    /// <summary>The reward term's weight and α in weight · mean(relu(α − r)).</summary>
    public double RewardWeight { get; init; } = 1e-3;
    public double RewardAlpha { get; init; } = 2.0;

    /// <summary>The GAN head on the fake score's mid block: generator and discriminator weights (DMD2: 1e-3, 1e-2); 0 = no GAN.</summary>
    public double GanGeneratorWeight { get; init; }
    public double GanDiscriminatorWeight { get; init; } = 1e-2;

    /// <summary>The fake score LoRA's rank and alpha.</summary>
    public int FakeScoreRank { get; init; } = 64;
    public double FakeScoreAlpha { get; init; } = 8;

    public int CheckpointEvery { get; init; } = 500;
}

/// <summary>The real-scale reward models' files (read where the workers run, as model.path is).</summary>
public sealed record RewardsRecipe
{
    /// <summary>CLIP ViT-L/14 (a CLIPModel or CLIPVisionModelWithProjection folder with preprocessor_config.json), which the
    /// LAION aesthetic predictor reads.</summary>
    public string? Clip { get; init; }

    /// <summary>The LAION aesthetic predictor's weights (safetensors).</summary>
    public string? AestheticPredictor { get; init; }

    /// <summary>A PickScore-style CLIPModel folder (text and image towers, logit_scale).</summary>
    public string? Pickscore { get; init; }

    /// <summary>How the run trains the toy world's learnt rewards (toy-preference, toy-aesthetic) when a section uses them.</summary>
    public ToyRewardTrainingRecipe ToyTraining { get; init; } = new();

    /// <summary>Each path through <paramref name="resolve"/> with its field's name (clip, aesthetic_predictor, pickscore).</summary>
    public RewardsRecipe Resolve(Func<string?, string, string?> resolve) => this with
    {
        Clip = resolve(Clip, "clip"), AestheticPredictor = resolve(AestheticPredictor, "aesthetic_predictor"),
        Pickscore = resolve(Pickscore, "pickscore"),
    };
}

/// <summary>The train-rewards stage's budget: Bradley–Terry steps of each learnt toy reward, pairs per step, and the seed.</summary>
public sealed record ToyRewardTrainingRecipe
{
    public int PreferenceSteps { get; init; } = 600;
    public int AestheticSteps { get; init; } = 400;
    public int BatchSize { get; init; } = 32;
    public int Seed { get; init; }
}

public enum EvaluationSampler { DdimTrailing, Tcd }

/// <summary>How the teacher and the distilled student are measured.</summary>
public sealed record EvaluationRecipe
{
    /// <summary>Student step counts (Hyper-SD: 1, 2, 4, 8).</summary>
    public IReadOnlyList<int> Steps { get; init; } = [1, 2, 4, 8];

    /// <summary>Student samplers: ddim-trailing (fixed-step LoRAs) and tcd (the unified LoRA), guidance off.</summary>
    public IReadOnlyList<EvaluationSampler> Samplers { get; init; } = [EvaluationSampler.DdimTrailing, EvaluationSampler.Tcd];

    /// <summary>TCD's eta (gamma) (Hyper-SD model card: 1.0; lower gives more detail at more steps).</summary>
    public double TcdEta { get; init; } = 1.0;

    /// <summary>Number of held-out toy prompts (toy dataset only); give this or prompts_file.</summary>
    public int? Prompts { get; init; }

    /// <summary>A text file with one held-out prompt per line (under the data root; stored with the run at submission).</summary>
    public string? PromptsFile { get; init; }

    /// <summary>Steps of the teacher's reference images (Hyper-SD's table: the base model at 25 steps).</summary>
    public int TeacherSteps { get; init; } = 25;

    /// <summary>The teacher's CFG scale (diffusers' SD1.5 default 7.5).</summary>
    public double TeacherGuidance { get; init; } = 7.5;

    /// <summary>Real images (toy: generated; else from the dataset) whose features are the Fréchet distance's reference.</summary>
    public int RealImages { get; init; } = 1024;

    /// <summary>Seed of the first prompt's noise; prompt i uses seed + i, the same for every model.</summary>
    public long Seed { get; init; } = 1234;

    /// <summary>Images per generation batch.</summary>
    public int BatchSize { get; init; } = 64;

    /// <summary>Prompts shown as rows of each image grid.</summary>
    public int GridPrompts { get; init; } = 8;

    /// <summary>Rewards every evaluated image is scored with by the reward-scorer role (names as in refl.rewards), each a
    /// metric row with its interval; absent = none.</summary>
    public IReadOnlyList<string>? Rewards { get; init; }
}

/// <summary>Bulk prompt-to-image generation with the distilled student: the TSCD stage whose k equals steps (Hyper-SD's
/// fixed-step LoRA), else the last stage. Each PNG carries the parameters that reproduce it; a manifest.jsonl lists them.</summary>
public sealed record GenerationRecipe
{
    /// <summary>The prompts; give this or prompts_file.</summary>
    public IReadOnlyList<string>? Prompts { get; init; }

    /// <summary>A text file with one prompt per line (under the data root; stored with the run at submission).</summary>
    public string? PromptsFile { get; init; }

    /// <summary>Images per prompt, each with its own seed.</summary>
    public int ImagesPerPrompt { get; init; } = 1;

    /// <summary>Sampling steps (Hyper-SD's LoRAs: 1, 2, 4 or 8).</summary>
    public int Steps { get; init; } = 4;

    /// <summary>ddim-trailing or tcd, guidance off, as Hyper-SD's LoRAs are used.</summary>
    public EvaluationSampler Sampler { get; init; } = EvaluationSampler.DdimTrailing;

    /// <summary>TCD's eta (gamma), with sampler tcd.</summary>
    public double TcdEta { get; init; } = 1.0;

    /// <summary>Seed of the first image; image i uses seed + i.</summary>
    public long Seed { get; init; }

    /// <summary>Images per forward pass.</summary>
    public int BatchSize { get; init; } = 16;
}
