using HyperSd.Data;
using HyperSd.Data.Entities;
using HyperSd.Services.Hosting;
using HyperSd.Services.Stages;
using k8s.Models;
using Microsoft.EntityFrameworkCore;
using Npgsql;

namespace HyperSd.Deploy.Tests;

/// <summary>k8s/ (kustomize base and the cpu and gpu overlays) against the code, the Dockerfile and the compose file.</summary>
public sealed class KubernetesTests
{
    public static readonly TheoryData<string> Overlays = new("k8s/overlays/cpu", "k8s/overlays/gpu");
    static readonly IReadOnlyList<string> Roles = StageCatalogue.Default().Roles;

    static List<WorkerDeployment> Workers(Kustomization k) =>
        [.. k.OfKind<V1Deployment>().Select(d => new WorkerDeployment(d, k))];

    static V1Service Service(Kustomization k, string name) => k.OfKind<V1Service>().Single(s => s.Metadata.Name == name);

    static V1Container Container(Kustomization k, string statefulSet) =>
        k.OfKind<V1StatefulSet>().Single(s => s.Metadata.Name == statefulSet).Spec.Template.Spec.Containers.Single();

    static string EnvOf(V1Container container, string name) => container.Env.Single(e => e.Name == name).Value;

    [Theory]
    [MemberData(nameof(Overlays))]
    public void Every_role_has_a_deployment_named_after_it(string overlay)
    {
        var workers = Workers(new Kustomization(overlay));
        Assert.All(workers, w => Assert.Equal([w.Name], w.Roles));
        Assert.Equal(Roles.Order(), workers.Select(w => w.Name).Order());
    }

    [Theory]
    [MemberData(nameof(Overlays))]
    public void Every_worker_setting_is_one_the_worker_reads_and_points_at_the_deployments_broker_and_store(string overlay)
    {
        var k = new Kustomization(overlay);
        var rabbitmq = Container(k, "rabbitmq");
        var postgres = Container(k, "postgres");
        foreach (var worker in Workers(k))
        {
            WorkerConfiguration.AssertKnown(worker.Environment.Keys, $"{overlay}: {worker.Name}");
            var options = WorkerConfiguration.Options(worker.Environment);
            Assert.True(options.RabbitMq.Quorum, $"{worker.Name}: the broker address must ask for quorum queues");
            // rabbitmq.<namespace>.svc...: the Service, in the kustomization's namespace
            Assert.Equal(["rabbitmq", k.Namespace!], options.RabbitMq.Host.Split('.')[..2]);
            Assert.Contains(Service(k, "rabbitmq").Spec.Ports, p => p.Name == "amqp" && p.Port == options.RabbitMq.Port);
            Assert.Equal((EnvOf(rabbitmq, "RABBITMQ_DEFAULT_USER"), EnvOf(rabbitmq, "RABBITMQ_DEFAULT_VHOST")),
                (options.RabbitMq.Username, options.RabbitMq.VirtualHost));
            Assert.Equal(MetadataStoreOptions.Postgres, options.Store.Provider);
            var store = new NpgsqlConnectionStringBuilder(options.Store.ConnectionString);
            Assert.Equal("postgres", store.Host);
            Assert.Contains(Service(k, "postgres").Spec.Ports, p => p.Port == store.Port);
            Assert.Equal((EnvOf(postgres, "POSTGRES_USER"), EnvOf(postgres, "POSTGRES_DB")), (store.Username, store.Database));
            Assert.Equal(options.Serves(Contracts.Roles.Orchestrator), options.MigrateOnStart); // one migrator
        }
    }

    [Theory]
    [MemberData(nameof(Overlays))]
    public void Secrets_are_generated_from_an_uncommitted_env_file_and_every_reference_names_a_key_of_it(string overlay)
    {
        var k = new Kustomization(overlay);
        var references = Workers(k).SelectMany(w => w.SecretKeys)
            .Concat(k.OfKind<V1StatefulSet>().SelectMany(s => s.Spec.Template.Spec.Containers).SelectMany(c => c.Env)
                .Where(e => e.ValueFrom?.SecretKeyRef is not null)
                .Select(e => (e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)))
            .Concat(k.CustomOfKind("TriggerAuthentication").SelectMany(t => t.ListAt("spec", "secretTargetRef"))
                .Select(r => (r.StringAt("name")!, r.StringAt("key")!)))
            .ToList();
        Assert.NotEmpty(references);
        foreach (var (secret, key) in references)
            Assert.True(k.Secrets.GetValueOrDefault(secret)?.ContainsKey(key) == true, $"{overlay}: Secret {secret} has no key {key}");
        Assert.Contains("k8s/**/secrets.env", Repository.Read(".gitignore").Split('\n'));
        Assert.Empty(k.OfKind<V1Secret>()); // none committed
    }

    [Fact]
    public void Worker_images_are_Dockerfile_targets_cuda_for_the_gpu_overlays_stage_workers_and_the_rest_as_compose_runs_them()
    {
        foreach (var overlay in new[] { "k8s/overlays/cpu", "k8s/overlays/gpu" })
            foreach (var worker in Workers(new Kustomization(overlay)))
            {
                DockerfileTests.AssertWorkerImage(worker.Worker.Image, $"{overlay}: {worker.Name}");
                var cuda = overlay.EndsWith("gpu", StringComparison.Ordinal) && worker.Name != Contracts.Roles.Orchestrator;
                Assert.Equal(cuda ? "hypersd-worker:cuda" : "hypersd-worker:cpu", worker.Worker.Image);
            }
        var compose = new ComposeFile().Services;
        foreach (var statefulSet in new Kustomization("k8s/base").OfKind<V1StatefulSet>())
            Assert.Equal(compose[statefulSet.Metadata.Name].StringAt("image"), statefulSet.Spec.Template.Spec.Containers.Single().Image);
    }

