using HyperSd.Contracts;
using HyperSd.Data;
using HyperSd.Services.Hosting;
using HyperSd.Services.Stages;
using Npgsql;

namespace HyperSd.Deploy.Tests;

/// <summary>docker-compose.yml against the code and the Dockerfile: roles, images, settings, addresses, secrets.</summary>
public sealed class ComposeTests
{
    const string Gpu = "gpu", Cpu = "cpu";
    static readonly ComposeFile Compose = new();
    static readonly IReadOnlyList<string> Roles = StageCatalogue.Default().Roles;

    /// <summary>The services that run hypersd-worker (the image's entry point, not overridden), by name.</summary>
    static Dictionary<string, object?> Workers => Compose.Services
        .Where(s => s.Value.StringAt("image")?.StartsWith(DockerfileTests.WorkerImage, StringComparison.Ordinal) == true
                    && s.Value.At("entrypoint") is null)
        .ToDictionary();

    static List<string> RolesOf(object? service) =>
        [.. (ComposeFile.Environment(service).GetValueOrDefault("HyperSd__Roles") ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries)];

    /// <summary>What a service's container sees: the image's environment under the service's.</summary>
    static Dictionary<string, string> EffectiveEnvironment(object? service)
    {
        var variant = service.StringAt("image")!.Split(':')[1];
        var env = DockerfileTests.Environment(variant);
        foreach (var (key, value) in ComposeFile.Environment(service)) env[key] = value;
        return env;
    }

    [Theory]
    [InlineData(Cpu)]
    [InlineData(Gpu)]
    public void Every_role_is_served_in_each_profile(string profile)
    {
        var served = Workers.Where(w => ComposeFile.Profiles(w.Value) is var p && (p.Count == 0 || p.Contains(profile)))
            .SelectMany(w => RolesOf(w.Value)).ToList();
        Assert.Equal(Roles.Order(), served.Distinct().Order());
        Assert.Equal(served.Count, served.Distinct().Count()); // each role once: one queue, one kind of worker
    }

    [Fact]
    public void Gpu_workers_serve_one_role_each_on_a_reserved_gpu_with_the_cuda_image()
    {
        var gpuWorkers = Workers.Where(w => ComposeFile.Profiles(w.Value).Contains(Gpu)).ToList();
        Assert.Equal(Roles.Where(r => r != Contracts.Roles.Orchestrator).Order(), gpuWorkers.Select(w => w.Key).Order());
        foreach (var (name, service) in gpuWorkers)
        {
            Assert.Equal([name], RolesOf(service));
            Assert.Equal("hypersd-worker:cuda", service.StringAt("image"));
            var device = Assert.Single(service.ListAt("deploy", "resources", "reservations", "devices"));
            Assert.Contains("gpu", device.ListAt("capabilities").Cast<string>());
            Assert.StartsWith("cuda", EffectiveEnvironment(service)["HyperSd__Devices"]);
        }
    }

    [Fact]
    public void Images_are_the_Dockerfile_targets_they_build()
    {
        foreach (var (name, service) in Compose.Services.Where(s => s.Value.At("build") is not null))
        {
            DockerfileTests.AssertWorkerImage(service.StringAt("image"), $"{ComposeFile.FileName} service {name}");
            Assert.Equal(DockerfileTests.WorkerDockerfile, service.StringAt("build", "dockerfile"));
            Assert.Equal(service.StringAt("image")!.Split(':')[1], service.StringAt("build", "target"));
        }
    }

