using System.Xml.Linq;

namespace HyperSd.Deploy.Tests;

/// <summary>docker/worker.Dockerfile: what the compose file and the manifests rely on is there.</summary>
public sealed class DockerfileTests
{
    public const string WorkerDockerfile = "docker/worker.Dockerfile";
    /// <summary>The image the worker Dockerfile builds; its tags are the Dockerfile's targets.</summary>
    public const string WorkerImage = "hypersd-worker";
    public static readonly string[] Variants = ["cpu", "cuda"];

    static readonly Dockerfile Worker = new(WorkerDockerfile);

    /// <summary>An image of the worker Dockerfile (hypersd-worker:cpu): its tag must be a target.</summary>
    internal static void AssertWorkerImage(string? image, string where)
    {
        Assert.True(image is not null && image.StartsWith(WorkerImage + ":", StringComparison.Ordinal),
            $"{where}: image {image} is not {WorkerImage}:<variant>");
        var tag = image[(WorkerImage.Length + 1)..];
        Assert.True(Variants.Contains(tag) && Worker.HasStage(tag), $"{where}: {image}: no target '{tag}' in {WorkerDockerfile}");
    }

    /// <summary>The worker environment a variant's image sets.</summary>
    internal static Dictionary<string, string> Environment(string variant) => Worker.Environment(variant);

    /// <summary>The probe program of the images (their HEALTHCHECK), which the manifests' probes call too.</summary>
    internal static string HealthProgram => Worker.ExecForm(Variants[0], "HEALTHCHECK")[0];

    /// <summary>Where the runtime image puts a folder of the build context (COPY recipes/ /app/recipes/).</summary>
    internal static string ContextPathOf(string variant, string imagePath)
    {
        foreach (var copy in Worker.Arguments(variant, "COPY").Where(c => !c.StartsWith("--from", StringComparison.Ordinal)))
        {
            var (source, target) = (copy.Split(' ')[0], copy.Split(' ')[^1]);
            if (imagePath.StartsWith(target, StringComparison.Ordinal)) return source + imagePath[target.Length..];
        }
        throw new KeyNotFoundException($"{WorkerDockerfile} ({variant}) copies nothing from the build context to {imagePath}");
    }

    [Fact]
    public void Each_variant_runs_hypersd_worker_as_a_non_root_user_with_a_health_check()
    {
        foreach (var variant in Variants)
        {
            Assert.Equal(["hypersd-worker"], Worker.ExecForm(variant, "ENTRYPOINT"));
            var user = Worker.Arguments(variant, "USER").First();
            Assert.True(user is not ("root" or "0") && !user.StartsWith("0:", StringComparison.Ordinal), $"{variant} runs as {user}");
            Assert.Equal(HealthProgram, Worker.ExecForm(variant, "HEALTHCHECK", "--")[0]);
            // more than one stage: the SDK builds, the runtime image runs
            Assert.True(Worker.Lineage(variant).Count() >= 2 && Worker.Stages.Any(s => s.From.Contains("/sdk:", StringComparison.Ordinal)));
        }
    }

    [Fact]
    public void The_health_probe_is_installed_on_the_path_and_reads_the_health_file_the_image_configures()
    {
        var install = Worker.Arguments(Variants[0], "COPY").Single(c => c.EndsWith("/" + HealthProgram, StringComparison.Ordinal));
        var script = install.Split(' ')[0];
        Assert.True(File.Exists(Repository.PathOf(script)), script);
        Assert.StartsWith("/usr/local/bin/", install.Split(' ')[^1]);
        var variable = WorkerConfiguration.Prefix + "HealthFile";
        Assert.Contains(variable, Repository.Read(script));
        Assert.Contains("HealthFile", WorkerConfiguration.Keys);
        foreach (var variant in Variants) Assert.True(Environment(variant).ContainsKey(variable), $"{variant} sets no {variable}");
    }

    [Fact]
    public void Every_worker_variable_the_images_set_is_a_setting_the_worker_reads_and_valid()
    {
        foreach (var variant in Variants)
        {
            var env = Environment(variant);
            WorkerConfiguration.AssertKnown(env.Keys, $"{WorkerDockerfile} ({variant})");
            var options = WorkerConfiguration.Options(env);
            Assert.StartsWith(variant == "cuda" ? "cuda" : "cpu", options.Devices[0]);
        }
    }

    [Fact]
    public void The_published_projects_are_the_programs_the_images_and_deployments_start()
    {
        var publish = Repository.Read("docker/publish.sh");
        Assert.Contains("docker/publish.sh", string.Join("\n", Worker.Arguments("publish-cpu", "RUN")));
        var names = new List<string>();
        foreach (var project in new[] { "src/HyperSd.WorkerHost/HyperSd.WorkerHost.csproj", "src/HyperSd.Cli/HyperSd.Cli.csproj" })
        {
            Assert.Contains(project, publish);
            names.Add(XDocument.Load(Repository.PathOf(project)).Descendants("AssemblyName").Single().Value);
        }
        Assert.Equal(["hypersd-worker", "hypersd"], names);
        Assert.Contains("/app", Worker.Environment(Variants[0])["PATH"]);
    }

    [Fact]
    public void What_the_build_copies_exists_and_is_not_excluded_by_dockerignore()
    {
        var ignored = Repository.Read(".dockerignore").Split('\n').Select(l => l.Trim())
            .Where(l => l.Length > 0 && !l.StartsWith('#')).Select(l => l.TrimEnd('/')).ToHashSet();
        var copies = Worker.Stages.SelectMany(s => s.Instructions)
            .Where(i => i.Keyword == "COPY" && !i.Arguments.StartsWith("--from", StringComparison.Ordinal));
        foreach (var copy in copies)
            foreach (var source in copy.Arguments.Split(' ')[..^1])
            {
                Assert.True(Path.Exists(Repository.PathOf(source)), $"COPY {source}: missing");
                Assert.DoesNotContain(source.TrimEnd('/').Split('/')[0], ignored);
            }
    }
}
