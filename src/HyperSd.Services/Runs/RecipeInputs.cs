using System.Security.Cryptography;
using HyperSd.Data.Artifacts;
using HyperSd.Distillation.Data;
using HyperSd.Recipes;
using HyperSd.Services.Jobs;

namespace HyperSd.Services.Runs;

/// <summary>A file read at submission and kept in the artifact store under its sha256: the run reads this copy, so what it
/// uses is what was submitted, whatever happens to the original.</summary>
public sealed record StoredInput(string Path, string Sha256)
{
    /// <summary>The copy's prompts (its non-blank lines), after its sha256 is checked.</summary>
    public async Task<IReadOnlyList<string>> ReadPromptsAsync(IArtifactStore store, CancellationToken ct)
    {
        await store.VerifyAsync(Path, Sha256, ct);
        return RecipeMapping.PromptLines(PromptFiles.Decode(await File.ReadAllBytesAsync(store.GetFullPath(Path), ct), Path));
    }
}

/// <summary>
/// The files a recipe names, checked at submission before anything is read whole or stored: every path under its root
/// (<see cref="InputRoots"/>), no link out of it, files regular and within their size limit, a dataset manifest's
/// entries inside the manifest's folder. Model, reward-model and dataset paths become their real paths; prompts files are
/// read once and stored (<see cref="SaveAsync"/>) with the run, whose stages read the stored copies.
/// </summary>
public sealed class RecipeInputs
{
    readonly Dictionary<string, (StoredInput Input, byte[] Bytes)> files = [];

    /// <summary>The recipe with its model, reward-model and dataset paths resolved (absolute, no links).</summary>
    public Recipe Recipe { get; private set; }

    RecipeInputs(Recipe recipe) => Recipe = recipe;

    /// <summary>Checks and resolves every path of <paramref name="recipe"/>; throws <see cref="RecipeValidationException"/>
    /// naming <paramref name="sourceName"/> and each field at fault.</summary>
    public static RecipeInputs Resolve(Recipe recipe, InputRoots roots, string sourceName)
    {
        var problems = new List<RecipeProblem>();
        string? Check(string? path, Func<string, string> resolve)
        {
            try
            {
                return path is null ? null : resolve(path);
            }
            catch (InputPathException e)
            {
                problems.Add(new(e.Field, e.Problem));
                return null;
            }
        }

        var inputs = new RecipeInputs(recipe);
        var model = recipe.Model with
        {
            Path = Check(recipe.Model.Path, p => roots.Model(p, "model.path")),
            Tokenizer = Check(recipe.Model.Tokenizer, p => roots.Model(p, "model.tokenizer")),
        };
        // the reward models' files are read by the stages that train on them, hours in: a missing one is named now
        var rewards = recipe.Rewards?.Resolve((path, field) => Check(path, p => roots.Model(p, $"rewards.{field}")));
        var dataset = recipe.Dataset with { Path = Check(recipe.Dataset.Path, p => Dataset(recipe.Dataset.Source, p, roots)) };
        Check(recipe.Evaluation.PromptsFile, p => inputs.Pin("evaluation.prompts_file", p, roots));
        Check(recipe.Generation?.PromptsFile, p => inputs.Pin("generation.prompts_file", p, roots));
        if (problems.Count > 0) throw new RecipeValidationException(sourceName, problems);
        inputs.Recipe = recipe with { Model = model, Dataset = dataset, Rewards = rewards };
        return inputs;
    }

    /// <summary>A folder of images, or a manifest whose entries are read here to refuse any that leaves its folder.</summary>
    static string Dataset(DatasetSource source, string path, InputRoots roots)
    {
        if (source is not (DatasetSource.Jsonl or DatasetSource.Csv)) return roots.Data(path, "dataset.path");
        var manifest = roots.DataFile(path, "dataset.path", roots.MaxManifestBytes);
        try
        {
            _ = source == DatasetSource.Jsonl ? new JsonlManifestSource(manifest) : (IImageCaptionSource)new CsvManifestSource(manifest);
        }
        catch (InvalidDataException e)
        {
            throw new InputPathException("dataset.path", e.Message);
        }
        return manifest;
    }

    /// <summary>Reads a prompts file (bounded) and keeps its bytes under their sha256 until <see cref="SaveAsync"/>.</summary>
    string Pin(string field, string path, InputRoots roots)
    {
        var bytes = roots.ReadDataFile(path, field, roots.MaxPromptsFileBytes);
        try
        {
            if (RecipeMapping.PromptLines(PromptFiles.Decode(bytes, path)).Count == 0)
                throw new InputPathException(field, $"'{path}' has no prompts (only blank lines)");
        }
        catch (PromptFileException e)
        {
            throw new InputPathException(field, e.Message);
        }
        var sha256 = Convert.ToHexStringLower(SHA256.HashData(bytes));
        // named by content alone: nothing of the submitter's file name reaches the store's paths
        files[field] = (new StoredInput($"inputs/{sha256}.txt", sha256), bytes);
        return path;
    }

    /// <summary>The stored copy of the prompts file that <paramref name="field"/> names; null if it names none.</summary>
    public StoredInput? Stored(string field) => files.TryGetValue(field, out var file) ? file.Input : null;

    /// <summary>Writes the prompts files into the store (content-addressed: the same file again is a no-op, a different one
    /// at its path an error). Called when the run is stored, never when a recipe is only checked.</summary>
    public async Task SaveAsync(IArtifactStore store, CancellationToken ct = default)
    {
        foreach (var (input, bytes) in files.Values)
        {
            var temp = Path.Combine(Path.GetTempPath(), $"hypersd-input-{Guid.NewGuid():N}");
            try
            {
                await File.WriteAllBytesAsync(temp, bytes, ct);
                await store.ImportAsync(temp, input.Path, ct);
            }
            finally
            {
                File.Delete(temp);
            }
        }
    }
}