    [Fact]
    public void Every_worker_setting_is_one_the_worker_reads_and_every_process_gets_the_same_deployment()
    {
        var rabbitmq = Compose.Services["rabbitmq"];
        var postgres = Compose.Services["postgres"];
        var processes = Compose.Services
            .Where(s => s.Value.StringAt("image")?.StartsWith(DockerfileTests.WorkerImage, StringComparison.Ordinal) == true);
        foreach (var (name, service) in processes)
        {
            var env = EffectiveEnvironment(service);
            WorkerConfiguration.AssertKnown(env.Keys, $"{ComposeFile.FileName} service {name}");
            var options = WorkerConfiguration.Options(env); // validates roles, transport, devices and the address
            Assert.Equal(WorkerOptions.RabbitMqTransport, options.Transport);
            Assert.True(options.RabbitMq.Quorum, $"{name}: the broker address must ask for quorum queues");
            Assert.Equal("rabbitmq", options.RabbitMq.Host);
            Assert.Contains(options.RabbitMq.Port, ComposeFile.ContainerPorts(rabbitmq));
            var server = ComposeFile.Environment(rabbitmq);
            Assert.Equal((server["RABBITMQ_DEFAULT_USER"], server["RABBITMQ_DEFAULT_PASS"], server["RABBITMQ_DEFAULT_VHOST"]),
                (options.RabbitMq.Username, options.RabbitMq.Password, options.RabbitMq.VirtualHost));

            Assert.Equal(MetadataStoreOptions.Postgres, options.Store.Provider);
            var store = new NpgsqlConnectionStringBuilder(options.Store.ConnectionString);
            var database = ComposeFile.Environment(postgres);
            Assert.Equal(("postgres", database["POSTGRES_USER"], database["POSTGRES_PASSWORD"], database["POSTGRES_DB"]),
                (store.Host, store.Username, store.Password, store.Database));
            Assert.Contains(store.Port, ComposeFile.ContainerPorts(postgres));
            Assert.Equal(DockerfileTests.Environment("cpu")["HyperSd__ArtifactRoot"], options.ArtifactRoot);
        }
        var artifacts = $"artifacts:{DockerfileTests.Environment("cpu")["HyperSd__ArtifactRoot"]}";
        foreach (var (name, service) in Workers)
            Assert.True(service.ListAt("volumes").Cast<string>().Contains(artifacts), $"{name} does not mount {artifacts}");
    }

    [Fact]
    public void Only_the_orchestrator_migrates_the_store()
    {
        foreach (var (name, service) in Workers)
            Assert.Equal(RolesOf(service).Contains(Contracts.Roles.Orchestrator),
                WorkerConfiguration.Options(EffectiveEnvironment(service)).MigrateOnStart);
    }

    [Fact]
    public void Secrets_come_from_the_env_file_not_from_the_compose_file()
    {
        Assert.Equal(["POSTGRES_PASSWORD", "RABBITMQ_PASSWORD"], Compose.Required.Order());
        var example = Repository.Read(".env.example");
        foreach (var secret in Compose.Required) Assert.Matches($"(?m)^{secret}=$", example); // listed, with no value
        Assert.Contains(".env", Repository.Read(".gitignore").Split('\n'));
    }

    [Fact]
    public void The_cpu_profile_submits_a_recipe_the_image_holds()
    {
        var toy = Compose.Services["toy-run"];
        Assert.Contains(Cpu, ComposeFile.Profiles(toy));
        Assert.Equal(["hypersd"], toy.ListAt("entrypoint").Cast<string>());
        var command = toy.ListAt("command").Cast<string>().ToList();
        Assert.Equal(["runs", "submit"], command[..2]);
        Assert.True(File.Exists(Repository.PathOf(DockerfileTests.ContextPathOf("cpu", command[2]))), command[2]);
    }

    [Fact]
    public void Named_volumes_are_declared()
    {
        var declared = Compose.Root.MapAt("volumes").Keys.Cast<string>().ToHashSet();
        foreach (var (name, service) in Compose.Services)
            foreach (var volume in service.ListAt("volumes").Cast<string>().Select(v => v.Split(':')[0]).Where(v => !v.Contains('/')))
                Assert.True(declared.Contains(volume), $"{name}: volume {volume} is not declared");
    }
}
