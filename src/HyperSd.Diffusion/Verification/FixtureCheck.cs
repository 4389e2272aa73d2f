using System.Reflection;
using System.Text.Json.Nodes;
using TorchSharp;
using static TorchSharp.torch;

namespace HyperSd.Diffusion.Verification;

/// <summary>One comparison against a reference: its name, the largest error seen and whether it is within tolerance.</summary>
public sealed record FixtureCheck(string Name, double MaxError, string Tolerance, bool Passed, string? Detail = null)
{
    public override string ToString() =>
        $"{(Passed ? "PASS" : "FAIL")}  {Name,-48} max error {MaxError:E3}  ({Tolerance}){(Detail is null ? "" : "  " + Detail)}";

    /// <summary>Compares element-wise as torch.allclose does: |a − b| ≤ atol + rtol·|b|.</summary>
    public static FixtureCheck Compare(string name, Tensor actual, Tensor expected, double atol, double rtol)
    {
        using var scope = NewDisposeScope();
        if (!actual.shape.SequenceEqual(expected.shape))
            return new(name, double.PositiveInfinity, $"atol {atol:G3}, rtol {rtol:G3}", false,
                $"shape [{string.Join(", ", actual.shape)}] vs expected [{string.Join(", ", expected.shape)}]");
        var a = actual.detach().cpu().to(float64);
        var b = expected.detach().cpu().to(float64);
        var diff = (a - b).abs();
        double max = diff.numel() == 0 ? 0 : diff.max().item<double>();
        bool ok = (diff <= atol + rtol * b.abs()).all().item<bool>() && !double.IsNaN(max);
        return new(name, max, $"atol {atol:G3}, rtol {rtol:G3}", ok);
    }

    /// <summary>An exact comparison of sequences (token ids, key lists, counts).</summary>
    public static FixtureCheck Exact<T>(string name, IEnumerable<T> actual, IEnumerable<T> expected, string? detail = null)
    {
        var a = actual.ToList(); var e = expected.ToList();
        int mismatches = Math.Abs(a.Count - e.Count) + a.Zip(e).Count(p => !EqualityComparer<T>.Default.Equals(p.First, p.Second));
        return new(name, mismatches, "exact", mismatches == 0,
            mismatches == 0 ? detail : $"{mismatches} mismatch(es){(detail is null ? "" : "; " + detail)}");
    }
}

/// <summary>Checks one fixture folder (e.g. <c>unet_sd15</c>) laid out like ../shared/fixtures.</summary>
public interface IFixtureSuite
{
    /// <summary>The folder name this suite checks.</summary>
    string Folder { get; }
    IEnumerable<FixtureCheck> Run(string folder);
}

/// <summary>Runs every suite whose folder is present in a fixtures directory.</summary>
public static class FixtureVerifier
{
    public static IReadOnlyList<IFixtureSuite> Suites { get; } = typeof(IFixtureSuite).Assembly.GetTypes()
        .Where(t => typeof(IFixtureSuite).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false })
        .Select(t => (IFixtureSuite)Activator.CreateInstance(t)!)
        .OrderBy(s => s.Folder, StringComparer.Ordinal).ThenBy(s => s.GetType().Name, StringComparer.Ordinal).ToList();

    /// <summary>The suites checking one folder (several may share one, e.g. <c>layouts</c>).</summary>
    public static IReadOnlyList<IFixtureSuite> SuitesFor(string folder) =>
        Suites.Where(s => s.Folder == folder).ToList() is { Count: > 0 } found
            ? found : throw new ArgumentException($"no fixture suite for folder '{folder}'");

    public static IEnumerable<FixtureCheck> RunAll(string fixturesDir)
    {
        if (!Directory.Exists(fixturesDir)) throw new DirectoryNotFoundException($"fixtures directory not found: {fixturesDir}");
        foreach (var suite in Suites)
        {
            var dir = Path.Combine(fixturesDir, suite.Folder);
            if (!Directory.Exists(dir)) continue;
            IEnumerator<FixtureCheck> checks;
            try { checks = suite.Run(dir).GetEnumerator(); }
            catch (Exception e) { checks = Failed(suite.Folder, e); }
            while (true)
            {
                FixtureCheck check;
                Exception? error = null;
                try
                {
                    if (!checks.MoveNext()) break;
                    check = checks.Current with { Name = $"{suite.Folder}/{checks.Current.Name}" };
                }
                catch (Exception e)
                {
                    error = e;
                    check = new FixtureCheck(suite.Folder, double.NaN, "-", false, $"error: {e.Message}");
                }
                yield return check;
                if (error != null) break;
            }
        }
    }

    static IEnumerator<FixtureCheck> Failed(string folder, Exception e)
    {
        yield return new FixtureCheck(folder, double.NaN, "-", false, $"error: {e.Message}");
    }
}

/// <summary>A fixture folder: its fixture.json and tensors.</summary>
public sealed class FixtureFolder(string dir)
{
    public string Dir { get; } = dir;
    public JsonObject Json { get; } = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "fixture.json")))!.AsObject();
    public double Atol => Json["atol"]?.GetValue<double>() ?? 1e-4;
    public double Rtol => Json["rtol"]?.GetValue<double>() ?? 1e-3;
    public Dictionary<string, Tensor> Io(string file = "io.safetensors") => IO.SafeTensors.Load(Path.Combine(Dir, file));
}