    [Theory]
    [MemberData(nameof(Overlays))]
    public void Workers_are_probed_with_the_images_health_check_mount_the_shared_artifacts_and_request_resources(string overlay)
    {
        var k = new Kustomization(overlay);
        var claims = k.OfKind<V1PersistentVolumeClaim>().ToDictionary(c => c.Metadata.Name);
        foreach (var worker in Workers(k))
        {
            foreach (var probe in new[] { worker.Worker.StartupProbe, worker.Worker.LivenessProbe, worker.Worker.ReadinessProbe })
                Assert.Equal(DockerfileTests.HealthProgram, probe?.Exec.Command[0]);
            var root = worker.Environment["HyperSd__ArtifactRoot"];
            var mount = worker.Worker.VolumeMounts.Single(m => m.MountPath == root);
            var claim = worker.Pod.Volumes.Single(v => v.Name == mount.Name).PersistentVolumeClaim.ClaimName;
            Assert.Contains("ReadWriteMany", claims[claim].Spec.AccessModes);
            foreach (var volume in worker.Pod.Volumes.Where(v => v.PersistentVolumeClaim is not null))
                Assert.True(claims.ContainsKey(volume.PersistentVolumeClaim.ClaimName), $"{worker.Name}: no claim {volume.Name}");
            Assert.True(worker.Worker.Resources.Requests.ContainsKey("cpu") && worker.Worker.Resources.Requests.ContainsKey("memory"));
            Assert.True(worker.Pod.SecurityContext?.RunAsNonRoot, $"{worker.Name} may run as root");
        }
        Assert.Equal(DockerfileTests.Environment("cpu")["HyperSd__ArtifactRoot"], k.ConfigMaps["hypersd-worker"]["HyperSd__ArtifactRoot"]);
    }

    [Fact]
    public void Gpu_stage_workers_take_a_gpu_each_on_gpu_nodes()
    {
        foreach (var worker in Workers(new Kustomization("k8s/overlays/gpu")))
        {
            var gpu = worker.Worker.Resources.Limits.TryGetValue("nvidia.com/gpu", out var count) ? count.ToInt32() : 0;
            if (worker.Name == Contracts.Roles.Orchestrator)
            {
                Assert.Equal(0, gpu);
                continue;
            }
            Assert.Equal(1, gpu);
            Assert.NotEmpty(worker.Pod.NodeSelector);
            Assert.Contains(worker.Pod.Tolerations, t => t.Key == "nvidia.com/gpu");
            Assert.Equal(["cuda:0"], WorkerConfiguration.Options(worker.Environment).Devices);
        }
    }

    [Fact]
    public void Keda_scales_the_generator_and_the_trainer_on_their_queues_and_their_stages_in_flight()
    {
        var k = new Kustomization("k8s/overlays/gpu");
        var workers = Workers(k).ToDictionary(w => w.Name);
        var authentications = k.CustomOfKind("TriggerAuthentication").Select(t => t.StringAt("metadata", "name")).ToHashSet();
        var scaled = k.CustomOfKind("ScaledObject").ToDictionary(s => s.StringAt("spec", "scaleTargetRef", "name")!);
        Assert.Superset(new HashSet<string> { Contracts.Roles.Generator, Contracts.Roles.SegmentConsistency }, scaled.Keys.ToHashSet());

        using var db = MetadataStore.CreateContext(new MetadataStoreOptions
            { Provider = MetadataStoreOptions.Postgres, ConnectionString = "Host=model-only" });
        var stages = db.Model.FindEntityType(typeof(Stage))!;
        string Column(string property) => stages.FindProperty(property)!.GetColumnName();
        var query = $"SELECT count(*) FROM {stages.GetTableName()} WHERE {Column(nameof(Stage.Role))} = '{{0}}' " +
                    $"AND {Column(nameof(Stage.State))} IN ('{StageState.Dispatched}', '{StageState.Running}')";
        foreach (var (target, scaledObject) in scaled)
        {
            var role = Assert.Single(workers[target].Roles);
            var triggers = scaledObject.ListAt("spec", "triggers").ToDictionary(t => t.StringAt("type")!);
            Assert.Equal(role, triggers["rabbitmq"].StringAt("metadata", "queueName"));
            Assert.Equal(string.Format(System.Globalization.CultureInfo.InvariantCulture, query, role),
                triggers["postgresql"].StringAt("metadata", "query"));
            Assert.Equal($"postgres.{k.Namespace}.svc.cluster.local", triggers["postgresql"].StringAt("metadata", "host"));
            Assert.All(triggers.Values, t => Assert.Contains(t.StringAt("authenticationRef", "name"), authentications));
        }
    }

    [Fact]
    public void Services_expose_the_ports_their_containers_listen_on()
    {
        var k = new Kustomization("k8s/base");
        foreach (var statefulSet in k.OfKind<V1StatefulSet>())
        {
            var ports = statefulSet.Spec.Template.Spec.Containers.Single().Ports.ToDictionary(p => p.Name, p => p.ContainerPort);
            var service = Service(k, statefulSet.Spec.ServiceName);
            Assert.Equal(statefulSet.Spec.Selector.MatchLabels, service.Spec.Selector);
            Assert.All(service.Spec.Ports, p => Assert.Equal(ports[p.Name], p.Port));
        }
        Assert.Equal(new RabbitMqOptions().Port, Service(k, "rabbitmq").Spec.Ports.Single(p => p.Name == "amqp").Port);
    }
}
