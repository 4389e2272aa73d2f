using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Lora;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Distillation.Data;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Toy;
using HyperSd.Recipes;
using HyperSd.Services.Hosting;
using TorchSharp;

namespace HyperSd.Services.Execution;

/// <summary>The models a stage loads, as its settings describe them.</summary>
public static class StageModels
{
    /// <summary>The device a stage runs on: the worker's device slot, which must be of the kind the model asks for.</summary>
    public static string ResolveDevice(ModelRecipe model, string slot)
    {
        bool wantsCuda = model.Device.StartsWith("cuda", StringComparison.Ordinal);
        bool isCuda = slot.StartsWith("cuda", StringComparison.Ordinal);
        if (wantsCuda != isCuda)
            throw new NotSupportedException($"the recipe's model.device is '{model.Device}' but this worker's device is '{slot}'");
        return slot;
    }

    /// <summary>The model's dtype as TorchSharp names it.</summary>
    public static torch.ScalarType TorchDType(ModelRecipe model) => model.Dtype switch
    {
        ModelDType.Float16 => torch.ScalarType.Float16,
        ModelDType.Bfloat16 => torch.ScalarType.BFloat16,
        _ => torch.ScalarType.Float32,
    };

    /// <summary>Where the model's weights are: its path, or the toy teacher's folder.</summary>
    public static string TeacherPath(ModelRecipe model, WorkerOptions options) =>
        model.Source == ModelSource.Toy ? model.Path ?? options.ToyTeacherDir ?? ToyWorld.PretrainedTeacherDir
            : model.Path ?? throw new ArgumentException($"model.path is required for a {model.Source} model");

    /// <summary>The model as images record it (id, path, sha256): "toy", or the file or folder name.</summary>
    public static Task<ModelReference> DescribeTeacherAsync(ModelRecipe model, WorkerOptions options, CancellationToken ct)
    {
        var path = TeacherPath(model, options);
        return Generator.ImageModels.DescribeAsync(
            model.Source == ModelSource.Toy ? Generator.ImageModels.ToyId : Path.GetFileName(Path.TrimEndingDirectorySeparator(path)),
            path, model.Tokenizer, ct);
    }

    /// <summary>The teacher pipeline of the model's architecture (SD1.5 or SDXL).</summary>
    public static IDiffusionPipeline LoadTeacher(ModelRecipe model, WorkerOptions options, string device)
    {
        var dev = torch.device(device);
        var dtype = TorchDType(model);
        bool sdxl = model.Architecture == ModelArchitecture.Sdxl;
        return model.Source switch
        {
            ModelSource.Toy when !sdxl => StableDiffusionPipeline.FromPretrained(TeacherPath(model, options), dev, dtype),
            ModelSource.SingleFile when !sdxl => StableDiffusionPipeline.FromSingleFile(model.Path!,
                model.Tokenizer ?? throw new ArgumentException("model.tokenizer is required for a single-file checkpoint"),
                device: dev, dtype: dtype),
            ModelSource.SingleFile => throw new NotSupportedException(
                "model.source single-file: SDXL single-file checkpoints are not supported; use a diffusers folder"),
            _ when sdxl => StableDiffusionXLPipeline.FromPretrained(model.Path!, dev, dtype),
            _ => StableDiffusionPipeline.FromPretrained(model.Path!, dev, dtype),
        };
    }

    public static ToyRecognizer LoadRecognizer(WorkerOptions options, string device) =>
        ToyRecognizer.FromPretrained(options.ToyRecognizerDir ?? ToyWorld.PretrainedRecognizerDir, torch.device(device));

    /// <summary>All shards of a prepared dataset as one (latents and token ids are what the teacher needs).</summary>
    public static LatentDataset LoadDataset(string dir)
    {
        var summary = DatasetSummary.Read(dir);
        if (summary.Shards.Count == 0) throw new InvalidDataException($"{dir}: the dataset has no shards");
        var shards = summary.Shards.Select(s => LatentDataset.Load(Path.Combine(dir, s))).ToList();
        if (shards.Count == 1) return shards[0];
        try { return LatentDataset.Concat(shards); }
        finally
        {
            foreach (var s in shards) s.Dispose();
        }
    }

    /// <summary>The committed independent judge (<see cref="ToyWorld.PretrainedJudgeDir"/>).</summary>
    public static ToyRecognizer LoadJudge(string device) => ToyRecognizer.FromPretrained(ToyWorld.PretrainedJudgeDir, torch.device(device));

    /// <summary>The teacher's noise schedule as the forward process the trainers use.</summary>
    public static DDPMScheduler TrainingScheduler(IDiffusionPipeline teacher) => new(teacher.Scheduler.Config);

    /// <summary>A student with the weights a finished TSCD stage saved (the stage's "lora" artifact, its
    /// <see cref="SegmentStageLayout.Final"/> folder); <paramref name="lora"/> is how it was trained (null: a full UNet).</summary>
    public static SegmentStudent LoadStudent(UNet2DConditionModel teacher, LoraConfig? lora, string finalDir)
    {
        var path = Path.Combine(finalDir, SegmentStageLayout.StudentFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"the previous stage's student weights are missing: {path}", path);
        SegmentStudent student;
        if (lora is not null)
        {
            using var generator = new torch.Generator(0); // initial values, replaced by the saved ones below
            student = SegmentStudent.WithLora(teacher, lora, generator);
        }
        else student = SegmentStudent.FullCopy(teacher);
        var tensors = SafeTensors.Load(path);
        try
        {
            if (lora is not null) CheckRank(tensors, lora.Rank, path);
            StateDict.Load(student.Trainable, tensors, new WeightSource(path));
        }
        catch
        {
            student.Dispose();
            throw;
        }
        finally { foreach (var t in tensors.Values) t.Dispose(); }
        return student;
    }

    /// <summary>A LoRA trained at another rank than the recipe's is named as that, not as every one of its keys' shapes.</summary>
    static void CheckRank(IReadOnlyDictionary<string, torch.Tensor> tensors, int rank, string path)
    {
        foreach (var (key, t) in tensors)
            if (key.EndsWith(".lora_down.weight", StringComparison.Ordinal) && t.shape[0] != rank)
                throw new InvalidDataException(
                    $"{path}: the LoRA has rank {t.shape[0]} (key '{key}' [{string.Join(", ", t.shape)}]) and the recipe's " +
                    $"tscd.lora.rank is {rank}: a LoRA is continued at the rank it was trained with");
    }

    /// <summary>The pipeline that samples with <paramref name="student"/>: the teacher with the student's LoRA attached
    /// (detach it to get the teacher back), or the student's full UNet copy with the teacher's other parts.</summary>
    public static IDiffusionPipeline WithStudent(IDiffusionPipeline teacher, SegmentStudent student)
    {
        if (student.Lora is null) return teacher.WithUnet(student.Unet!);
        student.Lora.Attach(teacher.Unet);
        return teacher;
    }
}
