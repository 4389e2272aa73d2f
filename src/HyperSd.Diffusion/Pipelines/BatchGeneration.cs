using HyperSd.Diffusion.Images;

namespace HyperSd.Diffusion.Pipelines;

/// <summary>One image of a batch generation: its file name, prompt and seed.</summary>
public sealed record GenerationItem(string File, string Prompt, long Seed);

/// <summary>
/// Many prompts to PNG files in one folder, a batch per forward pass, each PNG carrying the parameters that reproduce
/// it. With <c>resume</c>, files already there are kept and not made again, so an interrupted generation continues where
/// it stopped (<see cref="ImageFiles.SavePng"/> writes aside and renames, so a file under its final name is whole).
/// </summary>
public static class BatchGeneration
{
    /// <param name="generate">The pipeline's Generate (SD1.5 or SDXL).</param>
    /// <param name="settings">Steps, guidance, eta, size and model id for every image; its prompts and seeds are ignored.</param>
    /// <param name="resume">Keep the jobs' files already in <paramref name="dir"/>; otherwise every file is made anew.</param>
    /// <param name="progress">Images done after each batch, of the jobs' count.</param>
    public static void Run(Func<GenerationRequest, GenerationResult> generate, IReadOnlyList<GenerationItem> jobs, string dir,
        GenerationRequest settings, int batchSize, bool resume, string negativePrompt = "", Action<int>? progress = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var names = jobs.Select(j => j.File).ToList();
        if (names.Distinct().Count() != names.Count) throw new ArgumentException("two generation jobs write the same file");
        Directory.CreateDirectory(dir);
        foreach (var stale in Directory.EnumerateFiles(dir, "*.png.tmp")) File.Delete(stale);
        var todo = resume ? jobs.Where(j => !File.Exists(Path.Combine(dir, j.File))).ToList() : jobs.ToList();
        int done = jobs.Count - todo.Count;
        progress?.Invoke(done);
        foreach (var batch in todo.Chunk(batchSize))
        {
            cancellationToken.ThrowIfCancellationRequested();
            using var result = generate(settings with
            {
                Prompts = batch.Select(j => j.Prompt).ToList(), Seeds = batch.Select(j => j.Seed).ToList(),
                NegativePrompts = batch.Select(_ => negativePrompt).ToList(),
            });
            for (int i = 0; i < batch.Length; i++)
                ImageFiles.SavePng(result.Images[i], Path.Combine(dir, batch[i].File), result.Parameters[i].ToPngText());
            done += batch.Length;
            progress?.Invoke(done);
        }
    }
}
