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

/// <summary>StartRun, CancelRun, ResumeRun.</summary>
public sealed class RunCommandsConsumer(RunLifecycle machine, RoleQueues queues) :
    IConsumer<StartRun>, IConsumer<CancelRun>, IConsumer<ResumeRun>
{
    public async Task Consume(ConsumeContext<StartRun> context) =>
        await context.SendAsync(queues,
            await machine.StartAsync(context.Message.RunId, DateTimeOffset.UtcNow, context.CancellationToken), context.CancellationToken);

    public async Task Consume(ConsumeContext<CancelRun> context) =>
        await context.SendAsync(queues,
            await machine.CancelAsync(context.Message.RunId, context.Message.Reason, DateTimeOffset.UtcNow, context.CancellationToken),
            context.CancellationToken);

    public async Task Consume(ConsumeContext<ResumeRun> context) =>
        await context.SendAsync(queues,
            await machine.ResumeAsync(context.Message.RunId, DateTimeOffset.UtcNow, context.CancellationToken), context.CancellationToken);
}

/// <summary>Every stage's completed and failed events.</summary>
public sealed class StageEventsConsumer(RunLifecycle machine, RoleQueues queues) : IConsumer<StageCompleted>, IConsumer<StageFailed>
{
    public async Task Consume(ConsumeContext<StageCompleted> context) =>
        await context.SendAsync(queues,
            await machine.StageCompletedAsync(context.Message, DateTimeOffset.UtcNow, context.CancellationToken),
            context.CancellationToken);

    public async Task Consume(ConsumeContext<StageFailed> context) =>
        await context.SendAsync(queues,
            await machine.StageFailedAsync(context.Message, DateTimeOffset.UtcNow, context.CancellationToken), context.CancellationToken);
}

/// <summary>A stage consumer threw on its command (a corrupt input, a command for a stage that does not exist):
/// MassTransit moved the command to <c>&lt;queue&gt;_error</c> and published this fault; the stage and run fail.</summary>
public sealed class StageFaultsConsumer(RunLifecycle machine, RoleQueues queues) : IConsumer<Fault<RunStage>>
{
    public async Task Consume(ConsumeContext<Fault<RunStage>> context)
    {
        var error = string.Join("; ", context.Message.Exceptions.Select(e => $"{e.ExceptionType}: {e.Message}"));
        await context.SendAsync(queues,
            await machine.StageFaultedAsync(context.Message.Message, error, DateTimeOffset.UtcNow, context.CancellationToken),
            context.CancellationToken);
    }
}
