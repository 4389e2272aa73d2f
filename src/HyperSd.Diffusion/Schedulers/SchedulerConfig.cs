using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.Json.Serialization;
using HyperSd.Diffusion.IO;

namespace HyperSd.Diffusion.Schedulers;

/// <summary>A diffusers <c>scheduler_config.json</c>. The initialisers are DDIMScheduler's defaults;
/// <see cref="DefaultsFor"/> gives each scheduler class its own, since diffusers' constructor defaults differ per class.
/// Keys this port does not use (e.g. <c>skip_prk_steps</c>) are ignored, as diffusers does.</summary>
public sealed record SchedulerConfig
{
    [JsonPropertyName("_class_name")] public string? ClassName { get; init; }
    public int NumTrainTimesteps { get; init; } = 1000;
    public double BetaStart { get; init; } = 0.0001;
    public double BetaEnd { get; init; } = 0.02;
    public string BetaSchedule { get; init; } = "linear";
    public double[]? TrainedBetas { get; init; }
    public string PredictionType { get; init; } = "epsilon";
    public string TimestepSpacing { get; init; } = "leading";
    public int StepsOffset { get; init; }
    public bool SetAlphaToOne { get; init; } = true;
    public bool ClipSample { get; init; } = true;
    public double ClipSampleRange { get; init; } = 1.0;
    public bool Thresholding { get; init; }
    public double DynamicThresholdingRatio { get; init; } = 0.995;
    public double SampleMaxValue { get; init; } = 1.0;
    public bool RescaleBetasZeroSnr { get; init; }

    // TCDScheduler / LCMScheduler
    public int? OriginalInferenceSteps { get; init; } = 50;
    public double TimestepScaling { get; init; } = 10.0;

    // EulerDiscreteScheduler
    public string InterpolationType { get; init; } = "linear";
    public bool UseKarrasSigmas { get; init; }
    public bool UseExponentialSigmas { get; init; }
    public bool UseBetaSigmas { get; init; }
    public double? SigmaMin { get; init; }
    public double? SigmaMax { get; init; }
    public string TimestepType { get; init; } = "discrete";
    public string FinalSigmasType { get; init; } = "zero";

    /// <summary>Where this config came from, for error messages.</summary>
    [JsonIgnore] public string Source { get; init; } = "scheduler config";

    public static readonly IReadOnlyList<string> BetaSchedules = ["linear", "scaled_linear", "squaredcos_cap_v2"];
    public static readonly IReadOnlyList<string> PredictionTypes = ["epsilon", "sample", "v_prediction"];
    public static readonly IReadOnlyList<string> TimestepSpacings = ["leading", "trailing", "linspace"];

    /// <summary>diffusers' constructor defaults of one scheduler class (DDIMScheduler's for classes without their own here).</summary>
    public static SchedulerConfig DefaultsFor(string className) => className switch
    {
        "TCDScheduler" or "LCMScheduler" => new()
        {
            ClassName = className, BetaStart = 0.00085, BetaEnd = 0.012, BetaSchedule = "scaled_linear", ClipSample = false,
        },
        "EulerDiscreteScheduler" => new() { ClassName = className, TimestepSpacing = "linspace" },
        _ => new() { ClassName = className },
    };

    /// <summary>Reads <c>scheduler_config.json</c> from a file, a scheduler folder, or a pipeline folder with a
    /// <c>scheduler/</c> subfolder. With <paramref name="className"/> the config is read for that class, as diffusers'
    /// <c>TCDScheduler.from_config(pipe.scheduler.config)</c> does: the file's keys over that class's defaults.</summary>
    public static SchedulerConfig Read(string path, string? className = null)
    {
        var file = path;
        if (Directory.Exists(path))
        {
            file = Path.Combine(path, "scheduler_config.json");
            var nested = Path.Combine(path, "scheduler", "scheduler_config.json");
            if (!File.Exists(file) && File.Exists(nested)) file = nested;
        }
        if (!File.Exists(file)) throw new FileNotFoundException($"scheduler config not found: {file}", file);
        JsonObject json;
        try { json = JsonNode.Parse(File.ReadAllText(file)) as JsonObject ?? throw new InvalidDataException($"{file}: not a JSON object"); }
        catch (JsonException e) { throw new InvalidDataException($"{file}: invalid JSON: {e.Message}"); }
        return FromJson(json, className, file);
    }

    /// <summary>A config from its JSON keys over the defaults of <paramref name="className"/> (else the JSON's
    /// <c>_class_name</c>).</summary>
    public static SchedulerConfig FromJson(JsonObject json, string? className = null, string source = "scheduler config")
    {
        var name = className ?? (json["_class_name"] as JsonValue)?.GetValue<string>()
            ?? throw new InvalidDataException($"{source}: no _class_name; name the scheduler class to build");
        var merged = JsonSerializer.SerializeToNode(DefaultsFor(name), ModelConfig.Json)!.AsObject();
        foreach (var (key, value) in json) merged[key] = value?.DeepClone();
        merged["_class_name"] = name;
        try
        {
            return merged.Deserialize<SchedulerConfig>(ModelConfig.Json)! with { Source = source };
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{source}: invalid value{(e is JsonException j ? " at " + j.Path : "")}: {e.Message}");
        }
    }

    /// <summary>Throws naming the source, the field, its value and the allowed values unless the value is allowed.</summary>
    public void Require(string field, string value, IReadOnlyList<string> allowed)
    {
        if (!allowed.Contains(value))
            throw new InvalidDataException($"{Source}: {field} '{value}' is not supported; expected one of: {string.Join(", ", allowed)}");
    }

    /// <summary>Throws for an option this port refuses rather than silently ignores.</summary>
    public void Refuse(string field, bool isSet, string why)
    {
        if (isSet) throw new NotSupportedException($"{Source}: {field} is not supported ({why})");
    }
}
