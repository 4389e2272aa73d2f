using System.Security.Cryptography;
using HyperSd.Data.Artifacts;
using HyperSd.Recipes;
using HyperSd.Services.Generator;
using HyperSd.Services.Hosting;
using HyperSd.Services.Jobs;
using HyperSd.Services.Runs;
using HyperSd.Services.Stages;
using HyperSd.Testing;

namespace HyperSd.Services.Tests;

/// <summary>The files a recipe or a job names: under their roots, regular, bounded, read once at submission; a recipe's
/// prompts file is stored with the run, which reads the stored copy. (Refusals through the API: BadInputTests.)</summary>
public sealed class RecipeInputsTests : IDisposable
{
    readonly TestStore store = new();
    string Data => Path.Combine(store.Root, "data");

    public RecipeInputsTests() => Directory.CreateDirectory(Data);

    public void Dispose() => store.Dispose();

    WorkerOptions Options(string? dataRoot = null) =>
        store.WorkerOptions(o => o.Inputs = new InputRoots { DataRoot = dataRoot ?? Data, ModelsRoot = store.Root });

    static string WithPromptsFile(string path) =>
        TinyToy.Recipe().Replace("prompts: [\"a red circle in the center\", \"a blue square at the top left\"]", $"prompts_file: {path}");

    string Write(string name, string text)
    {
        var path = Path.Combine(Data, name);
        File.WriteAllText(path, text);
        return path;
    }

    RecipeValidationException Refused(string yaml, WorkerOptions options) =>
        Assert.Throws<RecipeValidationException>(() => RunSubmission.Plan(StageCatalogue.Default(), yaml, "r.yaml", options));

    [Fact]
    public async Task A_prompts_file_is_stored_at_submission_and_the_run_reads_the_stored_copy()
    {
        var original = Write("p.txt", "a red circle\n\n  a blue square \n");
        var options = Options();
        // relative: under the data root
        var planned = RunSubmission.Plan(StageCatalogue.Default(), WithPromptsFile("p.txt"), "r.yaml", options);
        Assert.False(store.Artifacts.Exists("inputs"), "planning alone stores nothing");
        await RunSubmission.StoreAsync(store, store.Artifacts, planned);

        var stage = planned.Run.Stages.Single(s => s.Name == GenerateImagesStage.StageName);
        var settings = (GenerationSettings)StageCatalogue.Default().ReadSettings(stage);
        Assert.Null(settings.Prompts);
        var sha256 = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(original)));
        Assert.Equal(new StoredInput($"inputs/{sha256}.txt", sha256), settings.PromptsFile);

        // the original changes, then goes: the run still reads what was submitted
        File.WriteAllText(original, "something else\n");
        File.Delete(original);
        Assert.Equal(["a red circle", "a blue square"], await settings.PromptsFile!.ReadPromptsAsync(store.Artifacts, default));

        // a stored copy that changed is never used
        File.WriteAllText(store.Artifacts.GetFullPath(settings.PromptsFile.Path), "tampered\n");
        await Assert.ThrowsAsync<ArtifactCorruptException>(() => settings.PromptsFile.ReadPromptsAsync(store.Artifacts, default));
    }

    [Fact]
    public void A_device_inside_the_data_root_is_refused_as_not_a_regular_file()
    {
        var e = Refused(WithPromptsFile("zero"), Options(dataRoot: "/dev"));
        Assert.Equal([new("generation.prompts_file", "'zero' is not a regular file (a device, pipe or folder?)")], e.Problems);
    }

    [Fact]
    public void A_link_inside_the_root_is_followed_and_every_problem_of_a_recipe_is_named_together()
    {
        var target = Write("real.txt", "a cat\n");
        File.CreateSymbolicLink(Path.Combine(Data, "link.txt"), target);
        RunSubmission.Plan(StageCatalogue.Default(), WithPromptsFile("link.txt"), "r.yaml", Options());

        Write("blank.txt", "\n  \n");
        var e = Refused(WithPromptsFile("blank.txt").Replace("  prompts: 6", "  prompts_file: ../../x.txt"), Options());
        Assert.Equal(["evaluation.prompts_file", "generation.prompts_file"], e.Problems.Select(p => p.Field));
        Assert.Contains("'../../x.txt' is outside the data root", e.Problems[0].Message);
        Assert.Equal("'blank.txt' has no prompts (only blank lines)", e.Problems[1].Message);
    }

    /// <summary>The reward models' files are read by the stages that train on them, hours into a run: each is checked here.</summary>
    [Fact]
    public void A_recipes_reward_model_files_are_checked_at_submission_under_the_models_root()
    {
        var clip = Directory.CreateDirectory(Path.Combine(store.Root, "clip")).FullName;
        string WithRewards(string files) => TinyToy.Recipe().Replace(TinyToy.RewardsSection, $"rewards: {{{files}}}");
        var e = Refused(WithRewards("clip: clip, aesthetic_predictor: /etc/passwd, pickscore: no-such-pickscore"), Options());
        Assert.Equal(["rewards.aesthetic_predictor", "rewards.pickscore"], e.Problems.Select(p => p.Field));
        Assert.StartsWith("'/etc/passwd' is outside the models root", e.Problems[0].Message);
        Assert.Equal("no such file or folder: 'no-such-pickscore' (under the models root)", e.Problems[1].Message);

        var planned = RunSubmission.Plan(StageCatalogue.Default(), WithRewards("clip: clip"), "r.yaml", Options());
        Assert.Equal(clip, planned.Inputs.Recipe.Rewards!.Clip);
    }

    [Fact]
    public void A_jobs_prompts_file_and_model_paths_go_through_the_same_roots_and_limits()
    {
        using (var f = File.Create(Path.Combine(Data, "huge.txt"))) f.SetLength(1L << 30); // 1 GB, sparse
        var roots = new InputRoots { DataRoot = Data, ModelsRoot = Data };
        Assert.Equal("--prompts-file: 'huge.txt' is 1,073,741,824 bytes; at most 4,194,304 are read",
            Assert.Throws<InputPathException>(() => PromptFiles.Read("huge.txt", roots)).Message);
        Assert.Contains("is outside the data root",
            Assert.Throws<InputPathException>(() => PromptFiles.Read("/etc/hostname", roots)).Message);

        var spec = new GenerationJobSpec
        {
            Model = store.Root, Prompts = [new("a")], Loras = [new("/etc/passwd")], Width = 32, Height = 32,
        };
        var problems = Assert.Throws<JobValidationException>(() => GenerationJobPlanner.Plan(spec, new GenerationLimits(), roots)).Problems;
        Assert.Contains(problems, p => p.Where == "model" && p.Message.Contains("is outside the models root"));
        Assert.Contains(problems, p => p.Where == "loras[0]" && p.Message.StartsWith("'/etc/passwd' is outside the models root"));
        Assert.Equal(2, problems.Count);
    }
}
