using HyperSd.Contracts;
using HyperSd.Services.Hosting;
using MassTransit;

namespace HyperSd.Services.Orchestrator;

/// <summary>Sends the commands a committed transition produced, each to its role's queue.</summary>
public static class StageDispatchSender
{
    public static async Task SendAsync(
        this ISendEndpointProvider provider, RoleQueues queues, IReadOnlyList<StageDispatch> dispatches, CancellationToken ct = default)
    {
        foreach (var d in dispatches)
        {
            var endpoint = await provider.GetSendEndpoint(queues.Address(d.Role));
            await endpoint.Send((object)d.Command, ct);
        }
    }
}

/// <summary>Applies a transition at the database server's time (the one clock) and sends the commands it produced.</summary>
static class Transitions
{
    public static async Task ApplyAsync(this ConsumeContext context, RunLifecycle machine, RoleQueues queues,
        Func<DateTimeOffset, CancellationToken, Task<IReadOnlyList<StageDispatch>>> transition)
    {
        var ct = context.CancellationToken;
        await context.SendAsync(queues, await transition(await machine.NowAsync(ct), ct), ct);
    }
}

/// <summary>StartRun, CancelRun, ResumeRun.</summary>
public sealed class RunCommandsConsumer(RunLifecycle machine, RoleQueues queues) :
    IConsumer<StartRun>, IConsumer<CancelRun>, IConsumer<ResumeRun>
{
    public Task Consume(ConsumeContext<StartRun> context) =>
        context.ApplyAsync(machine, queues, (now, ct) => machine.StartAsync(context.Message.RunId, now, ct));

    public Task Consume(ConsumeContext<CancelRun> context) =>
        context.ApplyAsync(machine, queues, (now, ct) => machine.CancelAsync(context.Message.RunId, context.Message.Reason, now, ct));

    public Task Consume(ConsumeContext<ResumeRun> context) =>
        context.ApplyAsync(machine, queues, (now, ct) => machine.ResumeAsync(context.Message.RunId, now, ct));
}

/// <summary>Every stage's completed and failed events.</summary>
public sealed class StageEventsConsumer(RunLifecycle machine, RoleQueues queues) : IConsumer<StageCompleted>, IConsumer<StageFailed>
{
    public Task Consume(ConsumeContext<StageCompleted> context) =>
        context.ApplyAsync(machine, queues, (now, ct) => machine.StageCompletedAsync(context.Message, now, ct));

    public Task Consume(ConsumeContext<StageFailed> context) =>
        context.ApplyAsync(machine, queues, (now, ct) => machine.StageFailedAsync(context.Message, now, ct));
}

/// <summary>A stage consumer threw on its command, after its retries (a corrupt input, a command for a stage that does
/// not exist): MassTransit moved the command to <c>&lt;queue&gt;_error</c> and published this fault; the stage and run
/// fail unless a worker leased the attempt meanwhile (the fault was a duplicate delivery's).</summary>
public sealed class StageFaultsConsumer(RunLifecycle machine, RoleQueues queues) : IConsumer<Fault<RunStage>>
{
    public Task Consume(ConsumeContext<Fault<RunStage>> context)
    {
        var error = string.Join("; ", context.Message.Exceptions.Select(e => $"{e.ExceptionType}: {e.Message}"));
        return context.ApplyAsync(machine, queues, (now, ct) => machine.StageFaultedAsync(context.Message.Message, error, now, ct));
    }
}
