using HyperSd.Diffusion.IO;
using HyperSd.Diffusion.Models.Unets;
using HyperSd.Diffusion.Pipelines;
using HyperSd.Diffusion.Schedulers;
using HyperSd.Distillation.SegmentConsistency;
using HyperSd.Distillation.Toy;
using HyperSd.Recipes;
using HyperSd.Workers.Hosting;
using TorchSharp;
using Recipe = HyperSd.Recipes.Recipe;

namespace HyperSd.Workers.Execution;

/// <summary>The models a stage loads from its recipe.</summary>
public static class StageModels
{
    /// <summary>The device a stage runs on: the worker's device slot, which must be of the kind the recipe asks for.</summary>
    public static string ResolveDevice(Recipe recipe, string slot)
    {
        bool wantsCuda = recipe.Model.Device.StartsWith("cuda", StringComparison.Ordinal);
        bool isCuda = slot.StartsWith("cuda", StringComparison.Ordinal);
        if (wantsCuda != isCuda)
            throw new NotSupportedException($"the recipe's model.device is '{recipe.Model.Device}' but this worker's device is '{slot}'");
        return slot;
    }

    /// <summary>The teacher pipeline of the recipe's architecture (SD1.5 or SDXL).</summary>
    public static IDiffusionPipeline LoadTeacher(Recipe recipe, WorkerOptions options, string device)
    {
        var dev = torch.device(device);
        var dtype = recipe.TorchDType();
        bool sdxl = recipe.Model.Architecture == ModelArchitecture.Sdxl;
        return recipe.Model.Source switch
        {
            ModelSource.Toy when !sdxl => StableDiffusionPipeline.FromPretrained(recipe.Model.Path ?? options.ToyTeacherDir ?? ToyWorld.PretrainedTeacherDir, dev, dtype),
            ModelSource.SingleFile when !sdxl => StableDiffusionPipeline.FromSingleFile(recipe.Model.Path!,
                recipe.Model.Tokenizer ?? throw new ArgumentException("model.tokenizer is required for a single-file checkpoint"), device: dev, dtype: dtype),
            ModelSource.SingleFile => throw new NotSupportedException("model.source single-file: SDXL single-file checkpoints are not supported; use a diffusers folder"),
            _ when sdxl => StableDiffusionXLPipeline.FromPretrained(recipe.Model.Path!, dev, dtype),
            _ => StableDiffusionPipeline.FromPretrained(recipe.Model.Path!, dev, dtype),
        };
    }

    public static ToyRecognizer LoadRecognizer(WorkerOptions options, string device) =>
        ToyRecognizer.FromPretrained(options.ToyRecognizerDir ?? ToyWorld.PretrainedRecognizerDir, torch.device(device));

    /// <summary>The teacher's noise schedule as the forward process the trainers use.</summary>
    public static DDPMScheduler TrainingScheduler(IDiffusionPipeline teacher) => new(teacher.Scheduler.Config);

    /// <summary>A student with the weights a finished TSCD stage saved (its <c>student.safetensors</c>).</summary>
    public static SegmentStudent LoadStudent(UNet2DConditionModel teacher, SegmentStageConfig config, string finalDir)
    {
        SegmentStudent student;
        if (config.Lora is { } lora)
        {
            using var generator = new torch.Generator((ulong)config.Seed);
            student = SegmentStudent.WithLora(teacher, lora, generator);
        }
        else student = SegmentStudent.FullCopy(teacher);
        var path = Path.Combine(finalDir, "student.safetensors");
        if (!File.Exists(path)) throw new FileNotFoundException($"the previous stage's student weights are missing: {path}", path);
        var tensors = SafeTensors.Load(path);
        try { StateDict.Load(student.Trainable, tensors, new WeightSource(path)); }
        finally { foreach (var t in tensors.Values) t.Dispose(); }
        return student;
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
