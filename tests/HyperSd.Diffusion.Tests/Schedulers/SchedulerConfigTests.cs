using System.Text.Json.Nodes;
using HyperSd.Diffusion.Schedulers;

namespace HyperSd.Diffusion.Tests.Schedulers;

public class SchedulerConfigTests : IDisposable
{
    readonly string dir = Directory.CreateTempSubdirectory("sched-").FullName;
    public void Dispose() => Directory.Delete(dir, true);

    // Stable Diffusion 1.5's scheduler/scheduler_config.json
    const string Sd15Config = """
        { "_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012, "beta_schedule": "scaled_linear",
          "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": false, "skip_prk_steps": true,
          "steps_offset": 1, "trained_betas": null, "clip_sample": false }
        """;

    string WriteConfig(string json, string sub = "scheduler")
    {
        var folder = Path.Combine(dir, sub);
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "scheduler_config.json"), json);
        return folder;
    }

    [Fact]
    public void Unknown_beta_schedule_fails_naming_the_field_the_value_and_the_allowed_values()
    {
        var folder = WriteConfig("""{ "_class_name": "DDIMScheduler", "beta_schedule": "cosine" }""");
        var e = Assert.Throws<InvalidDataException>(() => SchedulerFactory.FromPretrained(folder));
        Assert.Contains("beta_schedule 'cosine'", e.Message);
        Assert.Contains("linear, scaled_linear, squaredcos_cap_v2", e.Message);
        Assert.Contains(Path.Combine(folder, "scheduler_config.json"), e.Message);
    }

    [Theory]
    [InlineData("prediction_type", "x_prediction", "epsilon, sample, v_prediction")]
    [InlineData("timestep_spacing", "karras", "leading, trailing, linspace")]
    public void Unknown_string_options_fail_naming_the_allowed_values(string field, string value, string allowed)
    {
        var config = SchedulerConfig.FromJson(new JsonObject { [field] = value }, "TCDScheduler");
        var e = Assert.Throws<InvalidDataException>(() => new TCDScheduler(config));
        Assert.Contains($"{field} '{value}'", e.Message);
        Assert.Contains(allowed, e.Message);
    }

    [Fact]
    public void A_value_of_the_wrong_type_names_the_source_and_the_key()
    {
        var e = Assert.Throws<InvalidDataException>(() =>
            SchedulerConfig.FromJson(JsonNode.Parse("""{ "set_alpha_to_one": "maybe" }""")!.AsObject(), "DDIMScheduler", "my.json"));
        Assert.Contains("my.json", e.Message);
        Assert.Contains("set_alpha_to_one", e.Message);
    }

    [Fact]
    public void Each_class_gets_diffusers_own_defaults()
    {
        var ddim = SchedulerConfig.FromJson([], "DDIMScheduler");
        Assert.Equal((0.0001, 0.02, "linear", true, "leading"), (ddim.BetaStart, ddim.BetaEnd, ddim.BetaSchedule, ddim.ClipSample, ddim.TimestepSpacing));
        var tcd = SchedulerConfig.FromJson([], "TCDScheduler");
        Assert.Equal((0.00085, 0.012, "scaled_linear", false, 50, 10.0),
            (tcd.BetaStart, tcd.BetaEnd, tcd.BetaSchedule, tcd.ClipSample, tcd.OriginalInferenceSteps, tcd.TimestepScaling));
        Assert.Equal("linspace", SchedulerConfig.FromJson([], "EulerDiscreteScheduler").TimestepSpacing);
    }

    [Fact]
    public void A_pipeline_folder_builds_the_class_its_config_names()
    {
        WriteConfig("""{ "_class_name": "EulerDiscreteScheduler", "beta_schedule": "scaled_linear", "timestep_spacing": "trailing", "steps_offset": 1 }""");
        var scheduler = Assert.IsType<EulerDiscreteScheduler>(SchedulerFactory.FromPretrained(dir));
        Assert.Equal("trailing", scheduler.Config.TimestepSpacing);
        Assert.Equal("scaled_linear", scheduler.Config.BetaSchedule);
    }

    [Fact]
    public void An_unported_class_fails_listing_the_ported_ones_and_can_be_read_as_one_of_them()
    {
        var folder = WriteConfig(Sd15Config);
        var e = Assert.Throws<NotSupportedException>(() => SchedulerFactory.FromPretrained(folder));
        Assert.Contains("'PNDMScheduler'", e.Message);
        Assert.Contains("DDIMScheduler, TCDScheduler, LCMScheduler, EulerDiscreteScheduler", e.Message);

        // as diffusers' TCDScheduler.from_config(pipe.scheduler.config): the file's keys over TCD's defaults
        var tcd = Assert.IsType<TCDScheduler>(SchedulerFactory.FromPretrained(folder, "TCDScheduler"));
        Assert.Equal(("TCDScheduler", 1, false, 50), (tcd.Config.ClassName, tcd.Config.StepsOffset, tcd.Config.SetAlphaToOne, tcd.Config.OriginalInferenceSteps));
        Assert.Equal(tcd.AlphasCumprod[0].item<float>(), tcd.FinalAlphaCumprod.item<float>());
    }

    [Fact]
    public void Missing_config_names_the_path()
    {
        var e = Assert.Throws<FileNotFoundException>(() => SchedulerConfig.Read(dir));
        Assert.Contains(Path.Combine(dir, "scheduler_config.json"), e.Message);
    }

    [Fact]
    public void Trained_betas_of_the_wrong_length_fail_naming_both_counts()
    {
        var config = SchedulerConfig.FromJson(new JsonObject { ["num_train_timesteps"] = 4, ["trained_betas"] = new JsonArray(0.1, 0.2) }, "DDIMScheduler");
        var e = Assert.Throws<InvalidDataException>(() => new DDIMScheduler(config));
        Assert.Contains("trained_betas has 2 values but num_train_timesteps is 4", e.Message);
    }

    [Fact]
    public void Euler_refuses_sigma_schedules_it_does_not_port()
    {
        var config = SchedulerConfig.FromJson(new JsonObject { ["use_karras_sigmas"] = true }, "EulerDiscreteScheduler");
        var e = Assert.Throws<NotSupportedException>(() => new EulerDiscreteScheduler(config));
        Assert.Contains("use_karras_sigmas", e.Message);
    }
}
