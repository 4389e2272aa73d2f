namespace HyperSd.Diffusion.Schedulers;

/// <summary>Builds a sampler from a diffusers scheduler config, by its <c>_class_name</c> or by a class asked for.</summary>
public static class SchedulerFactory
{
    public static IReadOnlyList<string> Supported { get; } =
        [nameof(DDIMScheduler), nameof(TCDScheduler), nameof(LCMScheduler), nameof(EulerDiscreteScheduler)];

    /// <summary>The scheduler of a diffusers folder (see <see cref="SchedulerConfig.Read"/>). With
    /// <paramref name="className"/>, that scheduler from the folder's config, as diffusers'
    /// <c>TCDScheduler.from_config(pipe.scheduler.config)</c> does (e.g. for an SD folder whose config names PNDMScheduler).</summary>
    public static IScheduler FromPretrained(string path, string? className = null) =>
        FromConfig(SchedulerConfig.Read(path, className));

    public static IScheduler FromConfig(SchedulerConfig config) => config.ClassName switch
    {
        nameof(DDIMScheduler) => new DDIMScheduler(config),
        nameof(TCDScheduler) => new TCDScheduler(config),
        nameof(LCMScheduler) => new LCMScheduler(config),
        nameof(EulerDiscreteScheduler) => new EulerDiscreteScheduler(config),
        _ => throw new NotSupportedException(
            $"{config.Source}: _class_name '{config.ClassName}' is not a sampler of this port; expected one of: " +
            $"{string.Join(", ", Supported)} (name one to build it from this config)"),
    };
}
