using System.CommandLine;
using HyperSd.Data;
using HyperSd.Data.Artifacts;
using HyperSd.Services.Runs;
using Microsoft.EntityFrameworkCore;
using Microsoft.Extensions.DependencyInjection;

namespace HyperSd.Cli.Commands;

/// <summary><c>hypersd gc [--dry-run]</c>: removes what finished runs no longer need (<see cref="StoreCollector"/>).</summary>
public static class GcCommand
{
    public static Command Create()
    {
        var dryRun = new Option<bool>("--dry-run") { Description = "list what would be removed, remove nothing" };
        var command = new Command("gc", "remove work folders, unrecorded files and superseded checkpoints of finished runs")
        {
            RunStore.StoreDirOption, RunStore.PostgresOption, dryRun,
        };
        command.SetAction(async (parse, ct) =>
        {
            var runStore = RunStore.From(parse);
            var options = runStore.Options([]);
            await (await runStore.OpenAsync()).DisposeAsync(); // migrated
            await using var services = new ServiceCollection()
                .AddDbContextFactory<MetadataDbContext>(b => b.UseMetadataStore(options.Store)).BuildServiceProvider();
            var dbs = services.GetRequiredService<IDbContextFactory<MetadataDbContext>>();
            var collector = new StoreCollector(dbs, new FileSystemArtifactStore(options.ArtifactRoot));
            var items = await collector.FindAsync(ct);
            foreach (var item in items)
                Console.WriteLine($"{item.Reason,-11}  {item.SizeBytes,14:N0}  {item.Path}");
            var total = items.Sum(i => i.SizeBytes);
            if (parse.GetValue(dryRun))
            {
                Console.WriteLine($"would remove {items.Count} item(s), {total:N0} bytes (dry run)");
                return;
            }
            await collector.RemoveAsync(items, ct);
            Console.WriteLine($"removed {items.Count} item(s), {total:N0} bytes");
        });
        return command;
    }
}
